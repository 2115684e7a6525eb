#!/usr/bin/env bash
# Builds and runs the cluster bench (bench/cluster.ts; see its header for parts and env).
#   bash bench/cluster.sh      (from anywhere, as root, after scripts/setup.sh; ~1.5 min)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: must run as root (namespaces, FUSE, drop_caches)" >&2; exit 1; }
npx tsc -p .
exec node dist/bench/cluster.js "$@"
