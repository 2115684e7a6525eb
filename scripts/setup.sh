#!/usr/bin/env bash
# Installs everything o2fs needs on a fresh Debian 12 machine (as root) and builds it.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: fuse3 (fusermount3, /dev/fuse helpers), attr (getfattr/setfattr for
# tests), fio (data verification and benchmarks), bindfs and dbench (benchmark peers),
# util-linux and iproute2 (mount, unshare, ip netns for the cluster harness); a C compiler,
# make and python3 for node-gyp (the native addons: fs/fuse/native, blockdev/native).
APT_PACKAGES=(fuse3 attr fio bindfs dbench util-linux iproute2 iptables procps build-essential python3)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# /dev/fuse must exist for mounts (containers sometimes lack the node).
if [ ! -e /dev/fuse ]; then
  mknod -m 0666 /dev/fuse c 10 229 || echo "setup: warning: could not create /dev/fuse" >&2
fi

if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund --loglevel=error
fi
npx tsc -p tsconfig.json
# Native addons, built against the installed Node's headers (no header download possible).
NODEDIR=$(dirname "$(dirname "$(command -v node)")")
[ -f "$NODEDIR/include/node/node_api.h" ] || NODEDIR=/usr
for addon in fs/fuse/native blockdev/native; do
  out=$addon/build/Release
  if [ ! -d "$out" ] || [ -n "$(find "$addon" -maxdepth 1 \( -name '*.c' -o -name binding.gyp \) -newer "$out")" ]; then
    (cd "$addon" && npx node-gyp rebuild --nodedir="$NODEDIR" --loglevel=error)
  fi
done
chmod +x dist/tools/*.js
# The tools on PATH, as an OCFS2 admin expects them (mkfs.o2fs, fsck.o2fs, ...).
for tool in mkfs fsck debugfs o2fs o2cb; do
  name=$tool.o2fs
  case $tool in o2fs | o2cb) name=$tool ;; esac
  ln -sf "$PWD/dist/tools/$tool.js" "/usr/local/sbin/$name"
done
# mount(8) runs /sbin/mount.fuse.o2fs for `mount -t fuse.o2fs` and fstab lines.
cat > /sbin/mount.fuse.o2fs <<HELPER
#!/bin/sh
# Installed by o2fs scripts/setup.sh: mount -t fuse.o2fs DEVICE MOUNTPOINT [-o OPTIONS]
exec /usr/local/sbin/o2fs mount "\$@"
HELPER
chmod 755 /sbin/mount.fuse.o2fs
echo "setup: done"
