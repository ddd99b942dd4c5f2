#!/usr/bin/env bash
# Managed SGEMM vs numpy/OpenBLAS float32 matmul at the Nemotron-3 Super expert shapes,
# (T x 1024)·(1024 -> 2688) and (T x 2688)·(2688 -> 1024) for T in {64, 256, 1024}.
# Both sides: best-of-N wall time after warm-up, all cores (OpenBLAS with OPENBLAS_NUM_THREADS unset uses every core).
# The two run alternately ROUNDS times (default 2) and each shape keeps its best, to damp a noisy machine.
# OpenBLAS runs as configured by the environment (OPENBLAS_NUM_THREADS, OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE pass
# through; the header line shows the kernel OpenBLAS picked).
# Prints a per-shape table; the LAST line is `managed/openblas = R`, R the geometric mean of the six ratios.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${ROUNDS:-2}"
python=/usr/bin/python3
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if ! "$python" -c 'import numpy' 2>/dev/null; then
  echo "installing python3-numpy" >&2
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq python3-numpy >&2
fi

# Debian's numpy calls whatever provides libblas.so.3: the reference BLAS unless OpenBLAS is installed.
blas_is_openblas() {
  "$python" -c 'import numpy as np; np.ones((2, 2)) @ np.ones((2, 2)); import sys; sys.exit(0 if "openblas" in open("/proc/self/maps").read() else 1)'
}
if ! blas_is_openblas; then
  echo "numpy is not using OpenBLAS; installing libopenblas0-pthread" >&2
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq libopenblas0-pthread >&2
  blas_is_openblas || { echo "numpy still does not load OpenBLAS" >&2; exit 1; }
fi

if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "note: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE forces OpenBLAS's kernel choice; unset it for OpenBLAS's own CPU detection" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dotnet build kernels/MoECluster.Kernels.Bench -c Release -nologo -v quiet >&2
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds: managed" >&2
  dotnet run -c Release --no-build --project kernels/MoECluster.Kernels.Bench -- gemm --json "$work/managed-$round.json" >&2
  echo "round $round/$rounds: numpy/OpenBLAS" >&2
  "$python" bench/openblas_gemm.py --json "$work/openblas-$round.json"
done

"$python" - "$work" "$rounds" <<'PY'
import json
import math
import sys

work, rounds = sys.argv[1], int(sys.argv[2])


def best(prefix):
    runs = [json.load(open(f"{work}/{prefix}-{r}.json")) for r in range(1, rounds + 1)]
    table = {}
    for run in runs:
        for row in run["results"]:
            key = (row["tokens"], row["in"], row["out"])
            table[key] = max(table.get(key, 0.0), row["gflops"])
    return runs[0], table


managed_run, managed = best("managed")
openblas_run, openblas = best("openblas")
blas = openblas_run["blas"]
print(f"managed: path {managed_run['path']}, {managed_run['threads']} threads of {managed_run['processors']} processors")
print(f"numpy {openblas_run['numpy']}: {blas.get('openblas_config', blas['libraries'])}, "
      f"core {blas.get('openblas_core', '?')}, {blas.get('threads', '?')} threads "
      f"(OPENBLAS_NUM_THREADS={openblas_run['OPENBLAS_NUM_THREADS'] or 'unset'}, "
      f"OPENBLAS_CORETYPE={openblas_run.get('OPENBLAS_CORETYPE') or 'unset'}, "
      f"OPENBLAS_L2_SIZE={openblas_run.get('OPENBLAS_L2_SIZE') or 'unset'})")
print()
print(f"| {'T':>5} | {'in':>5} | {'out':>5} | {'managed GFLOP/s':>15} | {'OpenBLAS GFLOP/s':>16} | {'ratio':>5} |")
print(f"|{'-' * 7}|{'-' * 7}|{'-' * 7}|{'-' * 17}|{'-' * 18}|{'-' * 7}|")
logs = []
for key in sorted(managed, key=lambda k: (k[0], -k[2])):
    ratio = managed[key] / openblas[key]
    logs.append(math.log(ratio))
    print(f"| {key[0]:>5} | {key[1]:>5} | {key[2]:>5} | {managed[key]:>15.1f} | {openblas[key]:>16.1f} | {ratio:>5.2f} |")
print()
print(f"managed/openblas = {math.exp(sum(logs) / len(logs)):.2f}")
PY
