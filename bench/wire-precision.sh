#!/usr/bin/env bash
# Bytes per token on the sockets and layer error of each dispatch/combine wire pair on the Super-shaped latent and
# standard models (64 experts, 4 shards, 2 expert silos, 128 tokens), Gaussian inputs and inputs with outlier columns;
# every cluster error is checked against the independent numpy model of the same quantization (tests/tools/wire_error.py)
# on the same inputs and weights. Writes OUT/run.json (the cluster's report), OUT/numpy.jsonl and OUT/table.md.
#   bash bench/wire-precision.sh OUT [MODELS_DIR] [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/wire-precision.sh OUT [MODELS_DIR] [PAIRS]}
models=${2:-models}
pairs=${3:-bf16/bf16,mxfp8-e4m3/bf16,mxfp8-e4m3/mxfp8-e4m3,mxfp6-e2m3/bf16,mxfp4/bf16,nvfp4/bf16,mxfp4/mxfp8-e4m3,fp32/fp32}
mkdir -p "$out"
dotnet build src/MoECluster.Cli -c Release -v q -nologo > /dev/null
dotnet src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll run --once --preset super --experts 64 --shards 4 --expert-silos 2 --tokens 128 \
  --wire-sweep "$pairs" --inputs gaussian,outliers --report "$out/run.json" --dump "$out/dump" --models-dir "$models" | tee "$out/run.log"
: > "$out/numpy.jsonl"
for member in latent:super-shape standard:super-standard; do
  id=${member%%:*}; preset=${member#*:}
  for kind in gaussian outliers; do
    /usr/bin/python3 tests/tools/wire_error.py sweep --model "$models/$preset-64x1" --layer 1 --shards 4 --dump "$out/dump" \
      --id "$id" --input-kind "$kind" --pairs "$pairs" | tee -a "$out/numpy.jsonl"
  done
done
/usr/bin/python3 bench/wire_precision_table.py "$out/run.json" "$out/numpy.jsonl" | tee "$out/table.md"
