#!/usr/bin/env bash
# Publishes the `moecluster` executable as a self-contained linux-x64 application (no .NET needed on the
# target) into OUT_DIR, then prints what it made. The GPU kernels load libcuda (the NVIDIA driver) and
# libcublas (the CUDA runtime) at run time on the target; nothing CUDA is needed to publish.
#
#   deploy/publish.sh OUT_DIR [--rid RID] [--framework-dependent]
#
# --rid RID                a .NET runtime identifier (default linux-x64; linux-arm64 for Grace hosts)
# --framework-dependent    needs a .NET 10 runtime (Microsoft.AspNetCore.App) on the target; smaller
set -euo pipefail

usage() {
  sed -n '2,10s/^# \{0,1\}//p' "$0"
}

out=""
rid="linux-x64"
self_contained="true"
while [ $# -gt 0 ]; do
  case "$1" in
    --rid)
      [ $# -ge 2 ] || { echo "publish.sh: --rid needs a value" >&2; exit 2; }
      rid="$2"
      shift 2
      ;;
    --framework-dependent)
      self_contained="false"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "publish.sh: unknown option $1" >&2
      usage >&2
      exit 2
      ;;
    *)
      [ -z "$out" ] || { echo "publish.sh: one OUT_DIR only (got $out and $1)" >&2; exit 2; }
      out="$1"
      shift
      ;;
  esac
done
if [ -z "$out" ]; then
  usage >&2
  exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet publish "$repo/src/MoECluster.Cli/MoECluster.Cli.csproj" \
  -c Release -r "$rid" --self-contained "$self_contained" -o "$out" -nologo -v quiet

if [ ! -x "$out/moecluster" ]; then
  echo "publish.sh: $out/moecluster is missing after dotnet publish" >&2
  exit 1
fi

files=$(find "$out" -type f | wc -l)
size=$(du -sh "$out" | cut -f1)
kind="self-contained"
[ "$self_contained" = "true" ] || kind="framework-dependent"
echo "published $kind $rid: $out ($files files, $size)"
echo "  entry point: $out/moecluster (moecluster silo --role frontend|expert)"
echo "  install it:  sudo deploy/install.sh $out"
