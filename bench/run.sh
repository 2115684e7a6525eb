#!/usr/bin/env bash
# o2fs benchmark: o2fs against its peers, side by side, in one run, on the same disk.
#
#   bash bench/run.sh            (from the repository root, as root, after scripts/setup.sh)
#
# Targets, all under one temporary directory (so on one disk):
#   o2fs     a local mount (default options) of a file-backed volume made by mkfs.o2fs
#   bindfs   a FUSE passthrough of a plain directory (--multithreaded, -o big_writes):
#            the FUSE ceiling on this disk
#   plain    the directory itself: the physical limit
#   gluster  GlusterFS replica 2 over loopback (two bricks in the temp dir), only if the
#            gluster CLI and glusterd are installed; otherwise reported as skipped
#
# Workloads (DESIGN.md section 8), the page cache dropped (echo 3 > drop_caches) wherever a
# phase must start cold:
#   seq      fio, 1 MiB blocks: write BENCH_SEQ_MB (1024) with a final fsync, drop caches,
#            read it back
#   rand     fio, 4 KiB blocks, psync, one job: lay out a BENCH_RAND_MB (256) file, drop
#            caches, random reads for BENCH_RAND_SEC (15) s, then random writes for as long
#            (with a final fsync)
#   meta     bench/meta.py: create, stat, unlink BENCH_META_FILES (10000) empty files in one
#            directory, then spread over 100 directories; caches dropped before each phase
#   dbench   Debian's dbench, BENCH_DBENCH_CLIENTS (2) clients for BENCH_DBENCH_SEC (20) s
#
# Rounds: every workload runs BENCH_ROUNDS (3) times on every target, the targets in a
# rotated order each round (o2fs first, then second, ...): on this VM the first filesystem
# to run after a cache drop paid for memory the others then reused (one-round runs put o2fs's
# sequential write at 0.30x bindfs, interleaved repeats at 0.8-1.2x), so one round's order
# must not decide a ratio. The table shows medians; every round's figure is printed too.
#
# Prints one table: every figure (higher is better), the ratios o2fs/bindfs and o2fs/plain,
# and the targets (sequential >= 0.8x bindfs, metadata >= 0.5x bindfs). Also writes
# bench/results/latest.json (git-ignored). A full run takes about 20-30 minutes (3 rounds). Mounts and
# temporary files are removed on exit, also on Ctrl-C. BENCH_ONLY="seq meta" runs a subset;
# BENCH_TMPDIR picks the parent of the temporary directory (default $TMPDIR or /tmp).
# Not part of the test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SEQ_MB=${BENCH_SEQ_MB:-1024}
RAND_MB=${BENCH_RAND_MB:-256}
RAND_SEC=${BENCH_RAND_SEC:-15}
META_FILES=${BENCH_META_FILES:-10000}
DBENCH_SEC=${BENCH_DBENCH_SEC:-20}
DBENCH_CLIENTS=${BENCH_DBENCH_CLIENTS:-2}
ONLY=${BENCH_ONLY:-seq rand meta dbench}
ROUNDS=${BENCH_ROUNDS:-3}
VOLUME_SIZE=${BENCH_VOLUME_SIZE:-4G}
TIMEOUT_S=600 # per command: nothing here should take that long

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (FUSE mounts, drop_caches)"
for c in fio bindfs dbench python3 mkfs.o2fs o2fs fusermount3 jq; do
  command -v "$c" >/dev/null || die "$c not found: run scripts/setup.sh first"
done
[ -w /proc/sys/vm/drop_caches ] || die "cannot write /proc/sys/vm/drop_caches"

T=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/o2fs-bench.XXXXXX") || die "mktemp failed"
RESULTS=$T/results.tsv
: >"$RESULTS"
O2_IMG=$T/o2fs.img
O2_MNT=$T/o2fs
BIND_SRC=$T/bindfs-src
BIND_MNT=$T/bindfs
PLAIN=$T/plain
GL_MNT=$T/gluster
GL_VOL=o2fsbench$$
GL_STARTED=0
GL_STATUS=skipped-not-installed
GLUSTERD_PID=

is_mounted() { grep -q " $1 " /proc/mounts; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  log "cleaning up $T"
  if is_mounted "$O2_MNT"; then o2fs umount "$O2_MNT" || umount -l "$O2_MNT"; fi
  if is_mounted "$BIND_MNT"; then fusermount3 -u "$BIND_MNT" 2>/dev/null || umount -l "$BIND_MNT"; fi
  if is_mounted "$GL_MNT"; then umount "$GL_MNT" || umount -l "$GL_MNT"; fi
  if [ "$GL_STARTED" = 1 ]; then
    gluster --mode=script volume stop "$GL_VOL" force >/dev/null 2>&1
    gluster --mode=script volume delete "$GL_VOL" >/dev/null 2>&1
  fi
  # Only a glusterd this script started, by its pid.
  if [ -n "$GLUSTERD_PID" ]; then kill "$GLUSTERD_PID" 2>/dev/null; fi
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }
# Runs a command with the per-command time limit; its stdout is the result.
limited() { timeout --kill-after=10 "$TIMEOUT_S" "$@"; }

# --- targets ----------------------------------------------------------------------------------

TARGETS=(o2fs bindfs plain)
declare -A DIR

log "temporary directory $T ($(df -T "$T" | awk 'NR==2 {print $1, $2}'))"
mkfs.o2fs -q --size "$VOLUME_SIZE" "$O2_IMG" || die "mkfs.o2fs failed"
mkdir -p "$O2_MNT" "$BIND_SRC" "$BIND_MNT" "$PLAIN"
o2fs mount "$O2_IMG" "$O2_MNT" || die "o2fs mount failed"
DIR[o2fs]=$O2_MNT
# libfuse 2 (bindfs) writes in 4 KiB pieces unless big_writes; o2fs takes up to 1 MiB.
bindfs --multithreaded -o big_writes "$BIND_SRC" "$BIND_MNT" || die "bindfs failed"
DIR[bindfs]=$BIND_MNT
DIR[plain]=$PLAIN

# Untested here (no GlusterFS on the reference machine): a best effort that skips on failure.
if command -v gluster >/dev/null && command -v glusterd >/dev/null; then
  if ! pgrep -x glusterd >/dev/null; then
    glusterd -p "$T/glusterd.pid" && sleep 2 && GLUSTERD_PID=$(cat "$T/glusterd.pid" 2>/dev/null)
  fi
  mkdir -p "$T/brick1" "$T/brick2" "$GL_MNT"
  if gluster --mode=script volume create "$GL_VOL" replica 2 "127.0.0.1:$T/brick1" "127.0.0.1:$T/brick2" force >/dev/null &&
    GL_STARTED=1 && gluster --mode=script volume start "$GL_VOL" >/dev/null &&
    mount -t glusterfs "127.0.0.1:/$GL_VOL" "$GL_MNT"; then
    TARGETS+=(gluster)
    DIR[gluster]=$GL_MNT
    GL_STATUS=replica-2-loopback
  else
    GL_STATUS=skipped-setup-failed
    log "GlusterFS: could not set up a replica-2 volume on loopback; skipped"
  fi
else
  log "GlusterFS: gluster is not installed; skipped"
fi
log "targets: ${TARGETS[*]}; workloads: $ONLY"

# --- workloads --------------------------------------------------------------------------------

fio_json() { limited fio --output-format=json --direct=0 --ioengine=psync "$@"; }
fio_field() { jq -r "$1" 2>/dev/null || echo ""; }

bench_seq() {
  local t=$1 d=$2 out
  out=$(fio_json --directory="$d" --name=seq --rw=write --bs=1M --size="${SEQ_MB}M" --end_fsync=1)
  record "$t" seq_write_MBps "$(echo "$out" | fio_field '.jobs[0].write.bw_bytes / 1e6')"
  drop_caches
  out=$(fio_json --directory="$d" --name=seq --rw=read --bs=1M --size="${SEQ_MB}M")
  record "$t" seq_read_MBps "$(echo "$out" | fio_field '.jobs[0].read.bw_bytes / 1e6')"
  rm -f "$d"/seq.*
}

bench_rand() {
  local t=$1 d=$2 out
  fio_json --directory="$d" --name=rand --rw=write --bs=1M --size="${RAND_MB}M" --end_fsync=1 >/dev/null
  drop_caches
  out=$(fio_json --directory="$d" --name=rand --rw=randread --bs=4k --size="${RAND_MB}M" --runtime="$RAND_SEC" --time_based)
  record "$t" rand_read_iops "$(echo "$out" | fio_field '.jobs[0].read.iops')"
  out=$(fio_json --directory="$d" --name=rand --rw=randwrite --bs=4k --size="${RAND_MB}M" --runtime="$RAND_SEC" --time_based --end_fsync=1)
  record "$t" rand_write_iops "$(echo "$out" | fio_field '.jobs[0].write.iops')"
  rm -f "$d"/rand.*
}

bench_meta() {
  local t=$1 d=$2 out dirs suffix
  for dirs in 1 100; do
    suffix=${dirs}dir
    out=$(limited python3 "$REPO/bench/meta.py" "$d" --files "$META_FILES" --dirs "$dirs" --drop-caches)
    for phase in create stat unlink; do
      record "$t" "${phase}_${suffix}_ops" "$(echo "$out" | fio_field ".${phase}_ops_per_s")"
    done
  done
}

bench_dbench() {
  local t=$1 d=$2 out
  mkdir -p "$d/dbench"
  out=$(limited dbench -t "$DBENCH_SEC" -D "$d/dbench" "$DBENCH_CLIENTS" 2>&1)
  record "$t" dbench_MBps "$(echo "$out" | awk '/^Throughput/ {print $2}' | tail -1)"
  rm -rf "$d/dbench"
}

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
started=$(date +%s)
for ((r = 0; r < ROUNDS; r++)); do
  # Round r starts with target r (mod the number of targets).
  order=("${TARGETS[@]:r % ${#TARGETS[@]}}" "${TARGETS[@]:0:r % ${#TARGETS[@]}}")
  for w in $ONLY; do
    for t in "${order[@]}"; do
      log "round $((r + 1))/$ROUNDS: $w on $t"
      drop_caches
      s=$(date +%s)
      "bench_$w" "$t" "${DIR[$t]}" || log "$w on $t failed"
      log "round $((r + 1))/$ROUNDS: $w on $t: $(($(date +%s) - s)) s"
    done
  done
done
log "all workloads: $(($(date +%s) - started)) s"
if is_mounted "$O2_MNT"; then
  o2fs umount "$O2_MNT" || log "o2fs umount failed"
  fsck.o2fs -n "$O2_IMG" >/dev/null && log "fsck.o2fs -n after the run: clean" || log "fsck.o2fs -n after the run: NOT clean"
fi

echo
python3 "$REPO/bench/report.py" "$RESULTS" "$REPO/bench/results/latest.json" \
  rounds="$ROUNDS" seq_mb="$SEQ_MB" rand_mb="$RAND_MB" rand_sec="$RAND_SEC" meta_files="$META_FILES" \
  dbench_sec="$DBENCH_SEC" dbench_clients="$DBENCH_CLIENTS" volume_size="$VOLUME_SIZE" \
  bindfs_options="--multithreaded -o big_writes" o2fs_options=defaults \
  gluster="$GL_STATUS"
