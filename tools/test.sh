#!/usr/bin/env bash
# test.sh: the whole test suite, from a fresh Debian 12 machine (as root:
# installs what is missing).  In order:
#   1. unit tests (Check, fork mode), the same suite with membarrier denied
#      by seccomp (ENOSYS and EPERM), and the examples;
#   2. the same under valgrind memcheck (meson test --setup valgrind);
#   3. an ASan + UBSan build, all tests but the timing-bound ones;
#   4. install to a staging directory; build and run every examples/*.c
#      through pkg-config, and a consumer project using libipimask as a Meson
#      subproject;
#   5. a cross build for aarch64 (library, tests and examples).
# BUILD_DIR (default build-test) holds the build trees.  IPM_NO_INSTALL=1
# skips the package check, IPM_NO_CROSS=1 the aarch64 build (developers'
# shortcuts; CI sets neither).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
if [[ -z ${IPM_NO_INSTALL:-} ]]; then
	if [[ -z ${IPM_NO_CROSS:-} ]]; then tools/deps.sh --cross; else tools/deps.sh; fi
fi

B=${BUILD_DIR:-build-test}
setup() { # dir, options...
	local d=$1
	shift
	if [[ -f $d/build.ninja ]]; then
		meson setup --reconfigure "$d" "$@" >/dev/null
	else
		meson setup "$d" "$@" >/dev/null
	fi
	ninja -C "$d"
}

echo "== 1. unit, fallback and example tests"
setup "$B"
meson test -C "$B" --print-errorlogs

echo "== 2. valgrind"
meson test -C "$B" --setup valgrind --print-errorlogs

echo "== 3. ASan + UBSan"
setup "$B-asan" -Db_sanitize=address,undefined -Db_lundef=false
# GCC 12's ASan allocator is not fork-safe (no pthread_atfork handlers):
# the test that forks while other threads allocate is left out here (it
# runs natively and under valgrind; see tests/test_fork.c).
ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
CK_EXCLUDE_TAGS=fork_with_allocating_threads \
	meson test -C "$B-asan" --no-suite timing --print-errorlogs

echo "== 4. installed library: pkg-config and Meson subproject"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$B" --destdir "$stage" --quiet
pcdir=$(dirname "$(find "$stage" -name ipimask.pc | head -n 1)")
export PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$stage
libdir=$(dirname "$(find "$stage" -name 'libipimask.so.0' | head -n 1)")
# every single-file example, built like a user's program and run
for ex in examples/*.c; do
	name=$(basename "$ex" .c)
	cc -std=gnu11 -Wall -Wextra -Werror "$ex" $(pkg-config --cflags --libs ipimask) -pthread \
		-o "$stage/$name"
	echo "-- $name (pkg-config build)"
	LD_LIBRARY_PATH=$libdir "$stage/$name" >"$stage/$name.log" 2>&1 ||
		{ cat "$stage/$name.log"; echo "$name failed"; exit 1; }
	tail -n 1 "$stage/$name.log"
done
# the DPDK EAL example, when libdpdk-dev is installed (no hugepages, no NIC)
if pkg-config --exists libdpdk; then
	# (libdpdk is the system's: no staging sysroot for it)
	cc -std=gnu11 -Wall -Wextra -Werror examples/dpdk/dpdk_lcores.c \
		$(pkg-config --cflags --libs ipimask) \
		$(PKG_CONFIG_SYSROOT_DIR= pkg-config --cflags --libs libdpdk) -pthread \
		-o "$stage/dpdk_lcores"
	echo "-- dpdk_lcores (pkg-config build)"
	LD_LIBRARY_PATH=$libdir "$stage/dpdk_lcores" --no-huge -m 256 --no-pci --no-shconf \
		--no-telemetry --vdev=net_null0 --lcores=0@0,1@1,2@1 --log-level=lib.eal:error \
		-- --seconds 1 >"$stage/dpdk_lcores.log" 2>&1 ||
		{ cat "$stage/dpdk_lcores.log"; echo "dpdk_lcores failed"; exit 1; }
	tail -n 1 "$stage/dpdk_lcores.log"
fi
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
mkdir -p "$stage/consumer/subprojects"
cp tests/consumer/meson.build tests/consumer/main.c "$stage/consumer/"
ln -s "$src" "$stage/consumer/subprojects/libipimask"
meson setup "$stage/consumer/build" "$stage/consumer" -Dlibipimask:tests=false >/dev/null
ninja -C "$stage/consumer/build"
"$stage/consumer/build/consumer"

if [[ -z ${IPM_NO_CROSS:-} ]]; then
	echo "== 5. aarch64 cross build"
	setup "$B-aarch64" --cross-file cross/aarch64-linux-gnu.ini
	file -L "$B-aarch64/lib/libipimask.so.0" | grep -q 'ARM aarch64'
	echo "aarch64: $(file -L "$B-aarch64/lib/libipimask.so.0" | cut -d, -f1-2)"
fi

echo "test.sh: all passed"
