#!/usr/bin/env bash
# Issue 14: `moecluster cost --profile measured --check-load` against the launcher's local cluster (super-shape pair,
# 64 experts, 2 expert silos, 4 shards, managed backend): for each model and each closed-loop worker count, the
# prediction from parts measured in the same command (the layer at the front-end's batch, the request's way in and out,
# the routed rows) against the `moecluster load` run that follows it. Prints each check; the reports go to OUTDIR.
# Usage: bench/cost-load-check.sh OUTDIR   (MODELS_DIR: where `run` writes the pair, default /tmp/m14models;
#        WORKERS: default "16 8 4 1"; MODELS: default "latent standard"; TOKENS: tokens per request, default 8)
set -u
OUT=${1:-/tmp/cost-load-check}
MODELS_DIR=${MODELS_DIR:-/tmp/m14models}
WORKERS=${WORKERS:-16 8 4 1}
MODELS=${MODELS:-latent standard}
TOKENS=${TOKENS:-8}
PORT=18780
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
M=(dotnet src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll)
URL="http://127.0.0.1:$PORT"

uptime | tee "$OUT/uptime.txt"
setsid "${M[@]}" run --preset super --expert-silos 2 --shards 4 --backend managed --models-dir "$MODELS_DIR" \
  --urls "$URL" --silo-port 25711 --gateway-port 35700 --tokens 8 > "$OUT/run.log" 2>&1 &
RUN=$!
for _ in $(seq 1 900); do grep -q "serving at" "$OUT/run.log" && break; sleep 1; done
"${M[@]}" warmup --url "$URL" --expert-silos 2 --timeout 600 | tail -1

status=0
for model in $MODELS; do
  if [ "$model" = latent ]; then dir="$MODELS_DIR/super-shape-64x1"; else dir="$MODELS_DIR/super-standard-64x1"; fi
  for w in $WORKERS; do
    "${M[@]}" cost --model "$dir" --profile measured --wire bf16/bf16 --ep 1 --check-load "$URL" --load-model "$model" \
      --load-workers "$w" --load-tokens "$TOKENS" --load-seconds 15 --report "$OUT/check-$model-w$w.json" \
      | sed -n '/check against moecluster load/,$p' || status=1
    uptime | tee -a "$OUT/uptime.txt"
  done
done

kill -TERM -- "-$RUN" 2>/dev/null || kill -TERM "$RUN" 2>/dev/null
for _ in $(seq 1 30); do kill -0 "$RUN" 2>/dev/null || break; sleep 1; done
exit "$status"
