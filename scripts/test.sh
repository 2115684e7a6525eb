#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole test suite.
# The last line of output is "N passed, N failed" (counted over test cases).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

# Tests that are files under dist/test (compiled from test/), cluster tests included.
# Full checks of cached metadata images on every use (fs/volume.ts).
export O2FS_PARANOID=1

mapfile -t files < <(find dist/test -name '*.test.js' | sort)
log=$(mktemp /tmp/o2fs-test.XXXXXX)
npx tap --reporter=tap --jobs=2 "${files[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# tap ends with "# { total: T, pass: P, fail: F, skip: S, todo: D }" (keys omitted when 0).
summary=$(grep -E '^# \{ total: ' "$log" | tail -1)
num() { echo "$summary" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' || echo 0; }
pass=$(num pass); fail=$(num fail); skip=$(num skip)
if [ -z "$summary" ]; then fail=1; fi
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
rm -f "$log"
if [ "$skip" -gt 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" -eq 0 ]
