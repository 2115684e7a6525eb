#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: install and build o2fs, make a
# file-backed volume, mount it locally, use it through the mount, unmount, check it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work=$(mktemp -d /tmp/o2fs-demo.XXXXXX)
mnt=$work/mnt
img=$work/vol.img
cleanup() {
  if grep -qs " $mnt " /proc/mounts; then o2fs umount "$mnt" || umount -l "$mnt" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt"

echo "== mkfs.o2fs -L demo --size 1G $img"
mkfs.o2fs -L demo --size 1G "$img"
echo "== mount -t fuse.o2fs $img $mnt"
mount -t fuse.o2fs "$img" "$mnt"
grep " $mnt " /proc/mounts

echo "== using it"
echo "hello from o2fs" > "$mnt/hello.txt"
mkdir "$mnt/data"
for i in $(seq 1 200); do head -c $((4096 * i)) /dev/urandom > "$mnt/data/file-$i"; done
dd if=/dev/urandom of="$work/big.src" bs=1M count=64 status=none
cp "$work/big.src" "$mnt/big.bin"
cmp "$work/big.src" "$mnt/big.bin" && echo "64 MiB file reads back identical"
ln -s hello.txt "$mnt/link"; cat "$mnt/link"
setfattr -n user.demo -v yes "$mnt/hello.txt"; getfattr -n user.demo "$mnt/hello.txt"
mv "$mnt/data" "$mnt/renamed"
ls -la "$mnt"
echo "$(ls "$mnt/renamed" | wc -l) files in renamed/"
df -h "$mnt"

echo "== umount"
o2fs umount "$mnt"
echo "== fsck.o2fs -n"
fsck.o2fs -n "$img"
echo "== debugfs.o2fs -R 'ls -l /'"
debugfs.o2fs "$img" -R "ls -l /"
echo "demo: ok"
