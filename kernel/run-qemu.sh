#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build Debian's linux-source-6.1 with the patches in kernel/patches/, boot it
# under QEMU with 4 vCPUs and an initramfs made of busybox, the membarrier
# selftests and optional extra static test binaries, and report the result.
#
# Usage: kernel/run-qemu.sh [options] [EXTRA_TEST...]
#   --unpatched     also build and boot the unpatched kernel; there the new
#                   tests must SKIP (exit 4/77), which counts as success
#   --debug         add PREEMPT, PROVE_LOCKING (lockdep), DEBUG_ATOMIC_SLEEP
#   --no-install    do not apt-get install the build/boot dependencies
#   --rebuild       ignore the build cache
#   -h, --help      this text
# Extra test binaries (statically linked; TAP output and/or exit code 0 = pass,
# 77 or 4 = skip, anything else = fail) come from the arguments and from the
# EXTRA_TESTS environment variable (space separated paths).
#
# Environment:
#   KBUILD_DIR     build/cache directory (default /tmp/libipimask-kbuild)
#   ACCEL          tcg (default, -accel tcg,thread=multi) or kvm
#   QEMU_TIMEOUT   seconds before the guest is killed (default 900)
#   QEMU_SMP       vCPUs (default 4)
#   KCMDLINE_EXTRA extra kernel command line
#   GUEST_TEST_TIMEOUT  seconds one test may run in the guest (default 600)
#   UNPATCHED=1    same as --unpatched;  KDEBUG=1 same as --debug
#   JOBS           make -j (default: nproc)
#
# Exit status: 0 if every test passed or skipped, 1 on any failure.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PATCH_DIR=$HERE/patches
CONFIG_DIR=$HERE/config
KBUILD_DIR=${KBUILD_DIR:-/tmp/libipimask-kbuild}
ACCEL=${ACCEL:-tcg}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-900}
QEMU_SMP=${QEMU_SMP:-4}
KCMDLINE_EXTRA=${KCMDLINE_EXTRA:-}
GUEST_TEST_TIMEOUT=${GUEST_TEST_TIMEOUT:-600}
UNPATCHED=${UNPATCHED:-0}
KDEBUG=${KDEBUG:-0}
INSTALL=1
REBUILD=0
JOBS=${JOBS:-$(nproc)}
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
read -r -a EXTRA <<< "${EXTRA_TESTS:-}"

usage() { sed -n '3,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case $1 in
	--unpatched) UNPATCHED=1 ;;
	--debug) KDEBUG=1 ;;
	--no-install) INSTALL=0 ;;
	--rebuild) REBUILD=1 ;;
	-h|--help) usage; exit 0 ;;
	-*) echo "run-qemu.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) EXTRA+=("$1") ;;
	esac
	shift
done

log() { printf '[run-qemu %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

declare -A SEEN=()
for t in "${EXTRA[@]}"; do
	[ -f "$t" ] && [ -x "$t" ] || die "extra test $t is not an executable file"
	[ -z "${SEEN[$(basename "$t")]:-}" ] || die "two extra tests named $(basename "$t")"
	SEEN[$(basename "$t")]=1
done

# ---------------------------------------------------------------------------
# Dependencies
PKGS="linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev
cpio xz-utils busybox-static qemu-system-x86 patch libc6-dev-i386
lib32gcc-12-dev"
# (libc6-dev-i386 + lib32gcc-12-dev give `gcc -m32`, without the gcc-multilib
# metapackage, which conflicts with Debian's cross compilers.)

install_deps() {
	local missing=()
	for p in $PKGS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "missing packages (need root): ${missing[*]}"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------
# Kernel build, cached by a hash of everything that goes into it

series() {
	# Patches in order; the cover letter (0000) carries no diff.
	find "$PATCH_DIR" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' \
		! -name '0000-*' | sort
}

build_key() { # $1 = patched|unpatched
	{
		echo "variant=$1 debug=$KDEBUG"
		dpkg-query -W -f='${Version}\n' linux-source-6.1
		cat "$CONFIG_DIR/base.config"
		[ "$KDEBUG" = 1 ] && cat "$CONFIG_DIR/debug.config"
		[ "$1" = patched ] && series | xargs cat
		sed -n '/^# BUILD-RECIPE-BEGIN/,/^# BUILD-RECIPE-END/p' "$0"
	} | sha256sum | cut -c1-16
}

REQUIRED_CONFIG="64BIT SMP MEMBARRIER RSEQ FUTEX PROC_FS SYSFS DEVTMPFS
DEVTMPFS_MOUNT BLK_DEV_INITRD RD_GZIP TTY SERIAL_8250_CONSOLE PRINTK BINFMT_ELF
BINFMT_SCRIPT ACPI NO_HZ_FULL IA32_EMULATION COMPAT_32BIT_TIME"
REQUIRED_DEBUG_CONFIG="PREEMPT PROVE_LOCKING DEBUG_ATOMIC_SLEEP"

# BUILD-RECIPE-BEGIN (part of the cache key)
build_kernel() { # $1 = variant, $2 = dir
	local variant=$1 dir=$2 src=$2/src p
	rm -rf "$dir"
	mkdir -p "$src"
	log "[$variant] extracting $SRC_TARBALL"
	tar -xJf "$SRC_TARBALL" -C "$src" --strip-components=1
	if [ "$variant" = patched ]; then
		for p in $(series); do
			log "[$variant] applying $(basename "$p")"
			patch -d "$src" -p1 --batch --forward -s < "$p" ||
				die "$p does not apply"
		done
	fi
	log "[$variant] configuring (tinyconfig + kernel/config/*.config)"
	(
		cd "$src"
		make -s tinyconfig
		local frags=("$CONFIG_DIR/base.config")
		[ "$KDEBUG" = 1 ] && frags+=("$CONFIG_DIR/debug.config")
		scripts/kconfig/merge_config.sh -m .config "${frags[@]}" >/dev/null
		make -s olddefconfig
	) > "$dir/config.log" 2>&1 || { tail -20 "$dir/config.log"; die "configure failed"; }
	local opts=$REQUIRED_CONFIG
	[ "$KDEBUG" = 1 ] && opts="$opts $REQUIRED_DEBUG_CONFIG"
	for p in $opts; do
		grep -q "^CONFIG_$p=y" "$src/.config" || die "CONFIG_$p not set in .config"
	done
	log "[$variant] building bzImage with -j$JOBS (log: $dir/build.log)"
	local t0=$SECONDS
	make -C "$src" -j"$JOBS" bzImage > "$dir/build.log" 2>&1 ||
		{ tail -40 "$dir/build.log"; die "kernel build failed"; }
	make -C "$src" -s headers_install INSTALL_HDR_PATH="$dir/hdr" >> "$dir/build.log" 2>&1 ||
		die "headers_install failed"
	log "[$variant] bzImage built in $((SECONDS - t0)) s"
	echo "$((SECONDS - t0))" > "$dir/build-seconds"
	touch "$dir/.built"
}
# BUILD-RECIPE-END

# Sets KDIR to a built tree for $1, building it if the cache misses.
ensure_kernel() {
	local variant=$1 key dir old
	key=$(build_key "$variant")
	local sfx=""
	[ "$KDEBUG" = 1 ] && sfx=-debug
	dir=$KBUILD_DIR/$variant$sfx-$key
	if [ "$REBUILD" = 0 ] && [ -e "$dir/.built" ] &&
	   [ -e "$dir/src/arch/x86/boot/bzImage" ]; then
		log "[$variant] cache hit: $dir (built in $(cat "$dir/build-seconds" 2>/dev/null || echo '?') s)"
	else
		# Drop stale builds of the same variant to bound disk use.
		for old in "$KBUILD_DIR/$variant$sfx"-*; do
			[ -e "$old" ] && [ "$old" != "$dir" ] || continue
			# "patched-*" must not catch "patched-debug-*".
			if [ -z "$sfx" ]; then
				case ${old##*/} in "$variant"-debug-*) continue ;; esac
			fi
			rm -rf "$old"
		done
		build_kernel "$variant" "$dir"
	fi
	KDIR=$dir
}

# ---------------------------------------------------------------------------
# Tests and initramfs

build_selftests() { # $1 = patched tree dir, $2 = output dir
	local dir=$1 out=$2 st=$1/src/tools/testing/selftests t
	mkdir -p "$out"
	for t in membarrier_test_single_thread membarrier_test_multi_thread \
		 membarrier_test_cpumask; do
		[ -f "$st/membarrier/$t.c" ] || die "$st/membarrier/$t.c missing"
		gcc -static -O2 -g -Wall -pthread -isystem "$dir/hdr/include" \
			-o "$out/$t" "$st/membarrier/$t.c" ||
			die "cannot build selftest $t"
	done
	# 32-bit build of the new test, run through the compat syscall path
	# (CONFIG_IA32_EMULATION): exercises compat_get_bitmap().
	rm -f "$out/membarrier_test_cpumask_32"
	gcc -m32 -static -O2 -g -Wall -pthread -isystem "$dir/hdr/include" \
		-o "$out/membarrier_test_cpumask_32" \
		"$st/membarrier/membarrier_test_cpumask.c" ||
		log "WARNING: no 32-bit (compat) selftest: gcc -m32 -static failed (libc6-dev-i386?)"
}

make_initramfs() { # $1 = output file, $2 = selftests dir, $3 = end marker
	local out=$1 tests=$2 marker=$3 root t
	root=$(mktemp -d)
	mkdir -p "$root"/{bin,dev,proc,sys,tmp,tests/selftests,tests/extra}
	cp /bin/busybox "$root/bin/busybox"
	cp "$tests"/* "$root/tests/selftests/"
	for t in "${EXTRA[@]}"; do
		cp "$t" "$root/tests/extra/"
	done
	cat > "$root/init" <<EOF
#!/bin/busybox sh
# Generated by kernel/run-qemu.sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
exec > /dev/console 2>&1
echo "IPIMASK-GUEST kernel \$(uname -r) online CPUs \$(nproc)"
# Tests write straight to the console (a tty, so their stdio is line
# buffered and nothing is lost if one dies); the host judges each one from
# its exit code and the TAP lines between its BEGIN and EXIT lines.
for t in /tests/selftests/* /tests/extra/*; do
	[ -x "\$t" ] || continue
	echo "IPIMASK-BEGIN \${t#/tests/}"
	timeout $GUEST_TEST_TIMEOUT "\$t" < /dev/null
	echo "IPIMASK-EXIT \${t#/tests/} rc=\$?"
done
echo "$marker"
sync
poweroff -f
EOF
	chmod +x "$root/init"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out"
	rm -rf "$root"
}

# ---------------------------------------------------------------------------
# Boot and judge

boot() { # $1 = variant, $2 = kernel dir, $3 = selftests dir; sets BOOT_OK
	local variant=$1 dir=$2 tests=$3 marker log initrd accel t0 rc
	marker="IPIMASK-END-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
	initrd=$dir/initramfs.cpio.gz
	log=$dir/console-$(date -u +%Y%m%dT%H%M%S).log
	make_initramfs "$initrd" "$tests" "$marker"
	case $ACCEL in
	kvm) accel=(-accel kvm -cpu host) ;;
	tcg) accel=(-accel tcg,thread=multi) ;;
	*) die "ACCEL must be tcg or kvm" ;;
	esac
	log "[$variant] booting: -smp $QEMU_SMP -m 512M ${accel[*]} (timeout ${QEMU_TIMEOUT}s, console: $log)"
	t0=$SECONDS
	rc=0
	timeout --foreground -k 10 "$QEMU_TIMEOUT" \
		qemu-system-x86_64 -kernel "$dir/src/arch/x86/boot/bzImage" \
		-initrd "$initrd" -smp "$QEMU_SMP" -m 512M -nographic -no-reboot \
		"${accel[@]}" \
		-append "console=ttyS0 panic=-1 loglevel=4 no_timer_check $KCMDLINE_EXTRA" \
		< /dev/null 2>&1 | sed -u 's/\r$//' | tee "$log" || rc=$?
	log "[$variant] guest finished in $((SECONDS - t0)) s"
	BOOT_OK=1
	if ! grep -qx "$marker" "$log"; then
		log "[$variant] FAIL: end marker not seen (timeout, panic or crash)"
		BOOT_OK=0
	fi
	if grep -Eq 'Call Trace:|BUG:|WARNING:|possible recursive locking|circular locking|Kernel panic' "$log"; then
		log "[$variant] FAIL: kernel warning/oops in the console log"
		BOOT_OK=0
	fi
	judge "$log" > "$log.results"
	sed "s/^/[$variant] /" "$log.results"
	if grep -q '^IPIMASK-RESULT .* fail ' "$log.results"; then
		BOOT_OK=0
	fi
	for t in membarrier_test_cpumask membarrier_test_cpumask_32; do
		[ -e "$tests/$t" ] || continue
		if [ "$variant" = unpatched ] &&
		   ! grep -q "^IPIMASK-RESULT selftests/$t skip " "$log.results"; then
			log "[$variant] FAIL: $t did not SKIP on the unpatched kernel"
			BOOT_OK=0
		fi
		if [ "$variant" = patched ] &&
		   ! grep -q "^IPIMASK-RESULT selftests/$t pass " "$log.results"; then
			log "[$variant] FAIL: $t did not pass on the patched kernel"
			BOOT_OK=0
		fi
	done
}

# Per-test verdicts from a console log: exit code 0 = pass, 4 (kselftest)
# or 77 (automake) = skip, anything else = fail; a "not ok" TAP line (other
# than a TODO) fails the test whatever its exit code.
judge() {
	awk '
	/^IPIMASK-BEGIN / { name = $2; notok = 0; next }
	name != "" && /^not ok/ && !/# *TODO/ { notok++ }
	/^IPIMASK-EXIT / {
		rc = $3; sub(/^rc=/, "", rc)
		res = (notok || (rc != 0 && rc != 4 && rc != 77)) ? "fail" : \
		      (rc == 0 ? "pass" : "skip")
		n[res]++
		printf "IPIMASK-RESULT %s %s rc=%s%s\n", $2, res, rc, \
		       notok ? " (" notok " not ok)" : ""
		name = ""
	}
	END { printf "IPIMASK-SUMMARY pass=%d fail=%d skip=%d\n", \
		     n["pass"], n["fail"], n["skip"] }' "$1"
}

# ---------------------------------------------------------------------------

install_deps
[ -f "$SRC_TARBALL" ] || die "$SRC_TARBALL missing (apt-get install linux-source-6.1)"
[ -n "$(series)" ] || die "no patches in $PATCH_DIR"
mkdir -p "$KBUILD_DIR"

status=0
ensure_kernel patched
PATCHED_DIR=$KDIR
SELFTESTS=$PATCHED_DIR/selftests-bin
build_selftests "$PATCHED_DIR" "$SELFTESTS"
boot patched "$PATCHED_DIR" "$SELFTESTS"
[ "$BOOT_OK" = 1 ] || status=1

if [ "$UNPATCHED" = 1 ]; then
	ensure_kernel unpatched
	boot unpatched "$KDIR" "$SELFTESTS"
	[ "$BOOT_OK" = 1 ] || status=1
fi

if [ $status = 0 ]; then
	log "RESULT: PASS"
else
	log "RESULT: FAIL"
fi
exit $status
