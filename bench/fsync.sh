#!/usr/bin/env bash
# Journal benchmark (issue 4): fsync latency (median, p99) of a 4 KiB write, and small-file
# create throughput with group commit (commit=5) and with an fsync per file, on o2fs, on
# bindfs over a plain directory, and on that plain directory, side by side on one disk.
#   bash bench/fsync.sh            (after scripts/setup.sh; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /var/tmp/o2fs-fsync-bench.XXXXXX)
o2mnt=$work/o2fs; bindmnt=$work/bindfs; plain=$work/plain
mkdir -p "$o2mnt" "$bindmnt" "$plain"
cleanup() {
  grep -qs " $o2mnt " /proc/mounts && o2fs umount "$o2mnt" || true
  grep -qs " $bindmnt " /proc/mounts && umount "$bindmnt" || true
  rm -rf "$work"
}
trap cleanup EXIT
mkfs.o2fs -q --size 2G "$work/vol.img"
o2fs mount -o commit=5 "$work/vol.img" "$o2mnt"
bindfs "$plain" "$bindmnt"
o2=$(python3 bench/fsync.py "$o2mnt" o2fs)
bf=$(python3 bench/fsync.py "$bindmnt" bindfs)
pl=$(python3 bench/fsync.py "$plain" plain)
python3 - "$o2" "$bf" "$pl" <<'PY'
import json, sys
o2, bf, pl = (json.loads(a) for a in sys.argv[1:])
rows = [('fsync latency median (ms)', 'fsync_ms_median', True), ('fsync latency p99 (ms)', 'fsync_ms_p99', True),
        ('creates/s, group commit', 'creates_per_s_group_commit', False), ('creates/s, fsync each', 'creates_per_s_fsync_each', False)]
print('%-28s %10s %10s %10s %12s %12s' % ('', 'o2fs', 'bindfs', 'plain', 'o2fs/bindfs', 'o2fs/plain'))
for name, key, _ in rows:
    print('%-28s %10s %10s %10s %12.2f %12.2f' % (name, o2[key], bf[key], pl[key], o2[key] / bf[key], o2[key] / pl[key]))
print('(latency: lower is better, so a ratio above 1 means o2fs is slower; throughput: higher is better)')
PY
