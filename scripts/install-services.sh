#!/usr/bin/env bash
# Install the system packages the tests and `make run` use, when they are missing.
# Needs root (apt-get); says what to do otherwise.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# A real Prometheus for the operator's Prometheus metric source, and promtool for the chart's alert rules.
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
# Headless Chromium and its driver for the browser tests of the playground (tests/ui).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)

# One package may be listed twice above (prometheus ships promtool).
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk 'NF && !seen[$0]++')
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
