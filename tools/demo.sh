#!/usr/bin/env bash
# demo.sh: build and run the main demo, from a fresh Debian 12 machine (as
# root: installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
B=${BUILD_DIR:-build}
[[ -f $B/build.ninja ]] || meson setup "$B" >/dev/null
ninja -C "$B" >/dev/null
exec "$B/examples/hello" "$@"
