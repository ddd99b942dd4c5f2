#!/usr/bin/env bash
# Issue 15's measurement: hot experts on the Super-shaped latent layer (64 experts, K 22) with Zipf-skewed routing,
# 2 expert silos pinned one per core (run --pin-expert-cores; the front-end floats), 4 shards. Closed-loop load at 8
# workers before a re-plan, POST /v1/admin/rebalance, the same load after it, in one run on one cluster; each load
# reports the expert silos' rows, (row, expert) pairs and compute time over its own window (cluster.balance).
# Usage: bench/rebalance.sh OUTDIR   (MODELS_DIR default /tmp/rbmodels; SKEW default zipf:1.2; REDUNDANT default 8;
#        DURATION default 30; CYCLES default 1: each cycle starts a fresh cluster; WORKERS default 8; SETTLE default 20:
#        seconds of the same load, not measured, before the first measurement, so that the JIT's later tiers and the
#        weights' first touches do not count against "before")
set -u
OUT=${1:-/tmp/rebalance}
MODELS=${MODELS_DIR:-/tmp/rbmodels}
SKEW=${SKEW:-zipf:1.2}
REDUNDANT=${REDUNDANT:-8}
DURATION=${DURATION:-30}
CYCLES=${CYCLES:-1}
SETTLE=${SETTLE:-20}
WORKERS=${WORKERS:-8}
PORT=18780
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
M=(dotnet src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll)
URL="http://127.0.0.1:$PORT"

for cycle in $(seq 1 "$CYCLES"); do
  uptime | tee -a "$OUT/uptime.txt"
  setsid "${M[@]}" run --preset super --gate-skew "$SKEW" --pin-expert-cores --expert-silos 2 --shards 4 --backend managed \
    --models-dir "$MODELS" --urls "$URL" --silo-port 25611 --gateway-port 35600 --tokens 8 > "$OUT/run-$cycle.log" 2>&1 &
  RUN=$!
  for _ in $(seq 1 900); do grep -q "serving at" "$OUT/run-$cycle.log" && break; sleep 1; done
  grep -E "pinned|cluster up" "$OUT/run-$cycle.log"
  "${M[@]}" warmup --url "$URL" --expert-silos 2 --timeout 600 | tail -1
  [ "$SETTLE" -gt 0 ] && "${M[@]}" load --url "$URL" --mode closed --concurrency "$WORKERS" --duration "$SETTLE" --warmup 0 \
    --models latent --tokens 8 --seed 5 > /dev/null 2>&1
  "${M[@]}" load --url "$URL" --mode closed --concurrency "$WORKERS" --duration "$DURATION" --warmup 3 --models latent --tokens 8 \
    --seed $((cycle * 10 + 1)) --json "$OUT/before-$cycle.json" 2>/dev/null | tail -6
  curl -s -X POST "$URL/v1/admin/rebalance?model=latent" -H 'Content-Type: application/json' \
    -d "{\"redundant_experts\": $REDUNDANT}" > "$OUT/rebalance-$cycle.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('rebalance:', {k: r.get(k) for k in ('epoch','changed','silos_applied','load_seconds','seconds','error')}); [print('  layer', l['layer'], l['reason']) for l in r.get('layers', [])]" "$OUT/rebalance-$cycle.json"
  sleep 3
  "${M[@]}" load --url "$URL" --mode closed --concurrency "$WORKERS" --duration "$DURATION" --warmup 3 --models latent --tokens 8 \
    --seed $((cycle * 10 + 2)) --json "$OUT/after-$cycle.json" 2>/dev/null | tail -6
  curl -s "$URL/stats" > "$OUT/stats-$cycle.json"
  curl -s "$URL/v1/admin/placement?model=latent" > "$OUT/placement-$cycle.json"
  kill -TERM -- "-$RUN" 2>/dev/null || kill -TERM "$RUN"
  for _ in $(seq 1 60); do kill -0 "$RUN" 2>/dev/null || break; sleep 1; done
done

python3 - "$OUT" "$CYCLES" <<'PY'
import json, sys
out, cycles = sys.argv[1], int(sys.argv[2])
def summary(f):
    j = json.load(open(f))
    b = [x for x in j['cluster'].get('balance', []) if x['model'] == 'latent']
    layer = b[0]
    silos = layer['silos']
    crit = max(s['compute_microseconds'] for s in silos)
    tokens = j['tokens_per_second'] * (j['duration_s'] + j.get('warmup_s', 3))  # balance counts the warm-up too
    return j['tokens_per_second'], j['latency_ms']['p50'], layer['rows_imbalance'], layer['pairs_imbalance'], layer['compute_imbalance'], crit / tokens
for c in range(1, cycles + 1):
    a = summary(f"{out}/before-{c}.json"); b = summary(f"{out}/after-{c}.json")
    r = json.load(open(f"{out}/rebalance-{c}.json"))
    extra = sum(l['extra_replicas'] for l in r.get('layers', []))
    print(f"cycle {c}: before {a[0]:.1f} tok/s p50 {a[1]:.1f} ms, imbalance rows {a[2]:.2f} pairs {a[3]:.2f} compute {a[4]:.2f}, slowest silo compute {a[5]:.0f} us/token")
    print(f"         after  {b[0]:.1f} tok/s p50 {b[1]:.1f} ms, imbalance rows {b[2]:.2f} pairs {b[3]:.2f} compute {b[4]:.2f}, slowest silo compute {b[5]:.0f} us/token")
    print(f"         tokens/s after / before = {b[0]/a[0]:.3f}; extra replicas {extra} of 64 experts ({extra/64:.1%} more expert memory)")
PY
