#!/usr/bin/env bash
# What the tests need besides the .NET SDK, installed when missing (Debian's packages, apt-get, as root or with
# passwordless sudo): Debian's /usr/bin/python3 with numpy (the end-to-end tests check `moecluster forward` against
# tests/tools/independent_moe.py), headless Chromium (/usr/bin/chromium, driven by Microsoft.Playwright: the live page),
# the shellcheck linter (deploy/ scripts), redis-server (Orleans' Redis clustering) and prometheus (a real scrape of
# every silo's /metrics). The README's test command runs this before
# each test project (tests/Directory.Build.targets) and .ci/run runs it first; with everything present it only checks.
# MOECLUSTER_SKIP_TEST_DEPS=1 skips it (then the tests that need a missing package fail and say which).
set -euo pipefail

missing() {
  local need=()
  /usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  [ -x /usr/bin/prometheus ] || need+=(prometheus)
  echo "${need[@]}"
}

read -r -a need <<< "$(missing)"
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install-test-deps: the tests need these Debian packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: no apt-get here; the tests need: ${need[*]} (Debian package names)" >&2
  exit 1
fi

# One installer at a time (test projects may run in parallel); whoever waited checks again.
exec 9> "${TMPDIR:-/tmp}/moecluster-test-deps.lock"
flock 9
read -r -a need <<< "$(missing)"
[ ${#need[@]} -eq 0 ] && exit 0
echo "install-test-deps: installing ${need[*]} (apt-get) ..."
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
read -r -a still <<< "$(missing)"
if [ ${#still[@]} -gt 0 ]; then
  echo "install-test-deps: still missing after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "install-test-deps: installed ${need[*]}"
