#!/bin/bash
# check-symbols.sh LIB SYMFILE: the library exports exactly the ipm_* names
# of the version script, nothing else (no leaked helpers).
set -eu
lib=$1 sym=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRW]/ {print $3}' | sed 's/@.*//' | sort -u)
listed=$(sed -n 's/^[[:space:]]*\(ipm_[a-z0-9_]*\);.*/\1/p' "$sym" | sort -u)
bad=$(printf '%s\n' "$exported" | grep -v '^ipm_' || true)
if [ -n "$bad" ]; then
	echo "symbols without the ipm_ prefix leak: $bad"
	exit 1
fi
if [ "$exported" != "$listed" ]; then
	echo "exported and version script differ:"
	diff <(printf '%s\n' "$exported") <(printf '%s\n' "$listed") || true
	exit 1
fi
echo "$(printf '%s\n' "$exported" | wc -l) symbols, all ipm_*, all versioned"
