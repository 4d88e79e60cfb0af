#!/usr/bin/env bash
# VedDB's standard benchmark suite against its peers, on one machine, interleaved, with medians:
#
#   bench/run-all.sh                 # REPS=3 rounds (about 5 minutes after the build), writes docs/BENCHMARKS.md
#   REPS=1 DOCS=0 bench/run-all.sh   # a quick look (about 2 minutes), docs left alone
#
# What it compares (each "pair" runs A B [C D] once per round, REPS rounds, medians over rounds):
#   kv-get-d1   VedDB local GET (1 client, depth 1, value read in place) vs Redis GET over a Unix
#               socket (1 connection, no pipelining)
#   kv-batched  VedDB local mix (80% GET) with 4 clients x depth 16 vs Redis, 4 connections,
#               pipelining 16 over a Unix socket
#   cores       VedDB local mix (2 clients x depth 16, clients unpinned) on a 1-core server vs one
#               with the default flags (one core per CPU)
#   colocate    VedDB local GET (1 client, depth 1, unpinned) against a 1-core server, one with the
#               default flags, and the original README's `--workers 4`: server cores and the client
#               share the CPUs (the configurations users start with)
#   pubsub      1 publisher to 1, 5 and 100 subscribers, 16 and 128-byte messages, over VedDB
#               local (shared memory), VedDB gRPC, Redis PUBLISH/SUBSCRIBE (Unix socket) and NATS
# Large values (64 KiB to 16 MiB, local vs Redis, GB/s) are bench/large-values.sh.
# gRPC against tonic is bench/grpc-suite.sh (run it with RUN_GRPC_SUITE=1; by default the newest
# bench/results/grpc-*/summary.json is summarised). The engine micro-benchmarks (shard, forward)
# are in docs/BENCHMARKS.md's own sections.
#
# Servers are pinned to CPU 0 (veddb-server --cores 1 pins itself there; Redis and NATS through
# taskset), every load generator to CPU 1 with taskset (all its threads inherit it), except in the
# cores and colocate pairs, where the servers with more cores use both CPUs and the clients float. (Not veddb-bench's
# --pin: it pins each thread by building and dropping a compio runtime, and the dropped io_uring
# later interrupts the thread's blocking socket reads with EINTR, which the Redis and NATS
# clients do not retry: pub/sub subscribers die with "a message reached 0 of N subscribers".) Before each pair it waits (up to
# QUIET_WAIT_S) until the machine is quiet: /proc/stat busy below BUSY_MAX_PCT over 2 s and no
# other benchmark process; past that it measures anyway, warns loudly, and marks the pair noisy.
#
# Results: every run's JSON and text in $OUT (default bench/results/suite-DATE/), summary.json,
# summary.md; with DOCS=1 (the default when REPS >= 3) the generated section of
# docs/BENCHMARKS.md (between <!-- suite:begin --> and <!-- suite:end -->) and docs/bench/*.svg.
#
# Needs: cargo, python3, taskset; redis-server and nats-server for their comparisons (skipped with
# a note when missing; Debian packages redis-server and nats-server). Stops only the processes it
# started, by PID.
set -euo pipefail

REPS=${REPS:-3}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-500ms}
KEYS=${KEYS:-100000}
KEY_SIZE=${KEY_SIZE:-16}
VALUE_SIZE=${VALUE_SIZE:-64}
BATCH_CLIENTS=${BATCH_CLIENTS:-4}
BATCH_DEPTH=${BATCH_DEPTH:-16}
CORES_CLIENTS=${CORES_CLIENTS:-2}
PUBSUB_DURATION=${PUBSUB_DURATION:-2s}
PUBSUB_WARMUP=${PUBSUB_WARMUP:-300ms}
PUBSUB_SUBSCRIBERS=${PUBSUB_SUBSCRIBERS:-1 5 100}
PUBSUB_SIZES=${PUBSUB_SIZES:-16 128}
PUBSUB_TRANSPORTS=${PUBSUB_TRANSPORTS:-local grpc redis nats}
MEMORY_MB=${MEMORY_MB:-256}
BUSY_MAX_PCT=${BUSY_MAX_PCT:-10}
QUIET_WAIT_S=${QUIET_WAIT_S:-300}
RUN_GRPC_SUITE=${RUN_GRPC_SUITE:-0}
if [ -z "${DOCS:-}" ]; then
    if [ "$REPS" -ge 3 ]; then DOCS=1; else DOCS=0; fi
fi
SERVER_CPU=0 # veddb-server --cores 1 pins its core to CPU 0 by itself
CLIENT_CPU=${CLIENT_CPU:-1}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-bench/results/suite-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
started_at=$(date +%s)

for tool in cargo python3 taskset; do
    command -v "$tool" >/dev/null || {
        echo "run-all: $tool is missing" >&2
        exit 1
    }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "run-all: needs 2 CPUs (servers on $SERVER_CPU, load on $CLIENT_CPU)" >&2
    exit 1
fi
have_redis=1 have_nats=1
command -v redis-server >/dev/null || {
    have_redis=0
    echo "run-all: NOTE redis-server is not installed (apt-get install -y redis-server): the Redis comparisons are skipped"
}
command -v nats-server >/dev/null || {
    have_nats=0
    echo "run-all: NOTE nats-server is not installed (apt-get install -y nats-server): the NATS comparisons are skipped"
}

# What reproduces this run: the settings that differ from the defaults, then the script.
reproduce="bench/run-all.sh"
for var in REPS DURATION WARMUP KEYS KEY_SIZE VALUE_SIZE BATCH_CLIENTS BATCH_DEPTH CORES_CLIENTS \
    PUBSUB_DURATION PUBSUB_WARMUP PUBSUB_SUBSCRIBERS PUBSUB_SIZES PUBSUB_TRANSPORTS MEMORY_MB; do
    value=${!var}
    default=$(sed -n "s/^$var=\${$var:-\(.*\)}\$/\1/p" "$0")
    if [ "$value" != "$default" ]; then
        reproduce="$var='$value' $reproduce"
    fi
done
{
    echo "reproduce=$reproduce"
    for var in REPS DURATION WARMUP KEYS KEY_SIZE VALUE_SIZE BATCH_CLIENTS BATCH_DEPTH CORES_CLIENTS \
        PUBSUB_DURATION PUBSUB_WARMUP PUBSUB_SUBSCRIBERS PUBSUB_SIZES PUBSUB_TRANSPORTS MEMORY_MB \
        BUSY_MAX_PCT QUIET_WAIT_S SERVER_CPU CLIENT_CPU; do
        echo "$var=${!var}"
    done
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!docs' ':!.ci' ':!bench/*.sh' ':!bench/*.py' 2>/dev/null || echo '+dirty')"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "kernel=$(uname -r)"
    echo "cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "cpus=$(nproc)"
    echo "memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
    if [ "$have_redis" = 1 ]; then echo "redis=$(redis-server --version | sed 's/ sha=.*//')"; fi
    if [ "$have_nats" = 1 ]; then echo "nats=nats-server $(nats-server --version 2>&1 | sed 's/^nats-server: //')"; fi
} >"$OUT/meta.txt"

echo "== building (release)"
cargo build --release -p veddb-server -p veddb-bench
VEDDB_SERVER=target/release/veddb-server
VEDDB_BENCH=target/release/veddb-bench

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

wait_for() { # what pid test-command...
    local what=$1 pid=$2
    shift 2
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run-all: $what exited" >&2
            exit 1
        fi
        if "$@" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run-all: $what did not come up" >&2
    exit 1
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }

# Starts a VedDB server with a local instance; sets VEDDB_NAME, VEDDB_GRPC. CORES: a number
# (--cores N), "default" (no --cores: one core per CPU) or "w4" (the original README's --workers 4).
start_veddb() { # cores
    local cores=$1 log flags
    case $cores in
    default) flags=() ;;
    w4) flags=(--workers 4) ;;
    *) flags=(--cores "$cores") ;;
    esac
    VEDDB_NAME="bench-$$-c$cores"
    log="$OUT/veddb-server-c$cores.log"
    # --cores N pins core i to CPU i (modulo the CPUs) by itself.
    "$VEDDB_SERVER" --create --name "$VEDDB_NAME" "${flags[@]}" --port 0 --memory-mb "$MEMORY_MB" \
        >"$log" 2>&1 &
    local pid=$!
    started+=("$pid")
    wait_for "veddb-server ${flags[*]:-(default flags)}" "$pid" grep -q "gRPC listening" "$log"
    wait_for "veddb-server ${flags[*]:-(default flags)} (local instance)" "$pid" test -e "/dev/shm/veddb-$VEDDB_NAME.sock"
    VEDDB_GRPC=$(sed -n 's/.*gRPC listening.*address=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
    echo "veddb-server ${flags[*]:-(default flags)}: pid $pid, instance $VEDDB_NAME, gRPC $VEDDB_GRPC"
}

echo "== starting the servers (CPU $SERVER_CPU)"
start_veddb 1
V1_NAME=$VEDDB_NAME V1_GRPC=$VEDDB_GRPC
start_veddb default
VD_NAME=$VEDDB_NAME
start_veddb w4
VW4_NAME=$VEDDB_NAME
if [ "$have_redis" = 1 ]; then
    REDIS_PORT=$(free_port)
    REDIS_SOCK="$OUT/redis.sock"
    taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --unixsocket "$REDIS_SOCK" \
        --save '' --appendonly no >"$OUT/redis-server.log" 2>&1 &
    pid=$!
    started+=("$pid")
    wait_for redis-server "$pid" test -S "$REDIS_SOCK"
    echo "redis-server: pid $pid, port $REDIS_PORT, socket $REDIS_SOCK"
fi
if [ "$have_nats" = 1 ]; then
    NATS_PORT=$(free_port)
    taskset -c "$SERVER_CPU" nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats-server.log" 2>&1 &
    pid=$!
    started+=("$pid")
    wait_for nats-server "$pid" listening "$NATS_PORT"
    echo "nats-server: pid $pid, port $NATS_PORT"
fi

# Busy share of the whole machine (0-100) over 2 seconds, from /proc/stat.
busy() {
    local _c a1 a2 a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8 total idle
    read -r _c a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
    sleep 2
    read -r _c b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
    total=$(((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8) - (a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8)))
    idle=$(((b4 + b5) - (a4 + a5)))
    echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}

# Whether PID is this script or one of its descendants.
ours() {
    local pid=$1
    while [ "${pid:-1}" -gt 1 ]; do
        [ "$pid" = "$$" ] && return 0
        pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
    done
    return 1
}

# Other benchmark programs: any bench/*.sh script (persist-suite, grpc-suite, spin-sweep, another
# run-all), load generators, veddb-bench (ours run one at a time, so none of ours is running here).
other_benchmarks() {
    local pid
    for pid in $(pgrep -f 'bench/[A-Za-z0-9_-]+\.sh|redis-benchmark|h2load' || true) $(pgrep -x veddb-bench || true); do
        # Gone already (such as the subshell that ran pgrep), or ours: not foreign.
        [ -e "/proc/$pid" ] || continue
        ours "$pid" || printf '%s ' "$pid"
    done
}

wait_quiet() { # pair name
    local waited=0 load others
    while true; do
        load=$(busy)
        others=$(other_benchmarks)
        if [ "$load" -le "$BUSY_MAX_PCT" ] && [ -z "${others// /}" ]; then
            return
        fi
        if [ "$waited" -ge "$QUIET_WAIT_S" ]; then
            {
                echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
                echo "!! run-all: the machine is still busy (${load}% over 2 s; other benchmark"
                echo "!! PIDs: ${others:-none}) after ${QUIET_WAIT_S} s: measuring $1 ANYWAY."
                echo "!! Its figures are marked noisy; do not trust them."
                echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            } >&2
            echo "$1 busy=${load}% others=${others:-none}" >>"$OUT/noisy.txt"
            return
        fi
        echo "  (machine busy: ${load}%, other benchmarks: ${others:-none}; waiting)"
        waited=$((waited + 2))
    done
}

# Runs one measurement; a failed run is recorded, not fatal. Appends to runs.tsv:
# pair side rep json status.
measure() { # pair side rep veddb-bench-args...
    local pair=$1 side=$2 rep=$3
    shift 3
    local name="$pair.$side.r$rep" status=ok
    if ! "$@" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1; then
        status=failed
        echo "  $name FAILED (see $OUT/$name.txt):" >&2
        tail -n 3 "$OUT/$name.txt" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$pair" "$side" "$rep" "$name.json" "$status" >>"$OUT/runs.tsv"
    if [ "$status" = ok ]; then
        python3 - "$OUT/$name.json" "$name" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))["results"][0]
print(f"  {sys.argv[2]:<34} {s['ops_per_sec']:>12,.0f}/s  p50 {s['p50_ns'] / 1e3:8.1f} us  p99 {s['p99_ns'] / 1e3:8.1f} us  errors {s['errors']}")
EOF
    fi
}

pinned=(taskset -c "$CLIENT_CPU" "$VEDDB_BENCH")
kv=(--keys "$KEYS" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --duration "$DURATION" --warmup "$WARMUP")
: >"$OUT/runs.tsv"

if [ "$RUN_GRPC_SUITE" = 1 ]; then
    echo "== gRPC vs tonic: bench/grpc-suite.sh (REPS=$REPS)"
    OUT="$OUT/grpc" REPS="$REPS" bench/grpc-suite.sh
fi

for rep in $(seq 1 "$REPS"); do
    echo "== round $rep of $REPS"
    wait_quiet kv-get-d1
    measure kv-get-d1 veddb-local "$rep" "${pinned[@]}" local --instance "$V1_NAME" --op get --clients 1 \
        --depth 1 "${kv[@]}"
    if [ "$have_redis" = 1 ]; then
        measure kv-get-d1 redis-unix "$rep" "${pinned[@]}" redis --unix "$REDIS_SOCK" --op get --clients 1 \
            --depth 1 "${kv[@]}"
    fi

    wait_quiet kv-batched
    measure kv-batched veddb-local "$rep" "${pinned[@]}" local --instance "$V1_NAME" --op mix \
        --clients "$BATCH_CLIENTS" --depth "$BATCH_DEPTH" "${kv[@]}"
    if [ "$have_redis" = 1 ]; then
        measure kv-batched redis-unix "$rep" "${pinned[@]}" redis --unix "$REDIS_SOCK" --op mix \
            --clients "$BATCH_CLIENTS" --depth "$BATCH_DEPTH" "${kv[@]}"
    fi

    wait_quiet cores
    measure cores veddb-1-core "$rep" "$VEDDB_BENCH" local --instance "$V1_NAME" --op mix \
        --clients "$CORES_CLIENTS" --depth "$BATCH_DEPTH" "${kv[@]}"
    measure cores veddb-default "$rep" "$VEDDB_BENCH" local --instance "$VD_NAME" --op mix \
        --clients "$CORES_CLIENTS" --depth "$BATCH_DEPTH" "${kv[@]}"

    wait_quiet colocate
    for side in 1-core:"$V1_NAME" default:"$VD_NAME" workers-4:"$VW4_NAME"; do
        measure colocate "veddb-${side%%:*}" "$rep" "$VEDDB_BENCH" local --instance "${side#*:}" --op get \
            --clients 1 --depth 1 "${kv[@]}"
    done

    for subscribers in $PUBSUB_SUBSCRIBERS; do
        for size in $PUBSUB_SIZES; do
            pair="pubsub-$subscribers-$size"
            wait_quiet "$pair"
            for transport in $PUBSUB_TRANSPORTS; do
                target=()
                case $transport in
                local) target=(--instance "$V1_NAME") ;;
                grpc) target=(--addr "$V1_GRPC") ;;
                redis) [ "$have_redis" = 1 ] && target=(--unix "$REDIS_SOCK") ;;
                nats) [ "$have_nats" = 1 ] && target=(--addr "127.0.0.1:$NATS_PORT") ;;
                *)
                    echo "run-all: unknown transport $transport" >&2
                    exit 1
                    ;;
                esac
                [ ${#target[@]} -gt 0 ] || continue
                measure "$pair" "$transport" "$rep" "${pinned[@]}" pubsub --transport "$transport" "${target[@]}" \
                    --subscribers "$subscribers" --message-size "$size" --duration "$PUBSUB_DURATION" \
                    --warmup "$PUBSUB_WARMUP"
            done
        done
    done
done

elapsed=$(($(date +%s) - started_at))
echo "elapsed_s=$elapsed" >>"$OUT/meta.txt"
echo "== medians over $REPS rounds (results in $OUT; ${elapsed} s)"
GRPC_SUMMARY=${GRPC_SUMMARY:-}
if [ -z "$GRPC_SUMMARY" ]; then
    if [ -f "$OUT/grpc/summary.json" ]; then
        GRPC_SUMMARY="$OUT/grpc/summary.json"
    else
        GRPC_SUMMARY=$(ls -t bench/results/grpc-*/summary.json 2>/dev/null | head -n 1 || true)
    fi
fi
python3 bench/suite-report.py "$OUT" "$VEDDB_BENCH" "$DOCS" "$GRPC_SUMMARY"
