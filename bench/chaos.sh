#!/usr/bin/env bash
# A chaos run on the main command's cluster: starts the Aspire AppHost (the README's first command, default the
# Super-shaped pair; PRESET=tiny for a quick one), waits until it is ready, then runs `moecluster chaos` for DURATION
# seconds (default 600): closed-loop load whose every answer is checked against the in-process forward, while random
# silo processes of the launcher — the front-end included — are killed (SIGKILL), hung (SIGSTOP for 5-30 s, then
# SIGCONT) and stopped (SIGTERM) one at a time, each followed by a wait until the cluster is whole again. The AppHost's
# supervisor restarts what died (the silos run under Aspire's orchestrator, so chaos takes every silo process of this
# user: run nothing else). Writes $OUT/chaos-$PRESET-${DURATION}s.json and .md (OUT defaults to docs; the launcher's log goes
# to a temporary file whose path it prints), stops the launcher,
# exits with the chaos run's code (0: no failed request, no wrong answer, every fault recovered).
# Other knobs, passed through: CONCURRENCY (4), FAULT_INTERVAL (30 s), HANG (5,30), SEED (1), WIRE (bf16), PORT (8080),
# SILO_PORT (11111), GATEWAY_PORT (30000), MODELS_DIR (models).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
preset="${PRESET:-super}"
duration="${DURATION:-600}"
out="${OUT:-docs}"
port="${PORT:-8080}"
models_dir="${MODELS_DIR:-models}"
case "$preset" in
  super) latent="$models_dir/super-shape-64x1"; standard="$models_dir/super-standard-64x1" ;;
  tiny) latent="$models_dir/tiny-8x1"; standard="$models_dir/tiny-standard-8x1" ;;
  *) echo "bench/chaos.sh: PRESET must be super or tiny" >&2; exit 2 ;;
esac

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build aspire/MoECluster.AppHost -c Release -v quiet -nologo >&2
apphost="aspire/MoECluster.AppHost/bin/Release/net10.0/MoECluster.AppHost.dll"
cli="src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll"
mkdir -p "$out"
log="$(mktemp "${TMPDIR:-/tmp}/chaos-launcher-XXXXXX.log")"   # the silos' output, prefixed by the launcher; kept

dotnet "$apphost" --preset "$preset" --port "$port" --silo-port "${SILO_PORT:-11111}" --gateway-port "${GATEWAY_PORT:-30000}" \
  --models-dir "$models_dir" > "$log" 2>&1 &
launcher=$!
# shellcheck disable=SC2317  # invoked by the EXIT trap
stop() {
  if kill -0 "$launcher" 2>/dev/null; then
    kill -TERM "$launcher" 2>/dev/null || true
    wait "$launcher" 2>/dev/null || true
  fi
}
trap stop EXIT

echo "waiting for the launcher (pid $launcher, log $log)" >&2
for _ in $(seq 1 1200); do
  if grep -q "gateway ready" "$log" && curl -fs "http://127.0.0.1:$port/health" | grep -q '"status":"ok"'; then break; fi
  if ! kill -0 "$launcher" 2>/dev/null; then echo "the launcher exited:" >&2; tail -30 "$log" >&2; exit 1; fi
  sleep 1
done
curl -fs "http://127.0.0.1:$port/health" | grep -q '"status":"ok"' || { echo "the cluster did not get ready in 20 minutes" >&2; tail -30 "$log" >&2; exit 1; }

set +e
dotnet "$cli" chaos --url "http://127.0.0.1:$port" \
  --model "latent=$latent" --model "standard=$standard" --duration "$duration" \
  --concurrency "${CONCURRENCY:-4}" --fault-interval "${FAULT_INTERVAL:-30}" --hang "${HANG:-5,30}" --seed "${SEED:-1}" \
  --wire "${WIRE:-bf16}" --json "$out/chaos-$preset-${duration}s.json" --markdown "$out/chaos-$preset-${duration}s.md"
status=$?
set -e
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
exit "$status"
