#!/usr/bin/env bash
# Local GET latency and server CPU versus the server's --spin-us: closed loop, and open loop at
# 2,000 requests/s (where a sleeping core costs a wake-up). Run on a quiet machine with at least
# 5 CPUs (server on CPUs 0-1, client on CPU 4):  cargo build --release -p veddb-server -p veddb-bench && bash bench/spin-sweep.sh
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
out=${OUT:-/tmp/sweep}; mkdir -p "$out"
nproc; uname -r
for spin in 0 20 50 200 1000 5000; do
  name="sweep-$spin-$$"
  taskset -c 0,1 "$BIN/veddb-server" --create --name "$name" --cores 2 --port 0 --spin-us "$spin" 2>"$out/server-$spin.log" &
  pid=$!
  for _ in $(seq 100); do [ -e "/dev/shm/veddb-$name.sock" ] && break; sleep 0.05; done
  sleep 0.3
  "$BIN/veddb-bench" local --instance "$name" --keys 10000 --op get --duration 2s --warmup 300ms --pin 4 --json "$out/closed-$spin.json" > "$out/closed-$spin.txt" 2>&1
  t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  "$BIN/veddb-bench" local --instance "$name" --keys 10000 --op get --rate 2000 --duration 3s --warmup 500ms --pin 4 --json "$out/open-$spin.json" > "$out/open-$spin.txt" 2>&1
  t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  sleep 1
  t2=$(awk '{print $14+$15}' /proc/$pid/stat); sleep 2; t3=$(awk '{print $14+$15}' /proc/$pid/stat)
  kill $pid; wait $pid 2>/dev/null
  python3 - "$spin" "$out/closed-$spin.json" "$out/open-$spin.json" "$t0" "$t1" "$t2" "$t3" <<'PY'
import json, sys, os
spin = sys.argv[1]
c = json.load(open(sys.argv[2]))["results"][0]
o = json.load(open(sys.argv[3]))["results"][0]
hz = os.sysconf("SC_CLK_TCK")
t0, t1, t2, t3 = map(float, sys.argv[4:8])
busy_cpu = (t1 - t0) / hz / 3.5 * 100   # open-loop run (warm-up + 3 s)
idle_cpu = (t3 - t2) / hz / 2.0 * 100   # idle, no requests
print(f"spin_us={spin:>5}  closed: p50 {c['p50_ns']/1000:.2f} us p99 {c['p99_ns']/1000:.2f} us {c['ops_per_sec']:.0f} ops/s | open 2000/s: p50 {o['p50_ns']/1000:.2f} us p99 {o['p99_ns']/1000:.2f} us p99.9 {o['p999_ns']/1000:.2f} us | server CPU at 2000/s {busy_cpu:.1f}% idle {idle_cpu:.1f}%")
PY
done
