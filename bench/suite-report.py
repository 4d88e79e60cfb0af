#!/usr/bin/env python3
"""The report of bench/run-all.sh: medians and ratios over the rounds, the plots, the docs section.

    python3 bench/suite-report.py OUT VEDDB_BENCH DOCS [GRPC_SUMMARY]

OUT is the suite's result folder (runs.tsv, meta.txt, noisy.txt, one JSON per run). Writes
OUT/summary.json and OUT/summary.md, plots (through `veddb-bench compare --svg`) to docs/bench/
when DOCS is 1 (else OUT/plots/), and with DOCS=1 replaces the part of docs/BENCHMARKS.md between
<!-- suite:begin --> and <!-- suite:end --> (inserted before "## Engine" when missing).
"""

import json
import os
import re
import statistics
import subprocess
import sys

BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
DOC = "docs/BENCHMARKS.md"

out, bench, docs = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
grpc_summary = sys.argv[4] if len(sys.argv) > 4 else ""
median = statistics.median

meta = {}
for line in open(os.path.join(out, "meta.txt")):
    key, _, value = line.rstrip("\n").partition("=")
    meta[key] = value
noisy = []
if os.path.exists(os.path.join(out, "noisy.txt")):
    noisy = [line.strip() for line in open(os.path.join(out, "noisy.txt")) if line.strip()]

# runs[pair][side] = [(rep, report)], failed[pair][side] = count
runs, failed, order = {}, {}, []
for line in open(os.path.join(out, "runs.tsv")):
    pair, side, rep, path, status = line.rstrip("\n").split("\t")
    if pair not in runs:
        runs[pair], failed[pair] = {}, {}
        order.append(pair)
    runs[pair].setdefault(side, [])
    failed[pair].setdefault(side, 0)
    if status == "ok":
        runs[pair][side].append((int(rep), json.load(open(os.path.join(out, path))), path))
    else:
        failed[pair][side] += 1


def stats(pair, side):
    """Medians over the rounds of the first series (the measured one) of each run."""
    found = runs.get(pair, {}).get(side, [])
    if not found:
        return None
    series = [report["results"][0] for _, report, _ in found]
    by_ops = sorted(range(len(found)), key=lambda i: series[i]["ops_per_sec"])
    return {
        "ops": median(s["ops_per_sec"] for s in series),
        "p50": median(s["p50_ns"] for s in series) / 1e3,
        "p99": median(s["p99_ns"] for s in series) / 1e3,
        "p999": median(s["p999_ns"] for s in series) / 1e3,
        "errors": sum(s["errors"] for s in series),
        "count": sum(s["count"] for s in series),
        "rounds": len(series),
        "failed": failed[pair][side],
        "ops_all": [s["ops_per_sec"] for s in series],
        "p50_all": [s["p50_ns"] / 1e3 for s in series],
        "op": series[0]["op"],
        "latency_of": series[0]["latency_of"],
        # The run whose throughput is the median (the lower middle for an even count): plotted.
        "median_run": found[by_ops[(len(found) - 1) // 2]][2],
    }


def ratio(a, b):
    return a / b if a and b else float("nan")


def per_round_ratio(pair, side_a, side_b, field="ops_per_sec"):
    """Median over rounds of the round's A/B (rounds where both ran)."""
    a = {rep: r["results"][0][field] for rep, r, _ in runs.get(pair, {}).get(side_a, [])}
    b = {rep: r["results"][0][field] for rep, r, _ in runs.get(pair, {}).get(side_b, [])}
    both = [a[rep] / b[rep] for rep in a if rep in b and b[rep]]
    return median(both) if both else float("nan")


def fmt_ops(x):
    if x is None or x != x:
        return "–"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.0f}k" if x >= 1e5 else f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_us(x):
    if x is None or x != x:
        return "–"
    if x >= 1000:
        return f"{x / 1e3:.2f} ms"
    if x >= 100:
        return f"{x:.0f} µs"
    if x >= 10:
        return f"{x:.1f} µs"
    return f"{x:.2f} µs"


def fmt_ratio(x):
    return "–" if x != x else f"{x:.2f}×"


summary = {"meta": meta, "noisy": noisy, "pairs": {}}
for pair in order:
    summary["pairs"][pair] = {side: stats(pair, side) for side in runs[pair]}
S = summary["pairs"]


def get(pair, side):
    return S.get(pair, {}).get(side)


# ---- plots: `veddb-bench compare --svg` on copies of the median runs, series renamed alike ----
plot_dir = "docs/bench" if docs else os.path.join(out, "plots")
os.makedirs(plot_dir, exist_ok=True)
work = os.path.join(out, "plot-input")
os.makedirs(work, exist_ok=True)
plots = {}


def plot(name, title, scenario, sides):
    """sides: [(label, [(pair, side, op-name)])] for A then B, every series renamed to
    `scenario op-name` so that `compare` pairs them. Writes plot_dir/name.svg."""
    files = []
    for label, members in sides:
        report, results = None, []
        for pair, side, op in members:
            st = get(pair, side)
            if not st:
                return
            source = json.load(open(os.path.join(out, st["median_run"])))
            report = report or source
            series = dict(source["results"][0])
            series["scenario"], series["op"] = scenario, op
            results.append(series)
        report = dict(report, results=results)
        os.makedirs(os.path.join(work, name), exist_ok=True)
        path = os.path.join(work, name, label + ".json")
        json.dump(report, open(path, "w"))
        files.append(path)
    svg = os.path.join(plot_dir, name + ".svg")
    done = subprocess.run([bench, "compare", "--svg", svg, files[0], files[1]], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"plot {name} failed: {done.stderr.strip()}", file=sys.stderr)
        return
    plots[name] = (svg, title)


plot("kv-get-d1", "GET, 1 client, depth 1: VedDB local vs Redis (Unix socket)", "kv",
     [("veddb-local", [("kv-get-d1", "veddb-local", "GET 1 client depth 1")]),
      ("redis-unix", [("kv-get-d1", "redis-unix", "GET 1 client depth 1")])])
plot("kv-batched", "80 % GET mix, pipelined: VedDB local vs Redis (Unix socket)", "kv",
     [("veddb-local", [("kv-batched", "veddb-local", "mix batched")]),
      ("redis-unix", [("kv-batched", "redis-unix", "mix batched")])])
plot("cores", "VedDB local mix: 1-core server vs default flags (a core per CPU)", "kv",
     [("veddb-1-core", [("cores", "veddb-1-core", "mix")]), ("veddb-default", [("cores", "veddb-default", "mix")])])
sizes = sorted({int(p.split("-")[2]) for p in S if p.startswith("pubsub-")})
subscriber_counts = sorted({int(p.split("-")[1]) for p in S if p.startswith("pubsub-")})
for size in sizes:
    for peer in ("nats", "redis"):
        members = lambda side: [(f"pubsub-{n}-{size}", side, f"1→{n} {size}B") for n in subscriber_counts]
        plot(f"pubsub-{size}B-local-vs-{peer}",
             f"pub/sub fan-out, {size}-byte messages: VedDB local vs {peer.capitalize() if peer == 'redis' else peer.upper()}",
             "pubsub", [("veddb-local", members("local")), (peer, members(peer))])

# ---- the text ----
L = []
w = L.append
date = meta.get("date", "")[:10]
elapsed = int(meta.get("elapsed_s", "0"))
w(f"Generated by `bench/run-all.sh` on {date} (commit {meta.get('commit')}): **medians of "
  f"{meta.get('REPS')} interleaved rounds** (each pair runs A B [C D] once per round), the suite "
  f"took {elapsed // 60} min {elapsed % 60} s.")
w("")
w(f"- Machine: {meta.get('cpu_model')}, {meta.get('cpus')} CPUs, {meta.get('memory')}, kernel "
  f"{meta.get('kernel')}; {meta.get('rustc')}; {meta.get('redis', 'Redis not installed')}; "
  f"{meta.get('nats', 'NATS not installed')}.")
w(f"- Pinning: servers on CPU {meta.get('SERVER_CPU')} (`veddb-server --cores 1` pins itself; "
  f"Redis and NATS through `taskset`), every load generator on CPU {meta.get('CLIENT_CPU')} "
  "(`taskset`, all its threads), except in the cores and colocate pairs (see there). Redis: "
  "`redis-server --save '' --appendonly no`, Unix socket; NATS: `nats-server -a 127.0.0.1`; VedDB: "
  f"`veddb-server --create --cores 1 --memory-mb {meta.get('MEMORY_MB')}`, no persistence.")
w(f"- Key-value runs: {meta.get('KEYS')} keys of {meta.get('KEY_SIZE')} bytes, {meta.get('VALUE_SIZE')}-byte "
  f"values, uniform keys, preloaded; {meta.get('DURATION')} measured after {meta.get('WARMUP')} warm-up; "
  f"closed loop. Pub/sub runs: {meta.get('PUBSUB_DURATION')} measured after {meta.get('PUBSUB_WARMUP')}, "
  "the publisher at most 1,024 messages ahead of the slowest subscriber, bursts of 64 (the defaults of "
  "`veddb-bench pubsub`).")
w(f"- Quiet check: before each pair the suite waited until the machine was below "
  f"{meta.get('BUSY_MAX_PCT')} % busy over 2 s with no other benchmark running. "
  + ("**Noisy pairs (measured anyway after the wait): " + "; ".join(noisy) + ".**" if noisy
     else "Every pair started on a quiet machine."))
w(f"- Reproduce: `{meta.get('reproduce')}` (every run's JSON: `bench/results/suite-DATE/`).")
w("")

# Key-value
a, b = get("kv-get-d1", "veddb-local"), get("kv-get-d1", "redis-unix")
c, d = get("kv-batched", "veddb-local"), get("kv-batched", "redis-unix")
w("### Key-value: VedDB local (shared memory) vs Redis (Unix socket)")
w("")
w("| test | VedDB ops/s | Redis ops/s | VedDB / Redis | VedDB p50 / p99 | Redis p50 / p99 | Redis p50 / VedDB p50 |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
if a:
    w(f"| GET, 1 client, depth 1 (value read in place) | {fmt_ops(a['ops'])} | {fmt_ops(b and b['ops'])} | "
      f"{fmt_ratio(ratio(a['ops'], b and b['ops']))} | {fmt_us(a['p50'])} / {fmt_us(a['p99'])} | "
      f"{fmt_us(b and b['p50'])} / {fmt_us(b and b['p99'])} | **{fmt_ratio(ratio(b and b['p50'], a['p50']))}** |")
if c:
    shape = f"{meta.get('BATCH_CLIENTS')} clients × depth {meta.get('BATCH_DEPTH')}"
    w(f"| 80 % GET mix, {shape} (Redis: pipelining {meta.get('BATCH_DEPTH')}) | **{fmt_ops(c['ops'])}** | "
      f"{fmt_ops(d and d['ops'])} | **{fmt_ratio(ratio(c['ops'], d and d['ops']))}** | "
      f"{fmt_us(c['p50'])} / {fmt_us(c['p99'])} | {fmt_us(d and d['p50'])} / {fmt_us(d and d['p99'])} | "
      f"{fmt_ratio(ratio(d and d['p50'], c['p50']))} |")
w("")
rounds = []
for label, pair in (("GET depth 1", "kv-get-d1"), ("batched mix", "kv-batched")):
    for side, name in (("veddb-local", "VedDB"), ("redis-unix", "Redis")):
        st = get(pair, side)
        if st:
            rounds.append(f"{label} {name} " + " ".join(fmt_ops(x) for x in st["ops_all"]))
if rounds:
    w("Per round (ops/s): " + "; ".join(rounds) + ". Latency is per request (the batched rows: each "
      "request of a batch, from the batch's send to its answer).")
    w("")

# Cores
e, f = get("cores", "veddb-1-core"), get("cores", "veddb-default")
if e and f:
    w("### One core vs the default flags (VedDB local)")
    w("")
    w(f"80 % GET mix, {meta.get('CORES_CLIENTS')} clients × depth {meta.get('BATCH_DEPTH')}, against a "
      "`--cores 1` server (CPU 0) and one started with the default flags (a core per CPU, pinned); the "
      "client threads are not pinned, so with a core on every CPU they share the CPUs with the server.")
    w("")
    w("| server | ops/s | p50 / p99 | per round |")
    w("| --- | ---: | ---: | --- |")
    for label, st in (("`--cores 1`", e), ("default flags", f)):
        w(f"| {label} | {fmt_ops(st['ops'])} | {fmt_us(st['p50'])} / {fmt_us(st['p99'])} | "
          + " ".join(fmt_ops(x) for x in st["ops_all"]) + " |")
    w(f"| default / 1 core | **{fmt_ratio(ratio(f['ops'], e['ops']))}** (per round {fmt_ratio(per_round_ratio('cores', 'veddb-default', 'veddb-1-core'))}) | | |")
    w("")

# Colocate
sides = [(label, get("colocate", side)) for label, side in (
    ("`--cores 1`", "veddb-1-core"), ("default flags (a core per CPU)", "veddb-default"),
    ("`--workers 4`", "veddb-workers-4"))]
if any(st for _, st in sides):
    w("### Server cores and a local client sharing the CPUs (VedDB local)")
    w("")
    w("GET, 1 client, depth 1, value read in place; the client thread is not pinned. With a core on "
      "every CPU (or more cores than CPUs) the client shares a CPU with a core: both yield the CPU to "
      "each other while they wait instead of spinning (docs/shm-layout.md, \"Sharing a CPU\").")
    w("")
    w("| server | ops/s | p50 / p99 | per round |")
    w("| --- | ---: | ---: | --- |")
    for label, st in sides:
        if st:
            w(f"| {label} | {fmt_ops(st['ops'])} | {fmt_us(st['p50'])} / {fmt_us(st['p99'])} | "
              + " ".join(fmt_ops(x) for x in st["ops_all"]) + " |")
    w("")

# Pub/sub
transports = [t for t in ("local", "grpc", "redis", "nats") if any(t in S.get(p, {}) for p in S if p.startswith("pubsub-"))]
names = {"local": "VedDB local", "grpc": "VedDB gRPC", "redis": "Redis", "nats": "NATS"}
if sizes:
    w("### Pub/sub fan-out: 1 publisher to N subscribers")
    w("")
    w("Deliveries per second (messages received, summed over the subscribers). Every subscriber on its "
      "own connection and thread; publisher and subscribers on CPU 1, the server on CPU 0.")
    w("")
    head = "| subscribers | size | " + " | ".join(names[t] for t in transports)
    peers = [t for t in ("nats", "redis") if t in transports]
    head += "".join(f" | local / {names[p]}" for p in peers) + " |"
    w(head)
    w("| ---: | ---: |" + " ---: |" * (len(transports) + len(peers)))
    for n in subscriber_counts:
        for size in sizes:
            pair = f"pubsub-{n}-{size}"
            cells = [fmt_ops(get(pair, t)["ops"]) if get(pair, t) else "–" for t in transports]
            loc = get(pair, "local")
            cells += [fmt_ratio(ratio(loc and loc["ops"], get(pair, p) and get(pair, p)["ops"])) for p in peers]
            w(f"| {n} | {size} B | " + " | ".join(cells) + " |")
    w("")
    w("Publish-to-receive latency per delivery, p50 / p99 (with the 1,024-message window this includes "
      "queueing: it is latency under full load, not unloaded latency):")
    w("")
    w("| subscribers | size | " + " | ".join(names[t] for t in transports) + " |")
    w("| ---: | ---: |" + " ---: |" * len(transports))
    for n in subscriber_counts:
        for size in sizes:
            pair = f"pubsub-{n}-{size}"
            cells = [f"{fmt_us(get(pair, t)['p50'])} / {fmt_us(get(pair, t)['p99'])}" if get(pair, t) else "–"
                     for t in transports]
            w(f"| {n} | {size} B | " + " | ".join(cells) + " |")
    w("")
    lost = []
    for pair in S:
        if pair.startswith("pubsub-"):
            for t, st in S[pair].items():
                if st and st["errors"]:
                    lost.append(f"{names.get(t, t)} {pair[7:].replace('-', ' subscribers, ', 1)} B: "
                                f"{st['errors']} of {st['count'] + st['errors']}")
                if st is None or (st and st["failed"]):
                    lost.append(f"{names.get(t, t)} {pair[7:]}: {failed[pair][t]} failed run(s)")
    w("Losses (messages a subscriber did not receive, over all rounds): "
      + ("; ".join(lost) if lost else "none in any run") + ".")
    w("")

# gRPC
w("### gRPC vs tonic")
w("")
if grpc_summary and os.path.exists(grpc_summary):
    g = json.load(open(grpc_summary))
    h = g.get("h2load unary get", {})
    folder = os.path.basename(os.path.dirname(grpc_summary))
    rows = []
    for key, label in (("unary get conns x streams=1x1", "unary GET 1×1"),
                       ("unary get conns x streams=4x16", "unary GET 4×16")):
        if key in g:
            rows.append(f"{label} {fmt_ratio(g[key]['ratio'])}")
    w(f"Not re-run by this suite (`RUN_GRPC_SUITE=1` runs it): from `bench/grpc-suite.sh` "
      f"({folder}, {len(h.get('veddb_all', []))} rounds), see [benchmarks-grpc.md](benchmarks-grpc.md). "
      f"Server capacity under h2load (unary GET, 4 connections × 16 streams, one server core): VedDB "
      f"{fmt_ops(h.get('veddb'))} req/s vs tonic {fmt_ops(h.get('tonic'))}, **{fmt_ratio(h.get('ratio', float('nan')))}**; "
      f"server CPU per request {h.get('veddb_cpu_us_per_request', float('nan')):.2f} µs vs "
      f"{h.get('tonic_cpu_us_per_request', float('nan')):.2f} µs. Same Rust client, VedDB / tonic: "
      + ", ".join(rows) + ".")
else:
    w("Not re-run by this suite: see [benchmarks-grpc.md](benchmarks-grpc.md) (`bench/grpc-suite.sh`).")
w("")
w("The engine micro-benchmarks (one shard in-process, GETs forwarded between cores) are in the "
  "sections below.")
w("")

# Targets
w("### Against the targets")
w("")
if a:
    verdict = "met" if a["p50"] < 10 else "**not met**"
    w(f"- Local GET p50 under 10 µs: {verdict}: {fmt_us(a['p50'])} p50, {fmt_us(a['p99'])} p99 "
      f"({fmt_ops(a['ops'])} round trips/s, one in flight).")
if a and b:
    w(f"- Local GET vs Redis GET over a Unix socket (1 client, depth 1): p50 {fmt_us(a['p50'])} vs "
      f"{fmt_us(b['p50'])}, **{fmt_ratio(ratio(b['p50'], a['p50']))} lower**; throughput "
      f"{fmt_ratio(ratio(a['ops'], b['ops']))} (per round {fmt_ratio(per_round_ratio('kv-get-d1', 'veddb-local', 'redis-unix'))}).")
if c and d:
    w(f"- Batched: VedDB local {fmt_ops(c['ops'])} ops/s vs Redis with pipelining {fmt_ops(d['ops'])}: "
      f"**{fmt_ratio(ratio(c['ops'], d['ops']))}** (per round {fmt_ratio(per_round_ratio('kv-batched', 'veddb-local', 'redis-unix'))}).")
if e and f:
    w(f"- Default flags (a core per CPU, clients sharing them) vs one core: {fmt_ratio(ratio(f['ops'], e['ops']))} "
      "the throughput on this 2-CPU machine (target of issue 22: 0.8×).")
co = get("colocate", "veddb-default")
if co:
    w(f"- Default flags, one unpinned client, GET depth 1: p50 {fmt_us(co['p50'])}, p99 {fmt_us(co['p99'])} "
      "(targets of issue 22: 5 µs and 50 µs).")
best = None
for pair in S:
    if pair.startswith("pubsub-") and pair.endswith("-16"):
        st = get(pair, "local")
        if st and (best is None or st["ops"] > best[1]["ops"]):
            best = (pair, st)
if best:
    n = best[0].split("-")[1]
    verdict = "met" if best[1]["ops"] >= 1e6 else "**not met**"
    w(f"- Millions of small messages per second (pub/sub): {verdict}: at best {fmt_ops(best[1]['ops'])} "
      f"deliveries/s of 16-byte messages (VedDB local, 1 → {n}).")
w("")

# Plots
if plots:
    w("Latency by percentile (the median round of each side, drawn by `veddb-bench compare --svg`):")
    w("")
    for name, (svg, title) in plots.items():
        rel = os.path.relpath(svg, "docs") if docs else svg
        w(f"**{title}**")
        w("")
        w(f"![{title}]({rel})")
        w("")

text = "\n".join(L).rstrip() + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(text)
print(f"wrote {os.path.join(out, 'summary.md')} and summary.json; plots in {plot_dir}")

if docs:
    doc = open(DOC).read()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, doc, count=1, flags=re.S)
    else:
        section = ("## Standard suite: VedDB vs Redis and NATS (`bench/run-all.sh`)\n\n"
                   "The part between the markers is written by `bench/run-all.sh`; edit the script, not "
                   "the text.\n\n" + block + "\n\n")
        at = doc.find("## Engine")
        doc = doc[:at] + section + doc[at:] if at >= 0 else doc.rstrip() + "\n\n" + section
    open(DOC, "w").write(doc)
    print(f"wrote the generated section of {DOC}")
