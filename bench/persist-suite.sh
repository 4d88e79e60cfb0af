#!/usr/bin/env bash
# VedDB persistence on one machine: acknowledged SETs with --fsync always against Redis with
# appendonly yes / appendfsync always, --fsync everysec against the in-memory server, snapshot
# write speed, and restart time for 1 M keys (from a snapshot, and from the log alone).
# Reproduces the "Persistence" section of docs/BENCHMARKS.md.
#
#   bench/persist-suite.sh                 # builds, runs REPS interleaved rounds, prints medians
#   REPS=5 DURATION_S=5 bench/persist-suite.sh
#   SOURCE=worktree bench/persist-suite.sh # measure the working tree instead of HEAD
#
# By default it measures the committed HEAD: `git archive HEAD` into target/persist-suite/src,
# built there (target/persist-suite/target), so the figures belong to one commit even while the
# working tree changes.
#
# Every measured server is a fresh process with an empty data directory, all under DATA_ROOT
# (default /tmp, one filesystem for both servers; the suite records which). Each round runs:
#   1. for c in CLIENTS (1 16 64): VedDB --fsync always, then Redis appendfsync always, c clients
#      each with one SET in flight (closed loop), 16-byte keys random over KEYS (100k, preloaded),
#      64-byte values. VedDB: `veddb-bench grpc --unary --op set --clients c --depth 1` (c HTTP/2
#      connections, one unary Set call in flight each). Redis: `redis-benchmark -t set -c c -d 64
#      -r 100000` (keys key:000000012345, also 16 bytes), sized to run about as long (DURATION_S),
#      after a warm-up run.
#   2. VedDB --cores 1 --fsync always at the largest CLIENTS (CORES1=0 skips it; for reading only)
#   3. VedDB --fsync everysec, then the in-memory VedDB (no --data-dir), RATIO_CLIENTS clients.
#      A diagnostic with a lean load generator (H2LOAD=0 skips it): h2load, the largest CLIENTS
#      connections x 1 stream, every call a unary Set of one key, against VedDB --fsync always and
#      in memory; and redis-benchmark without -r (one key) against Redis appendfsync always.
#   3b. LOCAL=1 (default): the same SET loads through shared memory, the load generator shaped
#      like redis-benchmark: one thread, c sessions (`veddb-bench local --clients 1 --sessions c`),
#      one SET in flight on each; against Redis over its Unix socket (`redis-benchmark -s`), and
#      --fsync everysec / in memory at RATIO_CLIENTS sessions.
#      Also VedDB --cores 1 (one core on CPU 0, like Redis) at the largest CLIENTS.
#      GRPC=0 skips 1-3 (the gRPC loads), RESTART=0 skips 4.
#   4. 1 M keys (MSET through Batch, 2048 keys per call): SNAPSHOT, stop, restart; and the same
#      with --snapshot-interval 0 and no SNAPSHOT (recovery replays the log alone). Restart time =
#      from exec to the first answered `veddb-cli ping` (the files are in the page cache, as right
#      after a stop); the server's own "recovered the data directory ... elapsed_ms" is kept too.
# Placement: VedDB --cores N pins its core threads itself (CPU 0 and 1 with --cores 2, so its core
# 1 shares CPU 1 with the load generator); redis-server is pinned to CPU 0 (taskset); both load
# generators (one thread each) are pinned to CPU 1.
# Before each run it waits (up to QUIET_WAIT_S) until the machine is idle and no build, test
# binary or load generator of someone else runs; a run during which other programs used more than
# FOREIGN_MAX_PCT of the machine is run again (up to ATTEMPTS times, the quietest kept; the
# summary lists kept runs over the limit). Restarts and SNAPSHOTs are checked the same way.
# PROFILE=1 (default) adds, after the rounds, unmeasured runs at 1 and 64 clients during which
# `perf` counts each server's fsyncs (ext4:ext4_sync_file_enter/exit): fsyncs/s, their duration,
# SETs per fsync, bytes written per fsync.
#
# Results: $OUT (default bench/results/persist-DATE/): every run's output, JSON and server log,
# meta.txt (commit, machine, filesystem, settings), summary.json (all figures and medians).
#
# Needs: cargo, git, python3, taskset, redis-server, redis-benchmark, redis-cli (Debian: apt-get
# install -y redis-server redis-tools); h2load (nghttp2-client) for H2LOAD=1, perf for PROFILE=1.
# Stops only the processes it started, by PID.
set -euo pipefail

REPS=${REPS:-3}
DURATION_S=${DURATION_S:-3}
WARMUP=${WARMUP:-500ms}
KEYS=${KEYS:-100000}
KEY_SIZE=16 # redis-benchmark -r keys are key:NNNNNNNNNNNN, 16 bytes: VedDB's keys match
VALUE_SIZE=${VALUE_SIZE:-64}
CLIENTS=${CLIENTS:-1 16 64}
RATIO_CLIENTS=${RATIO_CLIENTS:-64}
CORES=${CORES:-2}
CORES1=${CORES1:-1}
RESTART_KEYS=${RESTART_KEYS:-1000000}
MEMORY_MB=${MEMORY_MB:-1024}
DATA_ROOT=${DATA_ROOT:-/tmp}
PROFILE=${PROFILE:-1}
H2LOAD=${H2LOAD:-1}
LOCAL=${LOCAL:-1}
GRPC=${GRPC:-1}
RESTART=${RESTART:-1}
REDIS_R=-r
QUIET_WAIT_S=${QUIET_WAIT_S:-600}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-10}
FOREIGN_MAX_PCT=${FOREIGN_MAX_PCT:-5}
ATTEMPTS=${ATTEMPTS:-4}
SOURCE=${SOURCE:-head}
SERVER_CPU=0
CLIENT_CPU=1

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-bench/results/persist-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

for tool in cargo python3 taskset redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || {
        echo "persist-suite: $tool is missing (apt-get install -y redis-server redis-tools)" >&2
        exit 1
    }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "persist-suite: needs 2 CPUs (servers from CPU $SERVER_CPU, load on $CLIENT_CPU)" >&2
    exit 1
fi
if [ "$H2LOAD" = 1 ] && ! command -v h2load >/dev/null; then
    echo "persist-suite: h2load is missing (apt-get install -y nghttp2-client); no h2load diagnostic" >&2
    H2LOAD=0
fi
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then
    echo "persist-suite: perf is missing; no fsync profile (PROFILE=0)" >&2
    PROFILE=0
fi

case $SOURCE in
head)
    COMMIT=$(git rev-parse HEAD)
    build=$root/target/persist-suite
    # Extract again only when HEAD moved (a fresh extraction makes cargo rebuild every crate).
    if [ "$(cat "$build/src.commit" 2>/dev/null)" != "$COMMIT" ]; then
        rm -rf "$build/src"
        mkdir -p "$build/src"
        git archive --format=tar "$COMMIT" | tar -x -C "$build/src"
        echo "$COMMIT" >"$build/src.commit"
    fi
    echo "== building $COMMIT (release, from git archive HEAD)"
    (cd "$build/src" && CARGO_TARGET_DIR=$build/target cargo build --release -p veddb-server -p veddb-bench -p veddb-client)
    bin=$build/target/release
    ;;
worktree)
    COMMIT="$(git rev-parse HEAD) + working tree"
    echo "== building the working tree (release)"
    cargo build --release -p veddb-server -p veddb-bench -p veddb-client
    bin=$root/target/release
    ;;
*)
    echo "persist-suite: SOURCE is head or worktree, not $SOURCE" >&2
    exit 2
    ;;
esac
VEDDB_SERVER=$bin/veddb-server
VEDDB_BENCH=$bin/veddb-bench
VEDDB_CLI=$bin/veddb-cli
"$VEDDB_CLI" --help 2>&1 | grep -q '^ *snapshot' || {
    echo "persist-suite: this veddb-cli has no snapshot command" >&2
    exit 1
}

DATA=$(mktemp -d "$DATA_ROOT/veddb-persist-XXXXXX")
{
    echo "date $(date -Is)"
    echo "commit $COMMIT"
    if [ "$SOURCE" = worktree ]; then
        echo "worktree_changes $(git status --porcelain --untracked-files=no | wc -l) files, diff sha256 $(git diff HEAD | sha256sum | cut -c1-16)"
    fi
    echo "rustc $(rustc --version)"
    echo "redis $(redis-server --version)"
    echo "kernel $(uname -r)"
    echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
    echo "cpus $(nproc)"
    echo "data_root $DATA"
    echo "filesystem $(df -T "$DATA" | awk 'NR == 2 {print $1, $2}') mount $(df "$DATA" | awk 'NR == 2 {print $6}')"
    echo "settings REPS=$REPS DURATION_S=$DURATION_S WARMUP=$WARMUP KEYS=$KEYS KEY_SIZE=$KEY_SIZE VALUE_SIZE=$VALUE_SIZE CLIENTS='$CLIENTS' RATIO_CLIENTS=$RATIO_CLIENTS CORES=$CORES RESTART_KEYS=$RESTART_KEYS MEMORY_MB=$MEMORY_MB"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"

# h2load's request body: one framed SetRequest, key k:0 padded to KEY_SIZE, VALUE_SIZE bytes.
python3 - "$OUT/set-request.bin" "$KEY_SIZE" "$VALUE_SIZE" <<'EOF'
import struct, sys
key = b"k:0".ljust(int(sys.argv[2]), b".")
value = b"v" * int(sys.argv[3])
def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])
message = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
EOF

started=()
cleanup() {
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
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

# Other work that skews these figures: builds, test runs and load generators (idle servers of
# other sessions do not count; a busy one shows up as CPU load).
foreign_programs() {
    local pid mine name
    for pid in $(
        for name in cargo rustc clippy-driver veddb-bench redis-benchmark h2load; do pgrep -x "$name"; done
        pgrep -f "$root/target/[a-z]*/deps/" # test binaries of this workspace
    ); do
        mine=0
        for p in "${started[@]}"; do [ "$p" = "$pid" ] && mine=1; done
        [ "$mine" = 1 ] || echo "$pid"
    done
}

wait_quiet() {
    local t0 load others
    t0=$(date +%s)
    while :; do
        others=$(foreign_programs | wc -l)
        load=$(busy)
        if [ "$others" -eq 0 ] && [ "$load" -le "$QUIET_MAX_PCT" ]; then
            return
        fi
        if [ $(($(date +%s) - t0)) -ge "$QUIET_WAIT_S" ]; then
            echo "persist-suite: still busy (${load}%, $others foreign programs) after ${QUIET_WAIT_S}s; measuring anyway" >&2
            echo "$(date -Is) busy ${load}% foreign_programs $others" >>"$OUT/noisy-runs.txt"
            return
        fi
    done
}

cpu_ns() { # pid -> nanoseconds on CPU, summed over its threads, io_uring workers included
    # (a thread may end between the glob and the read: not an error). Threads that already
    # ended (the start's recovery threads) are only in /proc/PID/stat's utime + stime (ticks):
    # the larger of the two counts.
    local live ticks
    live=$({ cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{sum += $1} END {printf "%.0f", sum}')
    ticks=$({ cat /proc/"$1"/stat 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" \
        '{sub(/^.*\) /, ""); printf "%.0f", ($12 + $13) * 1e9 / hz}')
    awk -v a="${live:-0}" -v b="${ticks:-0}" 'BEGIN {printf "%.0f\n", (a > b ? a : b)}'
}

machine_ticks() { # USER_HZ ticks of the whole machine: user + nice + system, and steal
    awk '/^cpu / {print $2 + $3 + $4, $9}' /proc/stat
}

kthread_ticks() { # USER_HZ ticks of the kernel's threads (jbd2, kworkers: they work for our fsyncs)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{sub(/^.*\) /, ""); if ($2 == 2) s += $12 + $13} END {print s + 0}'
}

# Runs "$@" (a load generator writing to stdout) and measures, around it, the server's CPU time,
# the load generator's (its rusage), the kernel threads' and the whole machine's (user + nice +
# system). What the machine used beyond those, plus the hypervisor's steal time, is foreign load
# (interrupt and softirq time is left out: it is mostly this run's own loopback traffic); a run
# with more than FOREIGN_MAX_PCT of the machine is run again (up to ATTEMPTS times) and the
# quietest kept. Writes $file and $file.cpu.
# PREPARE (a function name, optional) runs before each attempt (a fresh server).
measured() { # name server-pid-var file command...
    local name=$1 pidvar=$2 file=$3
    shift 3
    local attempt best=999 t0 t1 v0 v1 s0 s1 k0 k1 client foreign pid hz
    hz=$(getconf CLK_TCK)
    for attempt in $(seq 1 "$ATTEMPTS"); do
        if [ "$attempt" -gt 1 ] && [ -n "${PREPARE:-}" ]; then "$PREPARE"; fi
        pid=${!pidvar}
        wait_quiet
        v0=$(cpu_ns "$pid")
        k0=$(kthread_ticks)
        t0=$(machine_ticks)
        s0=$(date +%s%N)
        (
            "$@" >"$file.try" 2>"$file.stderr"
            times >"$file.times"
        )
        client=$(tail -n 1 "$file.times" | awk '{s = 0; for (i = 1; i <= 2; i++) {
            split($i, b, "m"); s += b[1] * 60 + substr(b[2], 1, length(b[2]) - 1) } print s}')
        s1=$(date +%s%N)
        t1=$(machine_ticks)
        k1=$(kthread_ticks)
        v1=$(cpu_ns "$pid")
        foreign=$(awk -v t0="$t0" -v t1="$t1" -v hz="$hz" -v v="$((v1 - v0))" -v k="$((k1 - k0))" \
            -v c="$client" -v w="$((s1 - s0))" -v n="$(nproc)" \
            'BEGIN {split(t0, a, " "); split(t1, b, " ");
                f = (b[1] - a[1] - k) / hz - v / 1e9 - c; if (f < 0) f = 0; f += (b[2] - a[2]) / hz;
                printf "%.1f", 100 * f / (n * w / 1e9)}')
        if awk -v f="$foreign" -v b="$best" 'BEGIN {exit !(f < b)}'; then
            best=$foreign
            mv "$file.try" "$file"
            if [ -f "$file.json.try" ]; then mv "$file.json.try" "$file.json"; fi
            echo "server_ns $((v1 - v0)) client_s $client wall_ns $((s1 - s0)) foreign_pct $foreign attempt $attempt kthread_ticks $((k1 - k0))" >"$file.cpu"
        fi
        if awk -v f="$foreign" -v m="$FOREIGN_MAX_PCT" 'BEGIN {exit !(f <= m)}'; then
            break
        fi
        echo "  ($name: foreign load ${foreign}% of the machine; again)"
    done
    rm -f "$file.try" "$file.times" "$file.json.try"
}

# --- servers ---------------------------------------------------------------------------------

SERVER_PID=
SERVER_PORT=
SERVER_LOG=

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        local kept=()
        for p in "${started[@]}"; do [ "$p" = "$SERVER_PID" ] || kept+=("$p"); done
        started=("${kept[@]}")
        SERVER_PID=
    fi
}

# Waits until the VedDB server answers a ping (or the Redis server a PING).
wait_ready() { # kind
    for _ in $(seq 1 3000); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "persist-suite: the server exited; its log:" >&2
            tail -n 20 "$SERVER_LOG" >&2
            exit 1
        fi
        if [ "$1" = veddb ]; then
            # A TCP connect first (cheap: the port opens once the cores run), then a real ping.
            if (exec 3<>"/dev/tcp/127.0.0.1/$SERVER_PORT") 2>/dev/null; then
                "$VEDDB_CLI" --grpc "127.0.0.1:$SERVER_PORT" ping >/dev/null 2>&1 && return 0
            fi
        else
            redis-cli -p "$SERVER_PORT" ping >/dev/null 2>&1 && return 0
        fi
        sleep 0.005
    done
    echo "persist-suite: the server on port $SERVER_PORT does not answer" >&2
    exit 1
}

# start_veddb LOG CORES [server flags...]: a fresh VedDB on a free port (NEXT_PORT if set).
start_veddb() {
    local log=$1 cores=$2
    shift 2
    SERVER_PORT=${NEXT_PORT:-$(free_port)}
    SERVER_LOG=$log
    "$VEDDB_SERVER" --cores "$cores" --port "$SERVER_PORT" --memory-mb "$MEMORY_MB" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    started+=("$SERVER_PID")
    wait_ready veddb
}

# start_redis LOG DIR: a fresh redis-server (AOF, fsync always, no RDB) pinned to SERVER_CPU,
# preloaded with the KEYS keys redis-benchmark -r uses.
start_redis() {
    local log=$1 dir=$2
    mkdir -p "$dir"
    SERVER_PORT=$(free_port)
    SERVER_LOG=$log
    REDIS_SOCK=$dir/redis.sock
    taskset -c "$SERVER_CPU" redis-server --port "$SERVER_PORT" --bind 127.0.0.1 --dir "$dir" \
        --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --appendonly yes --appendfsync always --save '' --daemonize no --protected-mode no \
        >"$log" 2>&1 &
    SERVER_PID=$!
    started+=("$SERVER_PID")
    wait_ready redis
    python3 - "$KEYS" "$VALUE_SIZE" <<'EOF' | redis-cli -p "$SERVER_PORT" --pipe >/dev/null
import sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
value = b"x" * size
out = sys.stdout.buffer
for i in range(keys):
    key = b"key:%012d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value))
EOF
}

# --- the runs ----------------------------------------------------------------------------------

# veddb_set NAME CLIENTS CORES [server flags...]: one measured closed-loop SET run.
veddb_set() {
    local name=$1 clients=$2 cores=$3
    shift 3
    VEDDB_ARGS=("$@")
    VEDDB_RUN=$name
    VEDDB_CORES=$cores
    VEDDB_CLIENTS=$clients
    fresh_veddb
    PREPARE=fresh_veddb measured "$name" SERVER_PID "$OUT/$name.txt" veddb_load
    stop_server
    rm -rf "$DATA/$name"
    sed -n '2p' "$OUT/$name.txt" | sed -E "s/^(grpc|local) /$name /"
}

# veddb_local_set NAME CLIENTS CORES [server flags...]: veddb_set through shared memory.
veddb_local_set() {
    VEDDB_TRANSPORT=local
    veddb_set "$@"
    VEDDB_TRANSPORT=grpc
}

# redis_unix_set NAME CLIENTS: redis_set over Redis's Unix socket.
redis_unix_set() {
    REDIS_UNIX=1
    redis_set "$@"
    REDIS_UNIX=0
}

veddb_load() { # the load generator of veddb_set (reads the current server's port)
    if [ "${VEDDB_TRANSPORT:-grpc}" = local ]; then
        taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" local --instance "$VEDDB_INSTANCE" --pin "$CLIENT_CPU" \
            --op set --clients 1 --sessions "$VEDDB_CLIENTS" --depth 1 --keys "$KEYS" \
            --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --duration "${DURATION_S}s" \
            --warmup "$WARMUP" --json "$OUT/$VEDDB_RUN.txt.json.try"
        return
    fi
    taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" grpc --addr "127.0.0.1:$SERVER_PORT" --pin "$CLIENT_CPU" \
        --unary --op set --clients "$VEDDB_CLIENTS" --depth 1 --keys "$KEYS" --key-size "$KEY_SIZE" \
        --value-size "$VALUE_SIZE" --duration "${DURATION_S}s" --warmup "$WARMUP" \
        --json "$OUT/$VEDDB_RUN.txt.json.try"
}

fresh_veddb() {
    stop_server
    rm -rf "${DATA:?}/$VEDDB_RUN"
    local args=("${VEDDB_ARGS[@]}")
    if [ "${#args[@]}" -gt 0 ] && [ "${args[0]}" = --data-dir ]; then args[1]=$DATA/$VEDDB_RUN; fi
    if [ "${VEDDB_TRANSPORT:-grpc}" = local ]; then
        VEDDB_INSTANCE=psuite-$$-$VEDDB_RUN
        args+=(--create --name "$VEDDB_INSTANCE")
    fi
    start_veddb "$OUT/$VEDDB_RUN.server.log" "$VEDDB_CORES" "${args[@]}"
}

# redis_set NAME CLIENTS: warm-up run (also sizes -n to about DURATION_S), then the measured run.
redis_set() {
    local name=$1 clients=$2
    REDIS_RUN=$name
    REDIS_CLIENTS=$clients
    fresh_redis
    PREPARE=fresh_redis measured "$name" SERVER_PID "$OUT/$name.txt" redis_load
    stop_server
    rm -rf "${DATA:?}/$name"
    echo "$name $(tail -n 1 "$OUT/$name.txt")"
}

redis_target() { # over TCP, or the Unix socket with REDIS_UNIX=1
    if [ "${REDIS_UNIX:-0}" = 1 ]; then printf -- "-s %s" "$REDIS_SOCK"; else printf -- "-p %s" "$SERVER_PORT"; fi
}

redis_load() { # the load generator of redis_set (reads the current server's port)
    # shellcheck disable=SC2046
    taskset -c "$CLIENT_CPU" redis-benchmark $(redis_target) -t set -c "$REDIS_CLIENTS" \
        -d "$VALUE_SIZE" ${REDIS_R:+-r "$KEYS"} -n "$REDIS_N" --csv
}

fresh_redis() {
    stop_server
    rm -rf "${DATA:?}/$REDIS_RUN"
    start_redis "$OUT/$REDIS_RUN.server.log" "$DATA/$REDIS_RUN"
    # Warm-up, then a run of about half a second sized from it, whose rate sizes the measured run.
    local n=$((REDIS_CLIENTS * 100 > 1000 ? REDIS_CLIENTS * 100 : 1000)) rps pass
    for pass in 1 2; do
        # shellcheck disable=SC2046
        rps=$(taskset -c "$CLIENT_CPU" redis-benchmark $(redis_target) -t set -c "$REDIS_CLIENTS" \
            -d "$VALUE_SIZE" ${REDIS_R:+-r "$KEYS"} -n "$n" --csv | tail -n 1 | cut -d, -f2 | tr -d '"')
        n=$(awk -v r="$rps" 'BEGIN {n = int(r / 2); print (n < 500 ? 500 : n)}')
    done
    REDIS_N=$(awk -v r="$rps" -v d="$DURATION_S" 'BEGIN {n = int(r * d); print (n < 1000 ? 1000 : n)}')
}

# h2load_set NAME CORES [server flags...]: the diagnostic with a lean load generator: h2load, 64
# connections x 1 stream, every call a unary Set of the same key (h2load sends one body).
h2load_set() {
    local name=$1 cores=$2
    shift 2
    VEDDB_ARGS=("$@")
    VEDDB_RUN=$name
    VEDDB_CORES=$cores
    fresh_veddb
    PREPARE=fresh_veddb measured "$name" SERVER_PID "$OUT/$name.txt" h2load_load
    stop_server
    rm -rf "${DATA:?}/$name"
    echo "$name: $(grep -E '^finished in' "$OUT/$name.txt"); $(grep -E '^status codes' "$OUT/$name.txt")"
}

h2load_load() {
    taskset -c "$CLIENT_CPU" h2load -D "$DURATION_S" --warm-up-time 1 -c "$MAX_CLIENTS" -m 1 -t 1 \
        -d "$OUT/set-request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$SERVER_PORT/veddb.v1.VedDb/Set"
}

# redis_same_key NAME: redis-benchmark without -r: every SET on the same key (the h2load twin).
redis_same_key() {
    local name=$1
    REDIS_RUN=$name
    REDIS_CLIENTS=$MAX_CLIENTS
    REDIS_R=
    fresh_redis
    PREPARE=fresh_redis measured "$name" SERVER_PID "$OUT/$name.txt" redis_load
    REDIS_R=-r
    stop_server
    rm -rf "${DATA:?}/$name"
    echo "$name $(tail -n 1 "$OUT/$name.txt")"
}

# restart NAME snapshot|log: 1 M keys, optional SNAPSHOT, stop, timed restart.
restart_case() {
    local name=$1 kind=$2 dir=$DATA/$1 t0 t1 load0 load1 snap_ms=0 attempt best=999 f v0
    rm -rf "$dir"
    start_veddb "$OUT/$name.load.log" "$CORES" --data-dir "$dir" --fsync always --snapshot-interval 0
    load0=$(date +%s%N)
    # The preload is one MSET (a Batch call) per 2048 keys; the GETs after it are not used.
    taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" grpc --addr "127.0.0.1:$SERVER_PORT" --pin "$CLIENT_CPU" \
        --op get --keys "$RESTART_KEYS" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" \
        --duration 100ms --warmup 0s >/dev/null
    load1=$(date +%s%N)
    if [ "$kind" = snapshot ]; then
        # SNAPSHOT again while other programs ran during it (the last one's log lines count).
        for attempt in $(seq 1 "$ATTEMPTS"); do
            wait_quiet
            v0=$(cpu_ns "$SERVER_PID")
            window_begin
            t0=$(date +%s%N)
            "$VEDDB_CLI" --grpc "127.0.0.1:$SERVER_PORT" snapshot >/dev/null
            t1=$(date +%s%N)
            window_end
            f=$(window_foreign "$(($(cpu_ns "$SERVER_PID") - v0))")
            snap_ms=$(((t1 - t0) / 1000000))
            SNAP_FOREIGN=$f
            awk -v f="$f" -v m="$FOREIGN_MAX_PCT" 'BEGIN {exit !(f <= m)}' && break
            echo "  ($name snapshot: foreign load ${f}% of the machine; again)"
        done
    fi
    stop_server
    local files port last_key check restart_ms exec_ns
    files=$(cd "$dir" && find . -type f -printf '%s %p\n' | sort -k2 | tr '\n' ';')
    last_key=$(python3 -c "import sys; n = int(sys.argv[1]) - 1; print(f'k:{n}'.ljust(int(sys.argv[2]), '.'))" \
        "$RESTART_KEYS" "$KEY_SIZE")
    # The restart, again while other programs ran during it; the quietest is kept.
    for attempt in $(seq 1 "$ATTEMPTS"); do
        port=$(free_port)
        wait_quiet
        window_begin
        t0=$(date +%s%N)
        NEXT_PORT=$port start_veddb "$OUT/$name.restart.log.try" "$CORES" --data-dir "$dir" --fsync always \
            --snapshot-interval 0
        t1=$(date +%s%N)
        window_end
        f=$(window_foreign "$(cpu_ns "$SERVER_PID")")
        check=$("$VEDDB_CLI" --grpc "127.0.0.1:$SERVER_PORT" get "$last_key" 2>&1 | head -c 100 || true)
        stop_server
        if awk -v f="$f" -v b="$best" 'BEGIN {exit !(f < b)}'; then
            best=$f
            restart_ms=$(((t1 - t0) / 1000000))
            exec_ns=$t0
            mv "$OUT/$name.restart.log.try" "$OUT/$name.restart.log"
        fi
        awk -v f="$f" -v m="$FOREIGN_MAX_PCT" 'BEGIN {exit !(f <= m)}' && break
        echo "  ($name restart: foreign load ${f}% of the machine; again)"
    done
    rm -f "$OUT/$name.restart.log.try"
    {
        echo "kind $kind"
        echo "keys $RESTART_KEYS"
        echo "load_ms $(((load1 - load0) / 1000000))"
        echo "snapshot_command_ms $snap_ms"
        [ "$kind" = snapshot ] && echo "snapshot_foreign_pct $SNAP_FOREIGN"
        echo "restart_ms $restart_ms"
        echo "restart_foreign_pct $best"
        echo "restart_exec_unix_ns $exec_ns"
        echo "files $files"
        echo "last_key_check $check"
    } >"$OUT/$name.txt"
    rm -rf "$dir"
    python3 - "$OUT/$name" "$CORES" <<'EOF'
import re, sys
base, cores = sys.argv[1], int(sys.argv[2])
text = open(base + ".txt").read()
restart = open(base + ".restart.log").read()
load = open(base + ".load.log").read()
rec = re.search(r"recovered the data directory.*?keys=(\d+).*?elapsed_ms=(\d+)", restart)
snaps = re.findall(r"snapshot written.*?entries=(\d+) bytes=(\d+) elapsed_ms=(\d+)", load)[-cores:]
ms = int(re.search(r"restart_ms (\d+)", text).group(1))
line = f"{base.rsplit('/', 1)[1]}: restart {ms} ms to the first ping"
if rec:
    line += f" (recovery {rec.group(2)} ms, {rec.group(1)} keys)"
if snaps:
    b = sum(int(s[1]) for s in snaps)
    e = max(int(s[2]) for s in snaps)
    line += f"; snapshot {b / 1e6:.1f} MB in {e} ms ({b / 1e6 / max(e, 1) * 1e3:.0f} MB/s)"
print(line)
EOF
}

# window_begin; ...; window_foreign SERVER_NS: the share of the machine (percent) that other
# programs used in between (as in `measured`; this script's own children, the pings, are ours).
children_mark() { # VAR: CPU time of this shell's finished children so far (builtin `times`, no fork)
    local _user _sys
    times >"$OUT/.times"
    { read -r _ _; read -r _user _sys; } <"$OUT/.times"
    printf -v "$1" '%s %s' "$_user" "$_sys"
}

window_begin() {
    children_mark W_C0
    W_T0=$(machine_ticks)
    W_K0=$(kthread_ticks)
    W_S0=$(date +%s%N)
}

window_end() {
    W_S1=$(date +%s%N)
    W_T1=$(machine_ticks)
    W_K1=$(kthread_ticks)
    children_mark W_C1
}

window_foreign() { # SERVER_NS (in a $(...) after window_end)
    local t1=$W_T1 k1=$W_K1 s1=$W_S1
    awk -v t0="$W_T0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v v="$1" -v k="$((k1 - W_K0))" \
        -v w="$((s1 - W_S0))" -v n="$(nproc)" -v c0="$W_C0" -v c1="$W_C1" \
        'function secs(t,   p, b, i, s) {split(t, p, " "); s = 0; for (i = 1; i <= 2; i++) {
                split(p[i], b, "m"); s += b[1] * 60 + substr(b[2], 1, length(b[2]) - 1) } return s}
        BEGIN {split(t0, a, " "); split(t1, b, " ");
            f = (b[1] - a[1] - k) / hz - v / 1e9 - (secs(c1) - secs(c0)); if (f < 0) f = 0; f += (b[2] - a[2]) / hz;
            printf "%.1f", 100 * f / (n * w / 1e9)}'
}

# --- rounds ------------------------------------------------------------------------------------

MAX_CLIENTS=$(echo "$CLIENTS" | tr ' ' '\n' | sort -n | tail -n 1)
for rep in $(seq 1 "$REPS"); do
    echo "== round $rep of $REPS"
    if [ "$GRPC" = 1 ]; then
    for c in $CLIENTS; do
        veddb_set "veddb-always-c$c-r$rep" "$c" "$CORES" --data-dir X --fsync always
        redis_set "redis-always-c$c-r$rep" "$c"
    done
    if [ "$CORES1" = 1 ] && [ "$CORES" != 1 ]; then
        veddb_set "veddb1-always-c$MAX_CLIENTS-r$rep" "$MAX_CLIENTS" 1 --data-dir X --fsync always
    fi
    veddb_set "veddb-everysec-c$RATIO_CLIENTS-r$rep" "$RATIO_CLIENTS" "$CORES" --data-dir X --fsync everysec
    veddb_set "veddb-memory-c$RATIO_CLIENTS-r$rep" "$RATIO_CLIENTS" "$CORES"
    fi
    if [ "$GRPC" = 1 ] && [ "$H2LOAD" = 1 ]; then
        h2load_set "h2load-always-r$rep" "$CORES" --data-dir X --fsync always
        redis_same_key "redis-samekey-r$rep"
        h2load_set "h2load-memory-r$rep" "$CORES"
    fi
    if [ "$LOCAL" = 1 ]; then
        for c in $CLIENTS; do
            veddb_local_set "local-always-c$c-r$rep" "$c" "$CORES" --data-dir X --fsync always
            redis_unix_set "redis-unix-always-c$c-r$rep" "$c"
        done
        if [ "$CORES1" = 1 ] && [ "$CORES" != 1 ]; then
            veddb_local_set "local1-always-c$MAX_CLIENTS-r$rep" "$MAX_CLIENTS" 1 --data-dir X --fsync always
        fi
        veddb_local_set "local-everysec-c$RATIO_CLIENTS-r$rep" "$RATIO_CLIENTS" "$CORES" --data-dir X --fsync everysec
        veddb_local_set "local-memory-c$RATIO_CLIENTS-r$rep" "$RATIO_CLIENTS" "$CORES"
    fi
    if [ "$RESTART" = 1 ]; then
        restart_case "restart-snapshot-r$rep" snapshot
        restart_case "restart-log-r$rep" log
    fi
done

# --- fsync profile (not measured runs) ---------------------------------------------------------

# perf records every ext4 fsync of the machine for PROFILE_S seconds in the middle of a run; the
# summary keeps those of the server's PID.
PROFILE_S=${PROFILE_S:-2}
profile_run() { # name clients kind
    local name=$1 clients=$2 kind=$3 io0 io1 ops
    wait_quiet
    if [ "$kind" = veddb ]; then
        VEDDB_ARGS=(--data-dir X --fsync always)
        VEDDB_RUN=$name
        VEDDB_CORES=$CORES
        fresh_veddb
        taskset -c "$CLIENT_CPU" "$VEDDB_BENCH" grpc --addr "127.0.0.1:$SERVER_PORT" --pin "$CLIENT_CPU" \
            --unary --op set --clients "$clients" --depth 1 --keys "$KEYS" --key-size "$KEY_SIZE" \
            --value-size "$VALUE_SIZE" --duration "$((PROFILE_S + 3))s" --warmup 500ms \
            --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1 &
    else
        REDIS_RUN=$name
        REDIS_CLIENTS=$clients
        fresh_redis
        taskset -c "$CLIENT_CPU" redis-benchmark -p "$SERVER_PORT" -t set -c "$clients" -d "$VALUE_SIZE" \
            -r "$KEYS" -n $((REDIS_N * (PROFILE_S + 3) / DURATION_S)) --csv >"$OUT/$name.txt" 2>&1 &
    fi
    local load=$!
    sleep 2
    io0=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER_PID/io")
    perf record -q -a -e ext4:ext4_sync_file_enter -e ext4:ext4_sync_file_exit -o "$OUT/$name.perf" \
        -- sleep "$PROFILE_S" >/dev/null 2>&1 || echo "  (perf record failed)"
    io1=$(awk '/^write_bytes/ {print $2}' "/proc/$SERVER_PID/io")
    wait "$load" || true
    perf script -i "$OUT/$name.perf" -F pid,tid,time,event,trace >"$OUT/$name.perf.txt" 2>/dev/null || true
    rm -f "$OUT/$name.perf"
    echo "server_pid $SERVER_PID write_bytes $((io1 - io0)) seconds $PROFILE_S" >"$OUT/$name.io"
    stop_server
    rm -rf "${DATA:?}/$name"
}
if [ "$PROFILE" = 1 ]; then
    echo "== fsync profile (perf, unmeasured runs)"
    for c in 1 "$MAX_CLIENTS"; do
        profile_run "profile-veddb-c$c" "$c" veddb
        profile_run "profile-redis-c$c" "$c" redis
    done
fi

echo "== medians over $REPS rounds (results in $OUT)"
python3 - "$OUT" "$REPS" "$CLIENTS" "$RATIO_CLIENTS" "$MAX_CLIENTS" "$PROFILE" "$CORES" "$FOREIGN_MAX_PCT" <<'EOF'
import glob, json, os, re, statistics, sys

out, reps, clients, ratio_c, max_c, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6] == "1"
cores, foreign_max = int(sys.argv[7]), float(sys.argv[8])
med = statistics.median
summary = {"meta": open(os.path.join(out, "meta.txt")).read().splitlines()}

def cpu(path):
    f = open(path + ".cpu").read().split()
    d = dict(zip(f[::2], f[1::2]))
    return float(d["server_ns"]), float(d["foreign_pct"])

def veddb(name):
    rows = []
    for r in range(1, reps + 1):
        p = os.path.join(out, f"{name}-r{r}.txt")
        s = json.load(open(p + ".json"))["results"][0]
        ns, foreign = cpu(p)
        rows.append({"ops": s["ops_per_sec"], "p50_us": s["p50_ns"] / 1e3, "p99_us": s["p99_ns"] / 1e3,
                     "errors": s["errors"], "server_cpu_us_per_op": ns / 1e3 / max(s["count"], 1), "foreign_pct": foreign})
    return rows

def redis(name):
    rows = []
    for r in range(1, reps + 1):
        p = os.path.join(out, f"{name}-r{r}.txt")
        line = [l for l in open(p).read().splitlines() if l.startswith('"SET"')][-1]
        f = [float(x.strip('"')) for x in line.split(",")[1:]]
        ns, foreign = cpu(p)
        wall = float(re.search(r"wall_ns (\d+)", open(p + ".cpu").read()).group(1))
        rows.append({"ops": f[0], "p50_us": f[3] * 1e3, "p99_us": f[5] * 1e3, "errors": 0,
                     "server_cpu_us_per_op": ns / 1e3 / max(f[0] * wall / 1e9, 1), "foreign_pct": foreign})
    return rows

def joined(xs, fmt="{:.0f}"):
    return " ".join(fmt.format(x) for x in xs)

def m(rows, k):
    return med(r[k] for r in rows)

def line(label, rows):
    return (f"{label:<34} {m(rows, 'ops'):>9.0f} {m(rows, 'p50_us'):>9.0f} {m(rows, 'p99_us'):>9.0f}"
            f" {m(rows, 'server_cpu_us_per_op'):>8.1f}   [{joined(r['ops'] for r in rows)}]"
            + (f"  ERRORS {sum(r['errors'] for r in rows)}" if any(r['errors'] for r in rows) else ""))

FIELDS = ("ops", "p50_us", "p99_us", "server_cpu_us_per_op")

def medians(rows):
    return {k: m(rows, k) for k in FIELDS}

def versus(label_a, a, label_b, b, ratio_label="  VedDB / Redis"):
    """Prints two series (the second only if labelled) and the ratio of their ops/s, of the
    medians and per round; returns the summary entry."""
    print(line(label_a, a))
    if label_b:
        print(line(label_b, b))
    ratio = m(a, "ops") / m(b, "ops")
    per_round = [x["ops"] / y["ops"] for x, y in zip(a, b)]
    print(f"{ratio_label:<34} {ratio:>8.2f}x   (per round {joined(per_round, '{:.2f}')})")
    return {"veddb": a, "redis": b, "ratio_of_medians": ratio, "ratio_per_round": per_round,
            "veddb_median": medians(a), "redis_median": medians(b)}

print(f"{'acknowledged SETs (closed loop)':<34} {'ops/s':>9} {'p50 us':>9} {'p99 us':>9} {'cpu us/op':>9}   [per round ops/s]")
summary["fsync_always"] = {}
if os.path.exists(os.path.join(out, f"veddb-always-c{clients[0]}-r1.txt.json")):
    for c in clients:
        summary["fsync_always"][c] = versus(
            f"VedDB --fsync always, c={c}", veddb(f"veddb-always-c{c}"),
            f"Redis appendfsync always, c={c}", redis(f"redis-always-c{c}"))
    if os.path.exists(os.path.join(out, f"veddb1-always-c{max_c}-r1.txt.json")):
        a = veddb(f"veddb1-always-c{max_c}")
        print(line(f"VedDB --cores 1 always, c={max_c}", a))
        summary["fsync_always_cores1"] = {"clients": max_c, "rows": a, "median_ops": m(a, "ops")}
    e, mem = veddb(f"veddb-everysec-c{ratio_c}"), veddb(f"veddb-memory-c{ratio_c}")
    ratio = versus(f"VedDB --fsync everysec, c={ratio_c}", e, f"VedDB in memory, c={ratio_c}", mem,
                   "  everysec / in memory")["ratio_of_medians"]
    summary["everysec_vs_memory"] = {"clients": ratio_c, "everysec": e, "memory": mem, "ratio_of_medians": ratio}
    try:
        a = summary["fsync_always"][ratio_c]["veddb_median"]["ops"]
        print(f"{'  always / in memory':<34} {a / m(mem, 'ops'):>8.2f}x")
    except KeyError:
        pass

if os.path.exists(os.path.join(out, "local-always-c1-r1.txt.json")):
    print()
    print("through shared memory: one load thread with c sessions, one SET in flight on each; Redis over its Unix socket")
    summary["local_fsync_always"] = {}
    for c in clients:
        summary["local_fsync_always"][c] = versus(
            f"VedDB local --fsync always, c={c}", veddb(f"local-always-c{c}"),
            f"Redis unix appendfsync always, c={c}", redis(f"redis-unix-always-c{c}"))
    e, mem = veddb(f"local-everysec-c{ratio_c}"), veddb(f"local-memory-c{ratio_c}")
    ratio = versus(f"VedDB local --fsync everysec, c={ratio_c}", e, f"VedDB local in memory, c={ratio_c}", mem,
                   "  everysec / in memory")["ratio_of_medians"]
    if os.path.exists(os.path.join(out, f"local1-always-c{max_c}-r1.txt.json")):
        entry = versus(f"VedDB local --cores 1 always, c={max_c}", veddb(f"local1-always-c{max_c}"),
                       None, redis(f"redis-unix-always-c{max_c}"), "  VedDB --cores 1 / Redis")
        summary["local_fsync_always_cores1"] = {"clients": max_c, **{
            k: entry[k] for k in ("veddb", "ratio_of_medians", "ratio_per_round", "veddb_median")}}
    a = summary["local_fsync_always"].get(ratio_c)
    if a:
        print(f"{'  always / in memory':<34} {a['veddb_median']['ops'] / m(mem, 'ops'):>8.2f}x")
    summary["local_everysec_vs_memory"] = {"clients": ratio_c, "everysec": e, "memory": mem, "ratio_of_medians": ratio}

def h2load(name):
    rows = []
    for r in range(1, reps + 1):
        p = os.path.join(out, f"{name}-r{r}.txt")
        t = open(p).read()
        ops = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t).group(1))
        done, ok = map(int, re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", t).groups())
        mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", t).group(1)
        mean_us = float(re.sub(r"[a-z]+$", "", mean)) * {"us": 1, "ms": 1e3, "s": 1e6}[re.search(r"[a-z]+$", mean).group(0)]
        ns, foreign = cpu(p)
        rows.append({"ops": ops, "mean_us": mean_us, "done": done, "succeeded": ok, "foreign_pct": foreign})
    return rows

if os.path.exists(os.path.join(out, "h2load-always-r1.txt")):
    print()
    print(f"diagnostic, {max_c} connections x 1 stream, every SET on the same key (h2load / redis-benchmark without -r):")
    a, mem, b = h2load("h2load-always"), h2load("h2load-memory"), redis("redis-samekey")
    for label, rows in (("VedDB --fsync always (h2load)", a), ("VedDB in memory (h2load)", mem)):
        print(f"{label:<34} {m(rows, 'ops'):>9.0f} mean {m(rows, 'mean_us'):>7.0f} us   [{joined(r['ops'] for r in rows)}]"
              + ("" if all(r["done"] == r["succeeded"] for r in rows) else "  FAILED REQUESTS"))
    print(f"{'Redis appendfsync always':<34} {m(b, 'ops'):>9.0f} p50 {m(b, 'p50_us'):>8.0f} us   [{joined(r['ops'] for r in b)}]")
    print(f"{'  VedDB always / Redis':<34} {m(a, 'ops') / m(b, 'ops'):>8.2f}x;  VedDB always / in memory {m(a, 'ops') / m(mem, 'ops'):.2f}x")
    summary["same_key_h2load"] = {"clients": max_c, "veddb_always": a, "veddb_memory": mem, "redis_always": b,
                                  "ratio_vs_redis": m(a, "ops") / m(b, "ops"), "ratio_vs_memory": m(a, "ops") / m(mem, "ops")}

print()
restarts = {}
for kind in (("snapshot", "log") if os.path.exists(os.path.join(out, "restart-snapshot-r1.txt")) else ()):
    rows = []
    for r in range(1, reps + 1):
        base = os.path.join(out, f"restart-{kind}-r{r}")
        t = open(base + ".txt").read()
        restart_log, load_log = open(base + ".restart.log").read(), open(base + ".load.log").read()
        rec = re.search(r"recovered the data directory.*?keys=(\d+).*?elapsed_ms=(\d+)", restart_log)
        snaps = re.findall(r"snapshot written.*?entries=(\d+) bytes=(\d+) elapsed_ms=(\d+)", load_log)[-cores:]
        files = [f.split() for f in re.search(r"files (.*)", t).group(1).split(";") if f.strip()]
        row = {"restart_ms": int(re.search(r"restart_ms (\d+)", t).group(1)),
               "recovery_ms": int(rec.group(2)) if rec else None, "recovered_keys": int(rec.group(1)) if rec else None,
               "load_ms": int(re.search(r"load_ms (\d+)", t).group(1)),
               "data_dir_bytes": sum(int(s) for s, _ in files),
               "files": {p: int(s) for s, p in files},
               "last_key_check": re.search(r"last_key_check (.*)", t).group(1),
               "restart_foreign_pct": float(re.search(r"restart_foreign_pct (\S+)", t).group(1))}
        if snaps:
            b, e_ms = sum(int(s[1]) for s in snaps), max(int(s[2]) for s in snaps)
            row.update({"snapshot_bytes": b, "snapshot_entries": sum(int(s[0]) for s in snaps), "snapshot_ms": e_ms,
                        "snapshot_mb_s": b / 1e6 / max(e_ms, 1) * 1e3,
                        "snapshot_command_ms": int(re.search(r"snapshot_command_ms (\d+)", t).group(1)),
                        "snapshot_per_shard": [{"entries": int(s[0]), "bytes": int(s[1]), "ms": int(s[2])} for s in snaps]})
        # Where the restart time goes, from the server log's timestamps (UTC, microseconds).
        t0 = int(re.search(r"restart_exec_unix_ns (\d+)", t).group(1)) / 1e9
        import datetime
        def at(pattern):
            mm = re.search(r"^(\S+Z)\s.*" + pattern, restart_log, re.M)
            if not mm:
                return None
            ts = datetime.datetime.fromisoformat(mm.group(1).replace("Z", "+00:00")).timestamp()
            return round((ts - t0) * 1e3)
        row["timeline_ms"] = {"recovered": at("recovered the data directory"), "ready": at("veddb-server ready"),
                              "listening": at("gRPC listening"), "first_ping": row["restart_ms"]}
        rows.append(row)
    restarts[kind] = rows
    keys = rows[0]["recovered_keys"]
    print(f"restart from {'a snapshot' if kind == 'snapshot' else 'the log alone'} ({keys} keys recovered): "
          f"median {med(r['restart_ms'] for r in rows)} ms to the first ping, recovery {med(r['recovery_ms'] for r in rows)} ms "
          f"[{' '.join(str(r['restart_ms']) for r in rows)}]; data dir {med(r['data_dir_bytes'] for r in rows) / 1e6:.1f} MB")
    tl = {k: med(r["timeline_ms"][k] for r in rows if r["timeline_ms"][k] is not None) for k in ("recovered", "ready", "listening")}
    print(f"  timeline from exec (medians): recovered at {tl['recovered']:.0f} ms, cores ready {tl['ready']:.0f} ms, "
          f"gRPC listening {tl['listening']:.0f} ms, first ping answered {med(r['restart_ms'] for r in rows):.0f} ms")
    if kind == "snapshot":
        print(f"snapshot: median {med(r['snapshot_mb_s'] for r in rows):.0f} MB/s "
              f"({med(r['snapshot_bytes'] for r in rows) / 1e6:.1f} MB, {med(r['snapshot_ms'] for r in rows)} ms by the slowest shard; "
              f"SNAPSHOT command {med(r['snapshot_command_ms'] for r in rows)} ms) [{joined(r['snapshot_mb_s'] for r in rows)}]")
    bad = [r["last_key_check"] for r in rows if "v" * 8 not in r["last_key_check"]]
    if bad:
        print(f"WARNING: the last key did not come back after a restart: {bad}")
summary["restart"] = restarts

if profile:
    print()
    summary["profile"] = {}
    for name in sorted(glob.glob(os.path.join(out, "profile-*.io"))):
        base = name[:-3]
        io = open(name).read().split()
        pid, wbytes, secs = io[1], int(io[3]), float(io[5])
        opens, durs, gaps, last_exit = {}, [], [], {}
        n = 0
        for l in open(base + ".perf.txt"):
            mm = re.match(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+ext4:ext4_sync_file_(enter|exit):.*?ino (\d+)", l)
            if not mm or mm.group(1) != pid:
                continue
            tid, ts, kind, ino = mm.group(2), float(mm.group(3)), mm.group(4), mm.group(5)
            if kind == "enter":
                n += 1
                opens[tid] = (ts, ino)
                if ino in last_exit:
                    gaps.append(ts - last_exit[ino])
            elif tid in opens:
                t0, ino = opens.pop(tid)
                durs.append(ts - t0)
                last_exit[ino] = ts
        label = os.path.basename(base)
        try:
            j = json.load(open(base + ".json"))["results"][0]["ops_per_sec"]
        except (OSError, ValueError):
            line_ = [l for l in open(base + ".txt").read().splitlines() if l.startswith('"SET"')]
            j = float(line_[-1].split(",")[1].strip('"')) if line_ else 0.0
        durs.sort(); gaps.sort()
        q = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))] * 1e6 if xs else 0
        rate = n / secs
        row = {"fsyncs_per_s": rate, "fsync_p50_us": q(durs, .5), "fsync_p99_us": q(durs, .99),
               "fsync_mean_us": statistics.mean(durs) * 1e6 if durs else 0,
               "gap_p50_us": q(gaps, .5), "gap_mean_us": statistics.mean(gaps) * 1e6 if gaps else 0,
               "sets_per_s": j, "sets_per_fsync": j / rate if rate else 0,
               "disk_bytes_per_fsync": wbytes / secs / rate if rate else 0}
        summary["profile"][label] = row
        print(f"{label:<20} {rate:>6.0f} fsyncs/s, fsync p50 {row['fsync_p50_us']:.0f} us p99 {row['fsync_p99_us']:.0f} us, "
              f"gap to the next fsync of the file p50 {row['gap_p50_us']:.0f} us, {j:.0f} SETs/s = {row['sets_per_fsync']:.1f} SETs per fsync, "
              f"{row['disk_bytes_per_fsync']:.0f} B written per fsync")

noisy = []
for path in sorted(glob.glob(os.path.join(out, "*.cpu"))):
    f = float(re.search(r"foreign_pct (\S+)", open(path).read()).group(1))
    if f > foreign_max:
        noisy.append(f"{os.path.basename(path)[:-8]} {f}%")
for path in sorted(glob.glob(os.path.join(out, "restart-*.txt"))):
    for what in ("snapshot", "restart"):
        mm = re.search(what + r"_foreign_pct (\S+)", open(path).read())
        if mm and float(mm.group(1)) > foreign_max:
            noisy.append(f"{os.path.basename(path)[:-4]} {what} {mm.group(1)}%")
summary["kept_runs_over_foreign_max"] = noisy
print()
print(f"kept runs with more than {foreign_max}% foreign load: {', '.join(noisy) if noisy else 'none'}")

with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(f"wrote {os.path.join(out, 'summary.json')}")
EOF
