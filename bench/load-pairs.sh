#!/usr/bin/env bash
# Issue 12's load measurements against the README's main command's cluster (the AppHost on port 18680, super-shape
# pair, managed backend): 1 and 8 closed-loop workers alternating three times, 16 workers, a sweep 1..16 with its HTML
# report, the silos' resident memory after the warm-up and after the runs, and /stats. Prints each pair's ratios.
# Usage: bench/load-pairs.sh OUTDIR   (MODELS_DIR: where the AppHost writes the pair, default /tmp/m12models)
set -u
OUT=${1:-/tmp/load-pairs}
MODELS=${MODELS_DIR:-/tmp/m12models}
PORT=18680
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
M=(dotnet src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll)

uptime | tee "$OUT/uptime-start.txt"
setsid dotnet aspire/MoECluster.AppHost/bin/Release/net10.0/MoECluster.AppHost.dll --port "$PORT" --silo-port 25511 \
  --gateway-port 35500 --dashboard-port 18690 --models-dir "$MODELS" > "$OUT/apphost.log" 2>&1 &
APP=$!
for _ in $(seq 1 400); do grep -q "gateway ready" "$OUT/apphost.log" && break; sleep 1; done
# The AppHost's warmup resource logs to the Aspire dashboard; the same command here waits for both expert silos and
# loads every shard before the first measurement.
"${M[@]}" warmup --url "http://127.0.0.1:$PORT" --expert-silos 2 --timeout 600 | tail -1

# Resident memory of each silo process (role from its command line).
rss() {
  for pid in $(pgrep -f "moecluster silo --role"); do
    role=$(tr '\0' '\n' < "/proc/$pid/cmdline" | grep -A1 -x -- "--role" | tail -1)
    kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    awk -v r="$role" -v p="$pid" -v k="$kb" 'BEGIN { printf "%s pid %s rss %.2f GB\n", r, p, k / 1024 / 1024 }'
  done
}

echo "RSS after warm-up:" | tee "$OUT/rss.txt"; rss | tee -a "$OUT/rss.txt"
for pair in 1 2 3; do
  for c in 1 8; do
    uptime | tee -a "$OUT/uptime.txt"
    "${M[@]}" load --url "http://127.0.0.1:$PORT" --mode closed --concurrency "$c" --duration 15 --warmup 3 --models latent \
      --tokens 8 --seed $((pair * 10 + c)) --json "$OUT/load-c$c-p$pair.json" 2>/dev/null | tail -12
  done
done
uptime | tee -a "$OUT/uptime.txt"
"${M[@]}" load --url "http://127.0.0.1:$PORT" --mode closed --concurrency 16 --duration 15 --warmup 3 --models latent \
  --tokens 8 --seed 99 --json "$OUT/load-c16.json" 2>/dev/null | tail -12
"${M[@]}" load --url "http://127.0.0.1:$PORT" --mode closed --sweep 1,2,4,8,16 --duration 10 --warmup 3 --models latent \
  --tokens 8 --seed 7 --slo-p99 250 --json "$OUT/sweep.json" --html "$OUT/sweep.html" 2>&1 | tail -9 | tee "$OUT/sweep.txt"
echo "RSS after load:" | tee -a "$OUT/rss.txt"; rss | tee -a "$OUT/rss.txt"
curl -s "http://127.0.0.1:$PORT/stats" > "$OUT/stats.json"

kill -TERM -- "-$APP" 2>/dev/null || kill -TERM "$APP" 2>/dev/null
for _ in $(seq 1 30); do kill -0 "$APP" 2>/dev/null || break; sleep 1; done
pkill -f "MoECluster.AppHost.dll --port $PORT" || true

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(f):
    j = json.load(open(f))
    return j['tokens_per_second'], j['latency_ms']['p50'], j['requests']
for p in (1, 2, 3):
    a = load(f"{out}/load-c1-p{p}.json"); b = load(f"{out}/load-c8-p{p}.json")
    print(f"pair {p}: 1w {a[0]:.1f} tok/s p50 {a[1]:.1f} ms | 8w {b[0]:.1f} tok/s p50 {b[1]:.1f} ms | throughput x{b[0]/a[0]:.2f} p50 x{b[1]/a[1]:.2f} | 8w requests {b[2]}")
c = load(f"{out}/load-c16.json")
print(f"16w: {c[0]:.1f} tok/s p50 {c[1]:.1f} ms requests {c[2]}")
PY
