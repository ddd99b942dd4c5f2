#!/usr/bin/env bash
# Front-end memory under 40 concurrent 60 MiB request bodies (docs/RELIABILITY.md, "Bounded resources").
# Starts a front-end silo (tiny models, no expert silo: the bodies are refused after they are read, or before),
# once per GC setting given as arguments (environment assignments, "-" for none), sends the bodies with
# bench/gateway_bodies.py and prints one JSON line per run. Needs the Release build and python3.
#   bench/gateway-memory.sh - DOTNET_gcServer=1 DOTNET_GCConserveMemory=7 DOTNET_GCHeapHardLimit=0x40000000
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cli="$root/src/MoECluster.Cli/bin/Release/net10.0/moecluster.dll"
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
dotnet "$cli" init-model --preset tiny --out "$work/lat" --experts 16 >/dev/null
dotnet "$cli" init-model --preset tiny-standard --out "$work/std" --experts 16 --seed 2 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
silo=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[ $# -gt 0 ] || set -- -
for setting in "$@"; do
  env_args=()
  [ "$setting" != "-" ] && env_args=("$setting")
  env "${env_args[@]}" dotnet "$cli" silo --role frontend --silo-port "$silo" --gateway-port 0 --urls "http://127.0.0.1:$port" \
    --model "lat=$work/lat" --model "std=$work/std" >"$work/frontend.log" 2>&1 &
  pid=$!
  for _ in $(seq 120); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/alive" && break
    sleep 0.5
  done
  printf '{"setting": "%s", ' "$setting"
  python3 "$root/bench/gateway_bodies.py" "$port" "$pid" "${BODIES:-40}" "${MIB:-60}" | sed 's/^{//'
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
done
