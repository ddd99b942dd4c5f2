#!/usr/bin/env bash
# The GPU check, in two steps: publish here (needs the .NET SDK, no GPU), run there (needs an NVIDIA driver and,
# for the cublas backend, libcublas; no .NET, no network). The run step runs the GPU tests
# (tests/MoECluster.Kernels.Gpu.Tests) and `moecluster bench` with the ilgpu and cublas backends, and prints one
# summary: decode weight-read bandwidth against the device's copy bandwidth, ILGPU against cuBLAS GEMM.
#
#   bench/gpu-check.sh publish OUT_DIR [--rid RID]     makes OUT_DIR and OUT_DIR.tar.gz (self-contained; carry the tarball)
#   OUT_DIR/gpu-check.sh run [RESULTS_DIR] [--seconds S]   on the GPU machine (RESULTS_DIR default OUT_DIR/results)
set -euo pipefail

usage() {
  sed -n '2,9s/^# \{0,1\}//p' "$0"
}

publish() {
  local out="" rid="linux-x64"
  while [ $# -gt 0 ]; do
    case "$1" in
      --rid)
        [ $# -ge 2 ] || { echo "gpu-check.sh: --rid needs a value" >&2; exit 2; }
        rid="$2"
        shift 2
        ;;
      -*)
        echo "gpu-check.sh publish: unknown option $1" >&2
        exit 2
        ;;
      *)
        [ -z "$out" ] || { echo "gpu-check.sh publish: one OUT_DIR only" >&2; exit 2; }
        out="$1"
        shift
        ;;
    esac
  done
  [ -n "$out" ] || { usage >&2; exit 2; }

  local repo
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  rm -rf "$out/app"
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  # Both executables into one folder: they share the one .NET runtime a self-contained publish carries.
  local project
  for project in src/MoECluster.Cli/MoECluster.Cli.csproj tests/MoECluster.Kernels.Gpu.Runner/MoECluster.Kernels.Gpu.Runner.csproj; do
    dotnet publish "$repo/$project" -c Release -r "$rid" --self-contained true -o "$out/app" -nologo -v quiet \
      -p:DebugType=none -p:SatelliteResourceLanguages=en
  done
  for exe in moecluster MoECluster.Kernels.Gpu.Runner; do
    [ -x "$out/app/$exe" ] || { echo "gpu-check.sh: $out/app/$exe is missing after dotnet publish" >&2; exit 1; }
  done
  cp "$0" "$out/gpu-check.sh"
  chmod +x "$out/gpu-check.sh"
  # The folder is ~150 MB (two runtimes' worth of libraries less the shared runtime); the tarball carries it in < 64 MiB.
  tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
  echo "published $rid: $out ($(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1)); to carry: $out.tar.gz ($(du -h "$out.tar.gz" | cut -f1))"
  echo "  on the GPU machine: tar xzf $(basename "$out").tar.gz && $(basename "$out")/gpu-check.sh run"
}

run() {
  local here results="" seconds="1"
  here="$(cd "$(dirname "$0")" && pwd)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --seconds)
        [ $# -ge 2 ] || { echo "gpu-check.sh: --seconds needs a value" >&2; exit 2; }
        seconds="$2"
        shift 2
        ;;
      -*)
        echo "gpu-check.sh run: unknown option $1" >&2
        exit 2
        ;;
      *)
        results="$1"
        shift
        ;;
    esac
  done
  [ -x "$here/app/moecluster" ] || { echo "gpu-check.sh run: no $here/app/moecluster: run the published copy (gpu-check.sh publish OUT_DIR; OUT_DIR/gpu-check.sh run)" >&2; exit 2; }
  results="${results:-$here/results}"
  mkdir -p "$results"
  # No ICU on a bare machine is fine: nothing here is culture-sensitive.
  export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

  {
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    else
      echo "nvidia-smi: not found"
    fi
  } | tee "$results/machine.txt"

  local tests_rc=0 bench_rc=0
  "$here/app/MoECluster.Kernels.Gpu.Runner" > "$results/gpu-tests.txt" 2>&1 || tests_rc=$?
  "$here/app/moecluster" bench --backend ilgpu --backend cublas --seconds "$seconds" \
    --json "$results/bench.json" > "$results/bench.txt" 2> "$results/bench.err" || bench_rc=$?

  echo
  echo "== GPU check summary (full output in $results) =="
  echo "GPU tests: $(tail -n 1 "$results/gpu-tests.txt") (exit $tests_rc)"
  grep -h 'FAILED' "$results/gpu-tests.txt" | cut -c1-200 || true
  grep -h 'skipped:' "$results/bench.err" || true
  if grep -q '^GPU summary' "$results/bench.txt"; then
    sed -n '/^GPU summary/,/^[^ G]/p' "$results/bench.txt" | grep -E '^(GPU summary|  )'
  else
    echo "bench printed no GPU summary (exit $bench_rc): no CUDA device was used"
  fi
  grep -E '^  T=' "$results/bench.txt" | sed 's/^/layer /' || true
  [ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
}

case "${1:-}" in
  publish)
    shift
    publish "$@"
    ;;
  run)
    shift
    run "$@"
    ;;
  -h | --help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
