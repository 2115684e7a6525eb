// fio (Debian's) against an o2fs mount, every job with --verify=crc32c: fio writes blocks
// that carry their own offset, a header and a checksum, then reads them back and checks
// each one, so a block written to the wrong place, lost, torn or stale is caught. Proves:
//   - sequential 1 MiB writes, random 4 KiB writes (two jobs at once, several files in
//     parallel) and writes through a shared mmap read back exactly, through the page cache
//     (--direct=0);
//   - the same data reads back after an unmount and a fresh mount (fio --verify_only, which
//     replays the same offsets and patterns without writing);
//   - the volume is clean afterwards (fsck.o2fs -n exits 0).
import t, { Test } from 'tap';
import { fsckClean, mountExisting, mountFresh, run, tempDir } from './harness';

const FIO_TIMEOUT_MS = 120_000;
const VOLUME_BYTES = 512 << 20;
const MIB = 1 << 20;

interface JobSpec {
  name: string;
  args: string[];
  /** Bytes each process of the job writes. */
  sizeBytes: number;
  numjobs: number;
}

// Sized so the whole test takes well under a minute on a slow CI machine.
const JOBS: JobSpec[] = [
  { name: 'seq-write-1m', args: ['--rw=write', '--bs=1M', '--end_fsync=1'], sizeBytes: 96 * MIB, numjobs: 1 },
  { name: 'rand-write-4k', args: ['--rw=randwrite', '--bs=4k', '--fsync=256'], sizeBytes: 16 * MIB, numjobs: 2 },
  { name: 'mmap-rand-4k', args: ['--ioengine=mmap', '--rw=randwrite', '--bs=4k'], sizeBytes: 16 * MIB, numjobs: 1 },
];

interface FioJob {
  jobname: string;
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number };
}

function fioArgs(dir: string, extra: string[]): string[] {
  const global = ['--output-format=json', `--directory=${dir}`, '--direct=0', '--verify=crc32c', '--verify_fatal=1', '--randrepeat=1', '--fallocate=none', ...extra];
  return [...global, ...JOBS.flatMap((j) => [`--name=${j.name}`, ...j.args, `--size=${j.sizeBytes}`, `--numjobs=${j.numjobs}`])];
}

/** Runs fio in `cwd` (where it leaves its *-verify.state files) against the mount at `dir`. */
function runFio(t: Test, cwd: string, dir: string, extra: string[], what: string): FioJob[] {
  const started = Date.now();
  const r = run('fio', fioArgs(dir, extra), { cwd, timeout: FIO_TIMEOUT_MS });
  t.comment(`fio ${what}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  t.equal(r.status, 0, `fio ${what} exits 0`, { stderr: r.err.slice(-4000) });
  t.notMatch(r.err, /verify|bad magic|crc32c/i, `fio ${what} reports no verify failures on stderr`);
  // fio prints notes before the JSON document on some versions.
  const json = r.out.slice(r.out.indexOf('{'));
  let jobs: FioJob[] = [];
  try {
    jobs = (JSON.parse(json) as { jobs: FioJob[] }).jobs;
  } catch (e) {
    t.fail(`fio ${what} printed no JSON: ${(e as Error).message}: ${r.out.slice(0, 2000)}`);
  }
  return jobs;
}

t.test('fio with crc32c verification on an o2fs mount', async (t) => {
  const dir = tempDir(t, 'o2fs-fio-');
  const m = await mountFresh(t, dir, { sizeBytes: VOLUME_BYTES });

  const jobs = runFio(t, dir, m.mp, [], 'write + verify');
  t.equal(jobs.length, JOBS.reduce((n, j) => n + j.numjobs, 0), 'one JSON record per fio process');
  for (const j of jobs) {
    const spec = JOBS.find((s) => s.name === j.jobname);
    t.ok(spec, `known job ${j.jobname}`);
    if (!spec) continue;
    t.equal(j.error, 0, `${j.jobname}: no error (fio sets EILSEQ on a verify failure)`);
    t.equal(j.write.io_bytes, spec.sizeBytes, `${j.jobname}: wrote all ${spec.sizeBytes} bytes`);
    // Verification reads every block written (random jobs may write a block twice, but
    // verify each offset once, so at least the file, at most what was written).
    t.ok(j.read.io_bytes > 0 && j.read.io_bytes <= spec.sizeBytes, `${j.jobname}: verified ${j.read.io_bytes} bytes`);
  }

  const u = m.umount();
  t.equal(u.status, 0, `umount: ${u.err}`);
  const fsck1 = fsckClean(m.img);
  t.equal(fsck1.status, 0, `fsck -n after fio is clean: ${fsck1.out}${fsck1.err}`);

  // From disk this time: the same jobs in verify-only mode read and check every block.
  const again = await mountExisting(t, m.img, m.mp);
  const verified = runFio(t, dir, again.mp, ['--verify_only'], 'verify-only after a remount');
  for (const j of verified) {
    t.equal(j.error, 0, `${j.jobname}: data intact after the remount`);
    t.ok(j.read.io_bytes > 0, `${j.jobname}: verify-only read ${j.read.io_bytes} bytes`);
  }
  const u2 = again.umount();
  t.equal(u2.status, 0, `umount after verify-only: ${u2.err}`);
  const fsck2 = fsckClean(m.img);
  t.equal(fsck2.status, 0, `fsck -n at the end is clean: ${fsck2.out}${fsck2.err}`);
});
