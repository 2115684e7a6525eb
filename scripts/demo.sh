#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: install and build o2fs, make a
# file-backed volume, put files on it, and show that the volume is consistent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d /tmp/o2fs-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
img=$work/vol.img

echo "== mkfs.o2fs --size 1G $img"
mkfs.o2fs -q -L demo --size 1G "$img"
echo "== debugfs.o2fs -R stats"
debugfs.o2fs "$img" -R stats
node dist/tools/demo-fill.js "$img"
echo "== debugfs.o2fs -R 'ls -l /'"
debugfs.o2fs "$img" -R "ls -l /"
echo "== debugfs.o2fs -R 'cat /hello.txt'"
debugfs.o2fs "$img" -R "cat /hello.txt"
echo "== fsck.o2fs -n"
fsck.o2fs -n "$img"
echo "demo: ok"
