#!/usr/bin/env bash
# Large values: VedDB local (shared memory) against Redis over its Unix socket, GET and SET of
# 64 KiB, 1 MiB and 16 MiB values, one client at depth 1, interleaved rounds, medians:
#
#   bench/large-values.sh                 # REPS=5 rounds (about 6 minutes after the build)
#   REPS=1 SIZES=1048576 bench/large-values.sh
#
# Each run starts its own server (VedDB `--cores 1`, which pins its core to CPU 0; Redis on
# CPU 0 through taskset, no persistence), preloads every key with `veddb-bench`'s preload (large
# values a few per request), measures GET then SET, and stops the server. The load generator
# runs on CPU 1 (taskset). VedDB's GET is measured twice: in place (a zero-copy view, what a
# local client reads; no value byte moves, so its "GB/s" is only the value size over the
# latency) and copied out (`--copy`: the client copies the value into its own memory, as a Redis
# client reads the whole reply). Figures: value bytes per second (GB/s: the ops per second times
# the value size) and p50 latency; every run's JSON and text in $OUT
# (default bench/results/large-DATE/), the medians in $OUT/summary.md.
#
# Needs: cargo, python3, taskset, redis-server (Debian package redis-server). Stops only the
# processes it started, by PID.
set -euo pipefail

REPS=${REPS:-5}
SIZES=${SIZES:-65536 1048576 16777216}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
CLIENT_CPU=${CLIENT_CPU:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-bench/results/large-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
for tool in cargo python3 taskset redis-server; do
    command -v "$tool" >/dev/null || {
        echo "large-values: $tool is missing" >&2
        exit 1
    }
done

echo "== building (release)"
cargo build --release -p veddb-server -p veddb-bench
VEDDB_SERVER=target/release/veddb-server
VEDDB_BENCH=target/release/veddb-bench

pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Keys per size: enough to not read one value again at once, few enough to fit (16 x 16 MiB).
keys_for() {
    if [ "$1" -ge 16777216 ]; then echo 16; elif [ "$1" -ge 1048576 ]; then echo 64; else echo 256; fi
}

wait_until() { # seconds test-command...
    local tries=$(($1 * 10))
    shift
    for _ in $(seq "$tries"); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}

run_veddb() { # size rep
    local name="veddb-large-$$" log="$OUT/veddb-$1-r$2.server.log"
    "$VEDDB_SERVER" --create --name "$name" --cores 1 --memory-mb 3072 --port 0 >"$log" 2>&1 &
    pid=$!
    wait_until 30 grep -q "veddb-server ready" "$log" || {
        echo "large-values: veddb-server did not start (see $log)" >&2
        exit 1
    }
    taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" local --instance "$name" --op get,set \
        --keys "$(keys_for "$1")" --value-size "$1" --clients 1 --depth 1 \
        --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/veddb-$1-r$2.json" \
        >"$OUT/veddb-$1-r$2.txt" 2>&1
    taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" local --instance "$name" --op get --copy \
        --keys "$(keys_for "$1")" --value-size "$1" --clients 1 --depth 1 \
        --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/veddb-copy-$1-r$2.json" \
        >"$OUT/veddb-copy-$1-r$2.txt" 2>&1
    cleanup
    pid=
}

run_redis() { # size rep
    local socket="$OUT/redis.sock"
    rm -f "$socket"
    taskset -c 0 redis-server --port 0 --unixsocket "$socket" --save '' --appendonly no \
        >"$OUT/redis-$1-r$2.server.log" 2>&1 &
    pid=$!
    wait_until 30 test -S "$socket" || {
        echo "large-values: redis-server did not start" >&2
        exit 1
    }
    taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" redis --unix "$socket" --op get,set \
        --keys "$(keys_for "$1")" --value-size "$1" --clients 1 --depth 1 \
        --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/redis-$1-r$2.json" \
        >"$OUT/redis-$1-r$2.txt" 2>&1
    cleanup
    pid=
    rm -f "$socket"
}

for rep in $(seq 1 "$REPS"); do
    echo "== round $rep of $REPS"
    for size in $SIZES; do
        run_veddb "$size" "$rep"
        run_redis "$size" "$rep"
        python3 - "$OUT" "$size" "$rep" <<'EOF'
import json, sys
out, size, rep = sys.argv[1:]
for peer in ("veddb", "veddb-copy", "redis"):
    for s in json.load(open(f"{out}/{peer}-{size}-r{rep}.json"))["results"]:
        print(f"  {peer:<10} {int(size):>9} B {s['op']:<15} {s['value_bytes_per_sec'] / 1e9:8.3f} GB/s"
              f"  p50 {s['p50_ns'] / 1e3:10.1f} us  errors {s['errors']}")
EOF
    done
done

python3 - "$OUT" "$REPS" "$SIZES" <<'EOF'
import json, statistics, sys
out, reps, sizes = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split()]
def human(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
rows = ["| value | op | VedDB local GB/s | Redis (Unix socket) GB/s | VedDB / Redis | VedDB p50 | Redis p50 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
def median_of(peer, size, op):
    runs = []
    for rep in range(1, reps + 1):
        for s in json.load(open(f"{out}/{peer}-{size}-r{rep}.json"))["results"]:
            if s["op"].split()[0] == op:
                runs.append(s)
    return (statistics.median(r["value_bytes_per_sec"] for r in runs) / 1e9,
            statistics.median(r["p50_ns"] for r in runs) / 1e3)
for size in sizes:
    for label, peer, op in (("get (in place)", "veddb", "get"), ("get (copied out)", "veddb-copy", "get"),
                            ("set", "veddb", "set")):
        (v, vp), (r, rp) = median_of(peer, size, op), median_of("redis", size, op)
        rows.append(f"| {human(size)} | {label} | {v:.2f} | {r:.2f} | {v / r:.1f}x | {vp:.1f} µs | {rp:.1f} µs |")
text = f"Medians of {reps} interleaved rounds (bench/large-values.sh).\n\n" + "\n".join(rows) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
EOF
