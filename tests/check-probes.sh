#!/bin/bash
# check-probes.sh LIB HELLO: the USDT probes are in LIB, and (when bpftrace
# is installed and allowed to attach) the one-liner from lib/probes.h sees
# what examples/hello does: one signal, one queued poll, one remote run.
# Exit 77 (skipped) when bpftrace is absent or cannot attach.
set -euo pipefail
lib=$(readlink -f "$1") hello=$2
for p in send signal deliver complete escalate flush drain; do
	readelf -n "$lib" | grep -A3 stapsdt | grep -q "Name: $p\$" || { echo "probe $p missing"; exit 1; }
done
echo "probes present in $lib"
command -v bpftrace >/dev/null || { echo "bpftrace not installed: skipping the trace"; exit 77; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bpftrace -e "BEGIN { printf(\"ready\\n\"); }
usdt:$lib:libipimask:signal { @interrupts = count(); }
usdt:$lib:libipimask:send { @sends[arg1] = count(); }" >"$out" 2>&1 &
bt=$!
for _ in $(seq 300); do
	grep -q '^ready' "$out" && break
	kill -0 $bt 2>/dev/null || break
	sleep 0.1
done
if ! grep -q '^ready' "$out"; then
	cat "$out"
	kill $bt 2>/dev/null || true
	echo "bpftrace could not attach: skipping the trace"
	exit 77
fi
"$hello"
kill -INT $bt
wait $bt || true
cat "$out"
grep -q '^@interrupts: [1-9]' "$out"
grep -q '^@sends\[0\]: [1-9]' "$out"	# signal
grep -q '^@sends\[1\]: [1-9]' "$out"	# queued for a poll
grep -q '^@sends\[3\]: [1-9]' "$out"	# run remotely
echo "bpftrace saw the signal, the poll and the remote run"
