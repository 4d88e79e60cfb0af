#!/usr/bin/env bash
# VedDB's hand-rolled gRPC frontend against a stock tonic server (bench/tonic-peer/), on one
# machine: servers pinned to CPU 0, every load generator pinned to CPU 1. Reproduces
# docs/benchmarks-grpc.md.
#
#   bench/grpc-suite.sh            # builds, runs REPS interleaved rounds, prints medians
#   REPS=5 DURATION=5s bench/grpc-suite.sh
#
# Each round runs, in this order, VedDB (A) then tonic (B) with the SAME client:
#   veddb-bench grpc --unary --op get,set   at 1 stream, then at 64 streams on one connection
#   veddb-bench grpc --batch 64             (VedDB only: the Batch fast path)
#   h2load, unary GET, 4 connections x 16 streams, server CPU time read from /proc/PID/stat
# Before each run it waits (up to QUIET_WAIT_S) until the machine is idle, since other work on
# a 2-core machine skews everything. Results go to $OUT (default bench/results/grpc-DATE/).
#
# Needs: cargo, python3, taskset, h2load (Debian: apt-get install -y nghttp2-client).
# Stops only the processes it started, by PID.
set -euo pipefail

REPS=${REPS:-3}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-500ms}
KEYS=${KEYS:-100000}
KEY_SIZE=${KEY_SIZE:-16}
VALUE_SIZE=${VALUE_SIZE:-64}
H2LOAD_N=${H2LOAD_N:-1000000}
BATCH_ARGS=${BATCH_ARGS:---clients 4 --depth 4 --batch 64}
# The Batch fast path once more with a table that fits in cache and larger batches.
HOT_KEYS=${HOT_KEYS:-1000}
HOT_BATCH_ARGS=${HOT_BATCH_ARGS:---clients 4 --depth 2 --batch 256}
QUIET_WAIT_S=${QUIET_WAIT_S:-300}
FOREIGN_MAX_PCT=${FOREIGN_MAX_PCT:-3}
ATTEMPTS=${ATTEMPTS:-3}
SERVER_CPU=0 # veddb-server --cores 1 pins its core to CPU 0 by itself
CLIENT_CPU=${CLIENT_CPU:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-bench/results/grpc-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

for tool in cargo python3 taskset h2load; do
    command -v "$tool" >/dev/null || {
        echo "grpc-suite: $tool is missing${tool/h2load/ (apt-get install -y nghttp2-client)}" >&2
        exit 1
    }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "grpc-suite: needs 2 CPUs (server on $SERVER_CPU, load on $CLIENT_CPU)" >&2
    exit 1
fi

echo "== building (release)"
cargo build --release -p veddb-server -p veddb-bench
(cd bench/tonic-peer && cargo build --release)
VEDDB_SERVER=target/release/veddb-server
VEDDB_BENCH=target/release/veddb-bench
TONIC_PEER=bench/tonic-peer/target/release/veddb-bench-tonic-peer

started=()
cleanup() {
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() { # port pid
    for _ in $(seq 1 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "grpc-suite: the server on port $1 exited" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "grpc-suite: nothing listens on port $1" >&2
    exit 1
}

# Busy share of the whole machine (0-100) over one second.
busy() {
    local _c a1 a2 a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8 total idle
    read -r _c a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
    sleep 1
    read -r _c b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
    total=$(((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8) - (a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8)))
    idle=$(((b4 + b5) - (a4 + a5)))
    echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}

wait_quiet() {
    local waited=0 load
    while load=$(busy) && [ "$load" -gt 10 ]; do
        if [ "$waited" -ge "$QUIET_WAIT_S" ]; then
            echo "grpc-suite: the machine is still ${load}% busy; measuring anyway" >&2
            echo "busy ${load}%" >>"$OUT/noisy-runs.txt"
            return
        fi
        waited=$((waited + 1))
    done
}

stat_ticks() { # pid -> utime + stime of the whole process (/proc/PID/stat), in USER_HZ ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}

cpu_ns() { # pid -> nanoseconds on CPU, summed over its threads (exact: the scheduler's clock)
    cat /proc/"$1"/task/*/schedstat | awk '{sum += $1} END {printf "%.0f\n", sum}'
}

echo "== starting the servers (CPU $SERVER_CPU)"
VEDDB_PORT=$(free_port)
taskset -c "$SERVER_CPU" "$VEDDB_SERVER" --cores 1 --port "$VEDDB_PORT" --memory-mb 256 \
    >"$OUT/veddb-server.log" 2>&1 &
VEDDB_PID=$!
started+=("$VEDDB_PID")
TONIC_PORT=$(free_port)
taskset -c "$SERVER_CPU" "$TONIC_PEER" "$TONIC_PORT" >"$OUT/tonic-peer.log" 2>&1 &
TONIC_PID=$!
started+=("$TONIC_PID")
wait_listening "$VEDDB_PORT" "$VEDDB_PID"
wait_listening "$TONIC_PORT" "$TONIC_PID"
echo "veddb-server pid $VEDDB_PID port $VEDDB_PORT; tonic peer pid $TONIC_PID port $TONIC_PORT"

# h2load's request body: one framed GetRequest for the first preloaded key (k:0 padded with '.').
python3 - "$OUT/get-request.bin" "$KEY_SIZE" <<'EOF'
import struct, sys
key = b"k:0".ljust(int(sys.argv[2]), b".")
message = b"\x0a" + bytes([len(key)]) + key  # GetRequest { key = 1 }
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
EOF

# Busy ticks (USER_HZ) of the whole machine, from /proc/stat.
machine_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# Runs "$@" (the load generator) and measures, around it, the CPU time of both servers
# (schedstat), of the load generator (its rusage, from `times`) and of the whole machine. What the
# machine used beyond those is foreign load (another program); a run with more than
# FOREIGN_MAX_PCT of the 2 CPUs is run again, up to ATTEMPTS times, and the quietest one kept.
# Writes $OUT/$name.cpu: server_ns client_s foreign_pct.
measured() { # name output-file command...
    local name=$1 file=$2
    shift 2
    local attempt best=999 t0 t1 v0 v1 k0 k1 vt0 vt1 kt0 kt1 s0 s1 client foreign
    for attempt in $(seq 1 "$ATTEMPTS"); do
        wait_quiet
        v0=$(cpu_ns "$VEDDB_PID")
        k0=$(cpu_ns "$TONIC_PID")
        vt0=$(stat_ticks "$VEDDB_PID")
        kt0=$(stat_ticks "$TONIC_PID")
        t0=$(machine_ticks)
        s0=$(date +%s%N)
        (
            "$@" >"$file.try"
            times >"$file.times" # the builtin, not forked: its second line is the command's rusage
        )
        client=$(tail -n 1 "$file.times" | awk '{s = 0; for (i = 1; i <= 2; i++) {
            split($i, b, "m"); s += b[1] * 60 + substr(b[2], 1, length(b[2]) - 1) } print s}')
        s1=$(date +%s%N)
        t1=$(machine_ticks)
        v1=$(cpu_ns "$VEDDB_PID")
        k1=$(cpu_ns "$TONIC_PID")
        vt1=$(stat_ticks "$VEDDB_PID")
        kt1=$(stat_ticks "$TONIC_PID")
        foreign=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v v="$((v1 - v0))" \
            -v k="$((k1 - k0))" -v c="$client" -v w="$((s1 - s0))" \
            'BEGIN {f = t / hz - (v + k) / 1e9 - c; if (f < 0) f = 0; printf "%.1f", 100 * f / (2 * w / 1e9)}')
        if awk -v f="$foreign" -v b="$best" 'BEGIN {exit !(f < b)}'; then
            best=$foreign
            mv "$file.try" "$file"
            if [ -f "$OUT/$name.json.try" ]; then mv "$OUT/$name.json.try" "$OUT/$name.json"; fi
            echo "veddb_server_ns $((v1 - v0)) tonic_server_ns $((k1 - k0)) client_s $client foreign_pct $foreign attempt $attempt veddb_server_ticks $((vt1 - vt0)) tonic_server_ticks $((kt1 - kt0))" >"$OUT/$name.cpu"
        fi
        if awk -v f="$foreign" -v m="$FOREIGN_MAX_PCT" 'BEGIN {exit !(f <= m)}'; then
            break
        fi
        echo "  ($name: foreign load ${foreign}% of the machine; again)"
    done
    rm -f "$file.try" "$file.times" "$OUT/$name.json.try"
}

run_bench() { # name addr args...
    local name=$1 addr=$2
    shift 2
    measured "$name" "$OUT/$name.txt" taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" grpc --addr "$addr" \
        --pin "$CLIENT_CPU" --keys "${RUN_KEYS:-$KEYS}" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" \
        --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/$name.json.try" "$@"
    sed -n '2,3p' "$OUT/$name.txt"
}

run_h2load() { # name port pid
    local name=$1 port=$2 pid=$3 server_ns
    measured "$name" "$OUT/$name.txt" taskset -c "$CLIENT_CPU" h2load -n "$H2LOAD_N" -c 4 -m 16 -t 1 \
        -d "$OUT/get-request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/veddb.v1.VedDb/Get"
    local server_ticks
    if [ "$pid" = "$VEDDB_PID" ]; then
        server_ns=$(awk '{print $2}' "$OUT/$name.cpu")
        server_ticks=$(awk '{print $12}' "$OUT/$name.cpu")
    else
        server_ns=$(awk '{print $4}' "$OUT/$name.cpu")
        server_ticks=$(awk '{print $14}' "$OUT/$name.cpu")
    fi
    echo "server_cpu_ns $server_ns" >>"$OUT/$name.txt"
    echo "server_cpu_ticks $server_ticks clk_tck $(getconf CLK_TCK)" >>"$OUT/$name.txt"
    echo "$name: $(grep -E '^finished in' "$OUT/$name.txt"), server CPU $((server_ns / 1000000)) ms, $(cut -d' ' -f7-8 "$OUT/$name.cpu")"
}

VEDDB=127.0.0.1:$VEDDB_PORT
TONIC=127.0.0.1:$TONIC_PORT
for rep in $(seq 1 "$REPS"); do
    echo "== round $rep of $REPS"
    run_bench "veddb-unary-d1-r$rep" "$VEDDB" --unary --op get,set --clients 1 --depth 1
    run_bench "tonic-unary-d1-r$rep" "$TONIC" --unary --op get,set --clients 1 --depth 1
    run_bench "veddb-unary-d64-r$rep" "$VEDDB" --unary --op get,set --clients 1 --depth 64
    run_bench "tonic-unary-d64-r$rep" "$TONIC" --unary --op get,set --clients 1 --depth 64
    run_bench "veddb-unary-c4d16-r$rep" "$VEDDB" --unary --op get,set --clients 4 --depth 16
    run_bench "tonic-unary-c4d16-r$rep" "$TONIC" --unary --op get,set --clients 4 --depth 16
    # shellcheck disable=SC2086 # BATCH_ARGS is a list of options
    run_bench "veddb-batch-r$rep" "$VEDDB" --op get,set $BATCH_ARGS
    # shellcheck disable=SC2086
    RUN_KEYS=$HOT_KEYS run_bench "veddb-batch-hot-r$rep" "$VEDDB" --op get,set $HOT_BATCH_ARGS
    run_h2load "veddb-h2load-r$rep" "$VEDDB_PORT" "$VEDDB_PID"
    run_h2load "tonic-h2load-r$rep" "$TONIC_PORT" "$TONIC_PID"
done

echo "== medians over $REPS rounds (results in $OUT)"
python3 - "$OUT" "$REPS" <<'EOF'
import glob, json, os, re, statistics, sys

out, reps = sys.argv[1], int(sys.argv[2])
median = statistics.median

def series(name):
    """{op: [Series, ...]} over the rounds of one veddb-bench run."""
    found = {}
    for rep in range(1, reps + 1):
        with open(os.path.join(out, f"{name}-r{rep}.json")) as f:
            for s in json.load(f)["results"]:
                found.setdefault(s["op"].split()[0], []).append(s)
    return found

def h2load(name):
    rows = []
    for rep in range(1, reps + 1):
        text = open(os.path.join(out, f"{name}-r{rep}.txt")).read()
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
        done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text).group(2))
        ok = int(re.search(r"status codes: (\d+) 2xx", text).group(1))
        ns = int(re.search(r"server_cpu_ns (\d+)", text).group(1))
        ticks, hz = map(int, re.search(r"server_cpu_ticks (\d+) clk_tck (\d+)", text).groups())
        mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text).group(1)
        rows.append({"rps": rps, "done": done, "ok": ok, "cpu_us": ns / 1e3 / max(done, 1),
                     "cpu_us_ticks": ticks / hz * 1e6 / max(done, 1), "mean": mean})
    return rows

summary = {}
print(f"{'test':<28} {'VedDB ops/s':>12} {'tonic ops/s':>12} {'ratio':>6}   {'VedDB p50/p99 us':>18} {'tonic p50/p99 us':>18}")
for depth in ("d1", "d64", "c4d16"):
    veddb, tonic = series(f"veddb-unary-{depth}"), series(f"tonic-unary-{depth}")
    for op in ("get", "set"):
        a, b = veddb[op], tonic[op]
        ra, rb = median(s["ops_per_sec"] for s in a), median(s["ops_per_sec"] for s in b)
        la = (median(s["p50_ns"] for s in a) / 1e3, median(s["p99_ns"] for s in a) / 1e3)
        lb = (median(s["p50_ns"] for s in b) / 1e3, median(s["p99_ns"] for s in b) / 1e3)
        errors = sum(s["errors"] for s in a + b)
        shape = {"d1": "1x1", "d64": "1x64", "c4d16": "4x16"}[depth]
        name = f"unary {op} conns x streams={shape}"
        summary[name] = {"veddb": ra, "tonic": rb, "ratio": ra / rb, "veddb_p50_p99_us": la, "tonic_p50_p99_us": lb,
                         "veddb_all": [s["ops_per_sec"] for s in a], "tonic_all": [s["ops_per_sec"] for s in b], "errors": errors}
        print(f"{name:<28} {ra:>12.0f} {rb:>12.0f} {ra / rb:>5.2f}x   {la[0]:>8.1f}/{la[1]:<9.1f} {lb[0]:>8.1f}/{lb[1]:<9.1f}" + (f"  ERRORS {errors}" if errors else ""))
for run, keys in (("veddb-batch", "keys"), ("veddb-batch-hot", "hot keys")):
    batch = series(run)
    for op in ("get", "set"):
        a = batch[op]
        r = median(s["ops_per_sec"] for s in a)
        l = (median(s["p50_ns"] for s in a) / 1e3, median(s["p99_ns"] for s in a) / 1e3)
        shape = a[0]["op"].split(" ", 1)[1]
        summary[f"{run} {op} {shape}"] = {"veddb": r, "veddb_all": [s["ops_per_sec"] for s in a], "p50_p99_us_per_call": l}
        print(f"{'Batch ' + op + ' ' + shape:<28} {r:>12.0f} {'-':>12} {'':>6}   {l[0]:>8.1f}/{l[1]:<9.1f} (per call; {keys})")
a, b = h2load("veddb-h2load"), h2load("tonic-h2load")
ra, rb = median(r["rps"] for r in a), median(r["rps"] for r in b)
ca, cb = median(r["cpu_us"] for r in a), median(r["cpu_us"] for r in b)
ta, tb = median(r["cpu_us_ticks"] for r in a), median(r["cpu_us_ticks"] for r in b)
summary["h2load unary get"] = {"veddb": ra, "tonic": rb, "ratio": ra / rb, "veddb_cpu_us_per_request": ca, "tonic_cpu_us_per_request": cb,
                               "veddb_cpu_us_per_request_stat_ticks": ta, "tonic_cpu_us_per_request_stat_ticks": tb,
                               "veddb_mean_latency": [r["mean"] for r in a], "tonic_mean_latency": [r["mean"] for r in b],
                               "veddb_all": [r["rps"] for r in a], "tonic_all": [r["rps"] for r in b]}
print(f"{'h2load unary get c=4 m=16':<28} {ra:>12.0f} {rb:>12.0f} {ra / rb:>5.2f}x")
print(f"{'server CPU us/request':<28} {ca:>12.2f} {cb:>12.2f} {cb / ca:>5.2f}x (schedstat; tonic/VedDB)")
print(f"{'  same from utime+stime':<28} {ta:>12.2f} {tb:>12.2f} {tb / ta:>5.2f}x (/proc/PID/stat ticks)")
bad = [r for r in a + b if r["ok"] != r["done"]]
if bad:
    print(f"WARNING: {len(bad)} h2load runs had non-2xx answers")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(f"wrote {os.path.join(out, 'summary.json')}")
EOF
