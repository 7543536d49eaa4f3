#!/usr/bin/env bash
# demo.sh [dpdk_style options, e.g. --plot docs]: build and run the main demo
# (examples/dpdk_style.c), from a fresh Debian 12 machine (as
# root: installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ " $* " != *" --plot "* ]] || export DEPS_PLOT=1	# gnuplot-nox renders the PNG
tools/deps.sh
B=${BUILD_DIR:-build}
[[ -f $B/build.ninja ]] || meson setup "$B" >/dev/null
ninja -C "$B" >/dev/null
exec "$B/examples/dpdk_style" "$@"
