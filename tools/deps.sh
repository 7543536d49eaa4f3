#!/usr/bin/env bash
# deps.sh [--cross]: install the Debian 12 packages the build and the tests
# need, only those missing.  As root (or through sudo).  --cross adds the
# aarch64 cross compiler and arm64 multiarch -dev packages.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc g++ liburcu-dev libnuma-dev check valgrind binutils file systemtap-sdt-dev bpftrace
      libdpdk-dev)
# gnuplot-nox is optional (dpdk_style --plot renders a PNG with it): DEPS_PLOT=1
[[ -z ${DEPS_PLOT:-} ]] || pkgs+=(gnuplot-nox)
if [[ ${1:-} == --cross ]]; then
	pkgs+=(gcc-aarch64-linux-gnu liburcu-dev:arm64 libnuma-dev:arm64 check:arm64)
fi

SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo

if [[ ${1:-} == --cross ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
	$SUDO dpkg --add-architecture arm64
	updated=
else
	updated=1
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 || -z $updated ]]; then
	echo "deps.sh: installing ${missing[*]:-(arm64 package lists)}"
	$SUDO apt-get update -q
	# gcc-multilib (if present) conflicts with the cross compiler; apt
	# removes it.
	[[ ${#missing[@]} -eq 0 ]] ||
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
