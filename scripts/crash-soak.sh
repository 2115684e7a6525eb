#!/usr/bin/env bash
# Crash-consistency soak: many more seeded power cuts than CI runs.
#   bash scripts/crash-soak.sh [SEEDS] [FIRST_SEED]
# A failing seed is printed in the TAP output; replay it with
#   O2FS_CRASH_FIRST_SEED=N O2FS_CRASH_SEEDS=1 npx tap dist/test/fs/crash.test.js
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
O2FS_CRASH_SEEDS=${1:-500} O2FS_CRASH_FIRST_SEED=${2:-1000} npx tap --reporter=tap --timeout=7200 dist/test/fs/crash.test.js | grep -E 'not ok|# seed|# \{'
