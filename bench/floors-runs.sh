#!/usr/bin/env bash
# The layer floors N times in a row (`moecluster bench --layer-only`), then each batch size's median efficiency: this
# machine's memory bandwidth swings between about 45 and 80 GB/s within seconds, so one run's efficiency is noisy.
# Usage: bench/floors-runs.sh MODEL_DIR OUT_DIR [RUNS=7]   (MODEL_DIR: moecluster init-model --preset super-shape --experts 64 --layers 1)
set -euo pipefail
MODEL=$1; OUT=$2; RUNS=${3:-7}
M="dotnet src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll"
mkdir -p "$OUT"
for i in $(seq 1 "$RUNS"); do
  echo "run $i at $(date -u +%H:%M:%S), load average $(cut -d' ' -f1 /proc/loadavg)"
  $M bench --layer-only --backend managed --model "$MODEL" --tokens 1 8 64 256 --json "$OUT/floors-$i.json" > "$OUT/floors-$i.txt" 2>&1
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rows = {}
for i in range(1, runs + 1):
    r = json.load(open(f"{out}/floors-{i}.json"))
    for e in r["layer"]:
        f = e["managed"]["floors"]
        rows.setdefault(e["tokens"], []).append((e["managed"]["seconds"], f["efficiency"], f["efficiency_at_run_best_read"], f["read_bytes_per_second"], f["gemm_flops_per_second"]))
print(f"{runs} runs; per batch size: median layer s, efficiency (probes beside the batch) median [min-max], at the run's best read median [min-max]")
summary = {}
for t, v in sorted(rows.items()):
    s, e, b = [x[0] for x in v], [x[1] for x in v], [x[2] for x in v]
    print(f"T={t:4}: layer {statistics.median(s):.4f} s  efficiency {statistics.median(e):.2f} [{min(e):.2f}-{max(e):.2f}]  at best read {statistics.median(b):.2f} [{min(b):.2f}-{max(b):.2f}]")
    summary[t] = {"median_seconds": statistics.median(s), "median_efficiency": statistics.median(e), "efficiencies": e, "median_efficiency_at_run_best_read": statistics.median(b), "efficiencies_at_run_best_read": b}
json.dump({"runs": runs, "by_tokens": summary}, open(f"{out}/floors-summary.json", "w"), indent=1)
PY
