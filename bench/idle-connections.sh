#!/usr/bin/env bash
# The idle-connection flood at full size (docs/RELIABILITY.md, "Bounded resources"): the CI test
# BoundedResourcesTests.Idle_connections_... with 25,000 idle keep-alive connections (CONNECTIONS) against a front-end
# silo under this machine's default open-file limit of 20,000 (FRONTEND_NOFILE), so that the gateway's default
# MaxConnections (10,000) is the cap. The connections are opened by helper processes of at most 8,000 each
# (tests/tools/idle_connections.py), from 127.0.1.1, 127.0.1.2, ... (250 per address). Prints the test's measurements:
# connections served and refused, latency of normal requests during the flood. Needs the Release build and python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
MOECLUSTER_IDLE_CONNECTIONS="${CONNECTIONS:-25000}" MOECLUSTER_FRONTEND_NOFILE="${FRONTEND_NOFILE:-20000}" \
  dotnet test tests/MoECluster.EndToEnd.Tests/MoECluster.Cluster.Tests.csproj -c Release --no-build \
  --filter "FullyQualifiedName~BoundedResourcesTests.Idle_connections" --logger "console;verbosity=detailed" 2>&1 |
  grep -E "^ (flood:|normal requests during)|^  (Passed|Failed) |Error Message" -A1 || true
