// Cluster mounts against a local mount, side by side in one run (issue 6 item 7). A local
// volume (mkfs.o2fs, no stack) mounted in this machine's namespace; a 3-node o2cb cluster on
// the test/cluster harness (each node in its own network namespace with the real o2cbd, the
// cluster's default timeouts: heartbeat 500 ms x 12, idle 5 s, keepalive 1 s, reconnect
// 1 s), each node running `o2fs mount -f` on the shared disk. This process serves none of
// the mounts: it reads and writes through the mount points.
//
//   node dist/bench/cluster.js      (as root, after scripts/setup.sh; about 2-3 minutes)
//   bash bench/cluster.sh           (the same, building first)
//
// Parts:
//   1. Workload W on the local mount and on node 0's cluster mount (nodes 1 and 2 mounted,
//      idle): create BENCH_W_FILES (2000) files of 4 KiB in one directory, stat them, read
//      them back (verified), unlink them; write BENCH_W_SEQ_MB (256) MiB sequentially in
//      1 MiB blocks (fsync before close), read it back (verified). The page cache (and the
//      dentry/inode caches) are dropped before each read-side phase (stat, read, seq read) so
//      the local mount is not served from the kernel's cache while the cluster mount (kernel
//      caching off) goes to its server; BENCH_DROP_CACHES=0 skips that. Ratio cluster/local
//      per figure, target >= 0.9x.
//   2. Hand-off: nodes 0 and 1 alternately append one 100-byte record to one file through
//      their own mount points, BENCH_HANDOFF (200) appends after 2 unmeasured ones. Two
//      variants: "held fd" (each node keeps an O_APPEND descriptor open; the time is the
//      write(2)) and "open/append/close" (each append opens, writes, closes). Median and p99;
//      target median <= 2 ms. The file is then read on node 2 and every record checked.
//   3. One node writing a BENCH_SPLIT_MB (256) MiB file in 1 MiB writes, against nodes 0 and
//      1 each writing one half of another such file at the same time (fsync before close
//      on each). MB/s for both and the ratio two/one. Both files are verified on node 2.
//      Then the same two ways again as overwrites of the written file (no allocation, no
//      size change: the writers hold the inode lock at PR and their ranges' extent locks).
//   4. Failover: node 2 writing in a loop, kill -9 of node 2 (its o2cbd and mount server;
//      its FUSE connection aborted); the time until a write on node 0 completes, target
//      <= 10 s. BENCH_FAILOVERS (1) rounds; node 2 restarts and remounts between rounds.
//
// Prints a table at the end and writes bench/results/cluster-latest.json (git-ignored).
// Every mount, process, namespace and temporary file is removed on exit, also on failure.
// BENCH_MOUNT_OPTS adds -o options to every mount (both sides), e.g. replypoll=0.
// Not part of the test suite.
process.env.UV_THREADPOOL_SIZE ??= '8'; // before the first fs call: several writers at once
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, promises as fsp, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_TIMEOUTS } from '../dlm/o2cb/o2nm';
import { ORPHAN_SCAN_MS } from '../fs/cluster';
import { abortFuse, fuseConnectionId, isFuseMounted } from '../fs/fuse/mount';
import { ManagedProcess, nodeEnv, waitFor } from '../test/cluster/harness';
import { O2cbCluster } from '../test/cluster/o2cb-cluster';

const DIST = path.resolve(__dirname, '..');
const REPO = path.resolve(DIST, '..');
const O2FS = path.join(DIST, 'tools/o2fs.js');
const MKFS = path.join(DIST, 'tools/mkfs.js');
const FSCK = path.join(DIST, 'tools/fsck.js');
const RESULTS = path.join(REPO, 'bench/results/cluster-latest.json');

const envNum = (name: string, dflt: number): number => {
  const v = process.env[name];
  const n = v === undefined || v === '' ? dflt : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${v}`);
  return n;
};
const W_FILES = envNum('BENCH_W_FILES', 2000);
const W_FILE_BYTES = 4096;
const W_SEQ_MB = envNum('BENCH_W_SEQ_MB', 256);
const N_HANDOFF = envNum('BENCH_HANDOFF', 200);
const RECORD_BYTES = 100;
const SPLIT_MB = Math.max(2, 2 * Math.floor(envNum('BENCH_SPLIT_MB', 256) / 2));
const N_FAILOVERS = envNum('BENCH_FAILOVERS', 1);
const DROP_CACHES = process.env.BENCH_DROP_CACHES !== '0';
const VOLUME_BYTES = envNum('BENCH_VOLUME_GB', 2) * 1024 * 1024 * 1024;
const MiB = 1024 * 1024;
const STEP_MS = envNum('BENCH_STEP_S', 180) * 1000; // no phase should take this long; a hang fails the run
/** Extra `-o` options for every o2fs mount (local and cluster), e.g. BENCH_MOUNT_OPTS=replypoll=0. */
const MOUNT_OPTS = process.env.BENCH_MOUNT_OPTS ? ['-o', process.env.BENCH_MOUNT_OPTS] : [];
const PARTS = new Set((process.env.BENCH_PARTS ?? 'w handoff split failover').split(/[\s,]+/).filter((x) => x));

/** Tails of the cluster's daemon and mount logs, for a step that hung (set once the cluster is up). */
let postMortem: () => string = () => '';

// --- small helpers --------------------------------------------------------------------------

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function fmtMs(ms: number): string {
  return ms < 1 ? `${(ms * 1000).toFixed(0)} us` : ms < 100 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(0)} ms`;
}

/** Bounds one step: a hung mount must fail the bench, not hang it. */
async function step<T>(what: string, p: Promise<T>, ms = STEP_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms} ms\n${postMortem()}`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

function dropCaches(): void {
  if (!DROP_CACHES) return;
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch (e) {
    log(`cannot drop caches (${(e as Error).message}); read figures may come from the page cache`);
  }
}

/** 1 MiB block k of a sequential file: one random buffer with k stamped at its start. */
function blockMaker(): (k: number) => Buffer {
  const base = randomBytes(MiB);
  return (k) => {
    const b = Buffer.from(base);
    b.writeUInt32LE(k, 0);
    b.writeUInt32LE(k ^ 0x5a5a5a5a, MiB - 4);
    return b;
  };
}

async function writeRange(file: string, flags: string, firstBlock: number, blocks: number, block: (k: number) => Buffer): Promise<void> {
  const h = await fsp.open(file, flags);
  try {
    for (let k = firstBlock; k < firstBlock + blocks; k++) {
      const b = block(k);
      const r = await h.write(b, 0, b.length, k * MiB);
      if (r.bytesWritten !== b.length) throw new Error(`${file}: short write at block ${k}: ${r.bytesWritten}`);
    }
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Reads the whole file in 1 MiB reads and checks every block. */
async function readAndVerify(file: string, blocks: number, block: (k: number) => Buffer): Promise<void> {
  const h = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(MiB);
    for (let k = 0; k < blocks; k++) {
      let got = 0;
      while (got < MiB) {
        const r = await h.read(buf, got, MiB - got, k * MiB + got);
        if (r.bytesRead === 0) throw new Error(`${file}: EOF at ${k * MiB + got}, expected ${blocks * MiB} bytes`);
        got += r.bytesRead;
      }
      if (!buf.equals(block(k))) throw new Error(`${file}: block ${k} (offset ${k * MiB}) differs from what was written`);
    }
    const st = await h.stat();
    if (st.size !== blocks * MiB) throw new Error(`${file}: size ${st.size}, expected ${blocks * MiB}`);
  } finally {
    await h.close();
  }
}

// --- mounts ---------------------------------------------------------------------------------

interface Mount {
  mp: string;
  /** Which process serves it: for the exit wait and the post-mortem. */
  exited: Promise<unknown>;
  running(): boolean;
  stderr(): string;
}

async function waitMounted(mp: string, m: Mount, what: string): Promise<void> {
  try {
    await waitFor(() => isFuseMounted(mp) || !m.running(), 60_000, what);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${m.stderr()}`);
  }
  if (!m.running()) throw new Error(`${what} failed:\n${m.stderr()}`);
}

async function mountLocal(img: string, mp: string): Promise<Mount & { child: ChildProcess }> {
  mkdirSync(mp, { recursive: true });
  const child = spawn(process.execPath, [O2FS, 'mount', '-f', ...MOUNT_OPTS, img, mp], { env: nodeEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (b: Buffer) => {
    err = (err + b.toString()).slice(-20_000);
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const m = { mp, child, exited, running: () => child.exitCode === null && child.signalCode === null, stderr: () => err };
  await waitMounted(mp, m, 'the local mount');
  return m;
}

async function mountNode(c: O2cbCluster, i: number): Promise<Mount & { server: ManagedProcess }> {
  const mp = path.join(c.world.tmpDir, `mnt${i}`);
  mkdirSync(mp, { recursive: true });
  const server = c.world.spawn(i, process.execPath, [O2FS, 'mount', '-f', ...MOUNT_OPTS, c.world.sharedDisk, mp], {
    env: { ...nodeEnv(), O2CB_RUN_DIR: c.runDir(i) }, label: `o2fs-mount-${i}`,
  });
  const m = { mp, server, exited: server.exited, running: () => server.running, stderr: () => server.stderr() };
  await waitMounted(mp, m, `the mount on node ${i}`);
  return m;
}

/** `o2fs umount`, then an abort if that failed; waits for the server to exit. True if clean. */
async function unmount(m: Mount): Promise<boolean> {
  if (!isFuseMounted(m.mp)) return false;
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [O2FS, 'umount', m.mp], { env: nodeEnv(), stdio: 'ignore' });
    const timer = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  if (code !== 0) await abortFuse(m.mp).catch(() => undefined);
  await Promise.race([m.exited, new Promise((r) => setTimeout(r, 30_000).unref())]);
  return code === 0;
}

// --- part 1: workload W ---------------------------------------------------------------------

interface WResult {
  create_ops: number;
  stat_ops: number;
  read_ops: number;
  unlink_ops: number;
  seq_write_MBps: number;
  seq_read_MBps: number;
}

const W_LABELS: Record<keyof WResult, string> = {
  create_ops: `create ${W_FILES} x 4 KiB (files/s)`,
  stat_ops: 'stat (files/s)',
  read_ops: 'read back (files/s)',
  unlink_ops: 'unlink (files/s)',
  seq_write_MBps: `seq write ${W_SEQ_MB} MiB, 1 MiB (MB/s)`,
  seq_read_MBps: `seq read ${W_SEQ_MB} MiB, 1 MiB (MB/s)`,
};

async function workloadW(mp: string, what: string): Promise<WResult> {
  const dir = path.join(mp, 'w');
  await step(`mkdir on ${what}`, fsp.mkdir(dir));
  const names = Array.from({ length: W_FILES }, (_, i) => path.join(dir, `f${String(i).padStart(5, '0')}`));
  const base = randomBytes(W_FILE_BYTES);
  const content = (i: number): Buffer => {
    const b = Buffer.from(base);
    b.writeUInt32LE(i, 0);
    return b;
  };
  const rate = (n: number, ms: number): number => (n / ms) * 1000;
  const phase = async (name: string, fn: () => Promise<void>): Promise<number> => {
    log(`${what}: ${name}...`);
    const t0 = performance.now();
    await step(`${name} on ${what}`, fn());
    const ms = performance.now() - t0;
    log(`${what}: ${name} ${ms.toFixed(0)} ms`);
    return ms;
  };

  const create = await phase('create', async () => {
    for (let i = 0; i < W_FILES; i++) await fsp.writeFile(names[i], content(i));
  });
  dropCaches();
  const stat = await phase('stat', async () => {
    for (let i = 0; i < W_FILES; i++) {
      const st = await fsp.stat(names[i]);
      if (st.size !== W_FILE_BYTES) throw new Error(`${names[i]}: size ${st.size}`);
    }
  });
  dropCaches();
  const read = await phase('read', async () => {
    for (let i = 0; i < W_FILES; i++) {
      if (!(await fsp.readFile(names[i])).equals(content(i))) throw new Error(`${names[i]}: content differs`);
    }
  });
  const unlink = await phase('unlink', async () => {
    for (let i = 0; i < W_FILES; i++) await fsp.unlink(names[i]);
  });

  const block = blockMaker();
  const seq = path.join(dir, 'seq');
  const seqWrite = await phase('seq write', () => writeRange(seq, 'w', 0, W_SEQ_MB, block));
  dropCaches();
  const seqRead = await phase('seq read', () => readAndVerify(seq, W_SEQ_MB, block));
  await step(`unlink of the ${W_SEQ_MB} MiB file on ${what}`, fsp.unlink(seq));
  await step(`rmdir on ${what}`, fsp.rmdir(dir));
  const mbps = (ms: number): number => (W_SEQ_MB * MiB) / 1e6 / (ms / 1000);
  return {
    create_ops: rate(W_FILES, create), stat_ops: rate(W_FILES, stat), read_ops: rate(W_FILES, read),
    unlink_ops: rate(W_FILES, unlink), seq_write_MBps: mbps(seqWrite), seq_read_MBps: mbps(seqRead),
  };
}

// --- part 2: hand-off -----------------------------------------------------------------------

interface Latency {
  n: number;
  median_ms: number;
  p99_ms: number;
  max_ms: number;
  verified: boolean;
  error?: string;
}

function latency(samples: number[]): Omit<Latency, 'verified'> {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, median_ms: quantile(s, 0.5), p99_ms: quantile(s, 0.99), max_ms: s[s.length - 1] };
}

function record(i: number): Buffer {
  const b = Buffer.alloc(RECORD_BYTES, 0x20 + (i % 90));
  b.write(`record ${String(i).padStart(6, '0')} from node ${i % 2}`, 0);
  b[RECORD_BYTES - 1] = 0x0a;
  return b;
}

/** The file as read on another node holds exactly records 0..n-1 in order; else why not. */
async function checkRecords(file: string, n: number): Promise<string | null> {
  const data = await fsp.readFile(file);
  if (data.length !== n * RECORD_BYTES) return `size ${data.length}, expected ${n * RECORD_BYTES} (${n} records)`;
  for (let i = 0; i < n; i++) {
    if (!data.subarray(i * RECORD_BYTES, (i + 1) * RECORD_BYTES).equals(record(i))) {
      return `record ${i} differs: ${JSON.stringify(data.subarray(i * RECORD_BYTES, i * RECORD_BYTES + 30).toString('latin1'))}`;
    }
  }
  return null;
}

async function handoff(mps: string[], reader: string, variant: 'held' | 'reopen'): Promise<Latency> {
  const name = `handoff-${variant}`;
  await step(`create ${name}`, fsp.writeFile(path.join(mps[0], name), ''));
  const warm = 2;
  const total = warm + N_HANDOFF;
  const samples: number[] = [];
  const fds = variant === 'held' ? await step(`open ${name} on both nodes`, Promise.all(mps.map((mp) => fsp.open(path.join(mp, name), 'a')))) : [];
  try {
    for (let i = 0; i < total; i++) {
      const b = record(i);
      const t0 = performance.now();
      if (variant === 'held') {
        const r = await step(`append ${i}`, fds[i % 2].write(b, 0, b.length, null), 30_000);
        if (r.bytesWritten !== b.length) throw new Error(`append ${i}: short write ${r.bytesWritten}`);
      } else {
        await step(`append ${i}`, fsp.appendFile(path.join(mps[i % 2], name), b), 30_000);
      }
      if (i >= warm) samples.push(performance.now() - t0);
    }
  } finally {
    for (const h of fds) await step(`close ${name}`, h.close());
  }
  const bad = await step(`read ${name} on node 2`, checkRecords(path.join(reader, name), total));
  await step(`unlink ${name}`, fsp.unlink(path.join(mps[0], name)));
  if (bad) log(`hand-off (${variant}): the file read on node 2 is wrong: ${bad}`);
  return { ...latency(samples), verified: bad === null, ...(bad ? { error: bad } : {}) };
}

// --- part 3: one writer against two on disjoint halves --------------------------------------

interface Split {
  one_node_MBps: number;
  two_nodes_MBps: number;
  ratio: number;
  node0_half_s: number;
  node1_half_s: number;
  overwrite_one_node_MBps: number;
  overwrite_two_nodes_MBps: number;
  overwrite_ratio: number;
}

async function split(mp0: string, mp1: string, reader: string): Promise<Split> {
  const block = blockMaker();
  const half = SPLIT_MB / 2;
  const mbps = (ms: number): number => (SPLIT_MB * MiB) / 1e6 / (ms / 1000);

  let t0 = performance.now();
  await step('one node writing the whole file', writeRange(path.join(mp0, 'one'), 'w', 0, SPLIT_MB, block));
  const oneMs = performance.now() - t0;
  log(`split: one node ${oneMs.toFixed(0)} ms`);
  await step('verify of the one-node file', readAndVerify(path.join(reader, 'one'), SPLIT_MB, block));
  await step('unlink of the one-node file', fsp.unlink(path.join(mp0, 'one')));

  const file = 'halves';
  await step('create of the two-node file', fsp.writeFile(path.join(mp0, file), ''));
  const halfMs: number[] = [0, 0];
  t0 = performance.now();
  await step('two nodes writing halves', Promise.all([mp0, mp1].map(async (mp, i) => {
    await writeRange(path.join(mp, file), 'r+', i * half, half, block);
    halfMs[i] = performance.now() - t0;
  })));
  const twoMs = performance.now() - t0;
  log(`split: two nodes ${twoMs.toFixed(0)} ms (node 0 done after ${halfMs[0].toFixed(0)} ms, node 1 after ${halfMs[1].toFixed(0)} ms)`);
  await step('verify of the two-node file', readAndVerify(path.join(reader, file), SPLIT_MB, block));

  // Overwrites of the written file: one node the whole of it, then two nodes a half each.
  t0 = performance.now();
  await step('one node overwriting the whole file', writeRange(path.join(mp0, file), 'r+', 0, SPLIT_MB, block));
  const oneOverMs = performance.now() - t0;
  t0 = performance.now();
  await step('two nodes overwriting halves', Promise.all([mp0, mp1].map((mp, i) => writeRange(path.join(mp, file), 'r+', i * half, half, block))));
  const twoOverMs = performance.now() - t0;
  log(`split: overwrite by one node ${oneOverMs.toFixed(0)} ms, by two nodes ${twoOverMs.toFixed(0)} ms`);
  await step('verify of the overwritten file', readAndVerify(path.join(reader, file), SPLIT_MB, block));
  await step('unlink of the two-node file', fsp.unlink(path.join(mp0, file)));
  return {
    one_node_MBps: mbps(oneMs), two_nodes_MBps: mbps(twoMs), ratio: oneMs / twoMs,
    node0_half_s: halfMs[0] / 1000, node1_half_s: halfMs[1] / 1000,
    overwrite_one_node_MBps: mbps(oneOverMs), overwrite_two_nodes_MBps: mbps(twoOverMs), overwrite_ratio: oneOverMs / twoOverMs,
  };
}

// --- part 4: failover -----------------------------------------------------------------------

interface Failover {
  total_ms: number;
  kill_ms: number;
  victim_writes: number;
}

async function failover(c: O2cbCluster, mounts: Array<Mount | null>, round: number): Promise<Failover> {
  const victim = mounts[2];
  if (!victim) throw new Error('node 2 is not mounted');
  // Node 2 writes in a loop (64 KiB appends with fsync now and then), so it holds the meta
  // lock at EX, dirty journal and all, when it dies.
  let stop = false;
  let writes = 0;
  let victimError: Error | null = null;
  const chunk = randomBytes(64 * 1024);
  const writer = (async () => {
    const h = await fsp.open(path.join(victim.mp, `victim-${round}`), 'w');
    try {
      while (!stop) {
        await h.write(chunk, 0, chunk.length, null);
        if (++writes % 8 === 0) await h.sync();
      }
    } finally {
      await h.close().catch(() => undefined);
    }
  })().catch((e: Error) => {
    victimError = e;
  });
  await step('node 2 writing', waitFor(() => writes >= 20 || victimError !== null, 60_000, 'node 2 to write'));
  if (victimError) throw new Error(`node 2 could not write: ${(victimError as Error).message}`);

  const killedAt = performance.now();
  await c.kill(2);
  const killMs = performance.now() - killedAt;
  stop = true;
  await abortFuse(victim.mp).catch((e) => log(`abort of node 2's mount: ${(e as Error).message}`));
  mounts[2] = null;
  await step('a write on node 0 after node 2 was killed', fsp.writeFile(path.join(mounts[0]!.mp, `after-kill-${round}`), 'survivor\n'), 120_000);
  const totalMs = performance.now() - killedAt;
  await step('node 2\'s writer to stop', writer, 30_000);
  log(`failover ${round}: a write on node 0 completed ${totalMs.toFixed(0)} ms after the kill (kill itself ${killMs.toFixed(0)} ms; node 2 had written ${writes} x 64 KiB)`);
  return { total_ms: totalMs, kill_ms: killMs, victim_writes: writes };
}

// --- main -----------------------------------------------------------------------------------

function verdict(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}

/** A part's outcome: its figures, or why there are none. */
type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

async function main(): Promise<void> {
  const started = performance.now();
  const t = DEFAULT_TIMEOUTS;
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    host: { cpus: os.cpus().length, kernel: os.release(), node: process.version },
    params: {
      parts: [...PARTS], w_files: W_FILES, w_file_bytes: W_FILE_BYTES, w_seq_mb: W_SEQ_MB, handoff: N_HANDOFF, record_bytes: RECORD_BYTES,
      split_mb: SPLIT_MB, failovers: N_FAILOVERS, drop_caches: DROP_CACHES, volume_bytes: VOLUME_BYTES, timeouts: t,
    },
  };
  const localDir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-bench-cluster-'));
  let local: (Mount & { child: ChildProcess }) | null = null;
  let c: O2cbCluster | null = null;
  const mounts: Array<Mount | null> = [null, null, null];
  const ourMps = new Set<string>();

  // ^C / kill: detach our mounts and stop the local server synchronously; the harness's own
  // listener (registered after this one) then destroys the cluster world and re-raises.
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`bench: ${sig}; cleaning up\n`);
    for (const mp of ourMps) if (isFuseMounted(mp)) spawnSync('umount', ['-l', mp], { stdio: 'ignore', timeout: 10_000 });
    if (local?.running()) local.child.kill('SIGKILL');
    rmSync(localDir, { recursive: true, force: true });
    for (const s of SIGNALS) process.removeListener(s, onSignal);
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of SIGNALS) process.on(s, onSignal);

  // A part that fails is reported as such; one that hangs (a step timed out) leaves mounts
  // we cannot trust, so the parts after it are skipped.
  let wedged: string | null = null;
  const part = async <T>(name: string, fn: () => Promise<T>): Promise<Outcome<T> | null> => {
    if (!PARTS.has(name)) return null;
    if (wedged) return { ok: false, error: `skipped: ${wedged}` };
    try {
      return { ok: true, value: await step(`part ${name}`, fn(), STEP_MS + 60_000) };
    } catch (e) {
      const msg = (e as Error).message;
      log(`${name} FAILED: ${msg}`);
      if (/no result in \d+ ms/.test(msg)) wedged = `${name} hung`;
      return { ok: false, error: msg.split('\n')[0] };
    }
  };

  let wLocal: Outcome<WResult> | null = null;
  let wCluster: Outcome<WResult> | null = null;
  let held: Outcome<Latency> | null = null;
  let reopen: Outcome<Latency> | null = null;
  let sp: Outcome<Split> | null = null;
  const fo: Array<Outcome<Failover>> = [];
  let clean = false;
  let fsckOk = false;
  let fsckStatus: number | null = null;
  try {
    // (a) the local volume: the same size and slot count as the cluster's, on the same disk.
    if (PARTS.has('w')) {
      const img = path.join(localDir, 'local.img');
      const mk = spawnSync(process.execPath, [MKFS, '-q', '-N', '4', '--size', String(VOLUME_BYTES), img], { env: nodeEnv(), encoding: 'utf8' });
      if (mk.status !== 0) throw new Error(`mkfs.o2fs: ${mk.stderr}${mk.stdout}`);
      const mp = path.join(localDir, 'mnt');
      ourMps.add(mp);
      local = await mountLocal(img, mp);
      log(`local mount at ${local.mp}; workload W`);
      wLocal = await part('w', () => workloadW(mp, 'local'));
      if (!(await unmount(local))) log('the local mount did not unmount cleanly');
      rmSync(img, { force: true });
    }

    // (b) the cluster, default o2cb timeouts; every node mounted.
    c = await O2cbCluster.create({
      nodes: 3, diskBytes: VOLUME_BYTES, heartbeatIntervalMs: t.heartbeatIntervalMs, heartbeatDeadThreshold: t.heartbeatDeadThreshold,
      idleTimeoutMs: t.idleTimeoutMs, keepaliveDelayMs: t.keepaliveDelayMs, reconnectDelayMs: t.reconnectDelayMs,
    });
    const cl = c;
    postMortem = () => mounts.map((m, i) => {
      const id = m ? fuseConnectionId(m.mp) : undefined;
      let waiting = '?';
      try {
        if (id !== undefined) waiting = readFileSync(`/sys/fs/fuse/connections/${id}/waiting`, 'utf8').trim();
      } catch {
        // fusectl not mounted: unknown
      }
      return `node ${i}: FUSE requests waiting: ${waiting}\n`;
    }).join('') + cl.world.processes().map((x) => `--- ${x.label} (pid ${x.pid}, ${x.running ? 'running' : 'exited'})\n${x.stderr().split('\n').slice(-40).join('\n')}`).join('\n');
    for (let i = 0; i < 3; i++) {
      ourMps.add(path.join(cl.world.tmpDir, `mnt${i}`));
      mounts[i] = await mountNode(cl, i);
    }
    const mp = (i: number): string => mounts[i]!.mp;
    log(`3-node o2cb cluster mounted (heartbeat ${t.heartbeatIntervalMs} ms x ${t.heartbeatDeadThreshold}, idle ${t.idleTimeoutMs} ms)`);

    // Between parts, one orphan-scan period: the files a part unlinked (orphans while other
    // nodes' kernels referenced them) are freed by the scans before the next part measures.
    // Foreground operations racing a scan that frees orphans have hung (see the report);
    // BENCH_QUIESCE=0 skips the pause.
    const quiesce = async (): Promise<void> => {
      if (process.env.BENCH_QUIESCE !== '0' && !wedged) await new Promise((r) => setTimeout(r, ORPHAN_SCAN_MS + 1_500));
    };
    wCluster = await part('w', () => workloadW(mp(0), 'cluster node 0'));
    await quiesce();
    held = await part('handoff', () => handoff([mp(0), mp(1)], mp(2), 'held'));
    await quiesce();
    reopen = await part('handoff', () => handoff([mp(0), mp(1)], mp(2), 'reopen'));
    await quiesce();
    sp = await part('split', () => split(mp(0), mp(1), mp(2)));
    await quiesce();
    if (PARTS.has('failover')) {
      for (let k = 0; k < N_FAILOVERS; k++) {
        const r = await part('failover', async () => {
          if (!mounts[2]) {
            await cl.start(2);
            mounts[2] = await mountNode(cl, 2);
          }
          return failover(cl, mounts, k);
        });
        if (r) fo.push(r);
      }
    }

    // Clean unmounts, then fsck of the shared disk (a killed node's slot recovered by a
    // survivor). Files unlinked on node 0 that the other nodes' kernels still referenced
    // are orphans until those nodes let go (their unmount) and node 0's orphan scan (every
    // ORPHAN_SCAN_MS) frees them: so nodes 2 and 1 go first, and node 0 a scan later.
    if (!wedged) {
      clean = true;
      for (const i of [2, 1]) if (mounts[i]) clean = (await unmount(mounts[i]!)) && clean;
      if (mounts[0]) {
        await new Promise((r) => setTimeout(r, ORPHAN_SCAN_MS + 2_000));
        clean = (await unmount(mounts[0])) && clean;
      }
      for (const [i, m] of mounts.entries()) {
        for (const what of ['requests served:', 'cluster locks:']) {
          const stats = m?.stderr().split('\n').filter((l) => l.includes(what)).pop();
          if (stats) log(`node ${i}: ${stats.slice(stats.indexOf(what))}`);
        }
      }
      const fsck = cl.world.exec(0, process.execPath, [FSCK, '-n', cl.world.sharedDisk], { env: nodeEnv(), timeoutMs: 180_000 });
      fsckStatus = fsck.status;
      fsckOk = fsck.status === 0;
      if (!fsckOk) log(`fsck.o2fs -n after the run (status ${fsck.status}):\n${fsck.stdout}${fsck.stderr}`);
    }

    // --- the table ---
    const lines: string[] = [];
    const out = (s = ''): void => {
      lines.push(s);
    };
    const failed = <T>(o: Outcome<T> | null): string => (o && !o.ok ? `FAILED: ${o.error}` : 'not run');
    out('');
    out(`o2fs cluster bench: ${os.cpus().length} CPUs, kernel ${os.release()}, node ${process.version}; o2cb heartbeat ${t.heartbeatIntervalMs} ms x ${t.heartbeatDeadThreshold}, idle ${t.idleTimeoutMs} ms, keepalive ${t.keepaliveDelayMs} ms, reconnect ${t.reconnectDelayMs} ms`);
    out('');
    out(`1. Workload W: local mount vs cluster mount on node 0 (nodes 1, 2 mounted, idle)${DROP_CACHES ? '; caches dropped before stat, read, seq read' : ''}`);
    const wRows: Record<string, { local: number; cluster: number; ratio: number; met: boolean }> = {};
    if (wLocal?.ok && wCluster?.ok) {
      out(`   ${'figure'.padEnd(36)} ${'local'.padStart(10)} ${'cluster'.padStart(10)} ${'cl/local'.padStart(9)}  target >= 0.9x`);
      for (const k of Object.keys(W_LABELS) as Array<keyof WResult>) {
        const [a, b] = [wLocal.value[k], wCluster.value[k]];
        const ratio = b / a;
        wRows[k] = { local: a, cluster: b, ratio, met: ratio >= 0.9 };
        out(`   ${W_LABELS[k].padEnd(36)} ${a.toFixed(0).padStart(10)} ${b.toFixed(0).padStart(10)} ${(ratio.toFixed(2) + 'x').padStart(9)}  ${verdict(ratio >= 0.9)}`);
      }
    } else {
      out(`   local: ${wLocal?.ok ? 'ok' : failed(wLocal)}; cluster: ${wCluster?.ok ? 'ok' : failed(wCluster)}`);
    }
    out('');
    out(`2. Hand-off: nodes 0 and 1 alternately append a ${RECORD_BYTES}-byte record to one file, n=${N_HANDOFF}; target median <= 2 ms`);
    for (const [label, o] of [['held O_APPEND fd (write)', held], ['open/append/close', reopen]] as const) {
      if (!o?.ok) {
        out(`   ${label.padEnd(26)} ${failed(o)}`);
        continue;
      }
      const l = o.value;
      out(`   ${label.padEnd(26)} median ${fmtMs(l.median_ms).padStart(9)}  p99 ${fmtMs(l.p99_ms).padStart(9)}  max ${fmtMs(l.max_ms).padStart(9)}  ${verdict(l.median_ms <= 2)}` +
        `  file on node 2: ${l.verified ? 'all records intact' : `WRONG (${l.error})`}`);
    }
    out('');
    out(`3. ${SPLIT_MB} MiB file in 1 MiB writes (fsync at the end), verified on node 2`);
    if (sp?.ok) {
      const v = sp.value;
      out(`   one node, whole file          ${v.one_node_MBps.toFixed(1).padStart(8)} MB/s`);
      out(`   nodes 0+1, one half each      ${v.two_nodes_MBps.toFixed(1).padStart(8)} MB/s   (node 0 done at ${v.node0_half_s.toFixed(1)} s, node 1 at ${v.node1_half_s.toFixed(1)} s)`);
      out(`   ratio two/one                 ${v.ratio.toFixed(2).padStart(8)}x`);
      out(`   overwrite, one node           ${v.overwrite_one_node_MBps.toFixed(1).padStart(8)} MB/s`);
      out(`   overwrite, nodes 0+1 halves   ${v.overwrite_two_nodes_MBps.toFixed(1).padStart(8)} MB/s`);
      out(`   overwrite ratio two/one       ${v.overwrite_ratio.toFixed(2).padStart(8)}x`);
    } else {
      out(`   ${failed(sp)}`);
    }
    out('');
    out(`4. Failover: kill -9 of node 2 while it writes, until a write on node 0 completes; target <= 10 s (dead time ${t.heartbeatIntervalMs * t.heartbeatDeadThreshold} ms)`);
    if (fo.length === 0) out('   not run');
    fo.forEach((o, k) => out(o.ok
      ? `   round ${k + 1}: ${(o.value.total_ms / 1000).toFixed(2)} s  ${verdict(o.value.total_ms <= 10_000)}  (kill -9 itself ${o.value.kill_ms.toFixed(0)} ms)`
      : `   round ${k + 1}: ${failed(o)}`));
    out('');
    out(wedged ? `   ${wedged}: no clean unmount, no fsck`
      : `   all nodes unmounted ${clean ? 'cleanly' : 'NOT cleanly'}; fsck.o2fs -n of the shared disk: ${fsckOk ? 'clean' : `NOT clean (status ${fsckStatus})`}`);
    out(`   total run time ${((performance.now() - started) / 1000).toFixed(0)} s`);
    console.log(lines.join('\n'));

    const val = <T>(o: Outcome<T> | null): T | { error: string } | null => (o === null ? null : o.ok ? o.value : { error: o.error });
    Object.assign(results, {
      workload_w: wLocal?.ok && wCluster?.ok ? wRows : { local: val(wLocal), cluster: val(wCluster) },
      handoff: {
        target_median_ms: 2,
        held_fd: held?.ok ? { ...held.value, met: held.value.median_ms <= 2 } : val(held),
        open_append_close: reopen?.ok ? { ...reopen.value, met: reopen.value.median_ms <= 2 } : val(reopen),
      },
      split: sp?.ok ? { mb: SPLIT_MB, ...sp.value } : val(sp),
      failover: { target_ms: 10_000, rounds: fo.map((o) => (o.ok ? { ...o.value, met: o.value.total_ms <= 10_000 } : { error: o.error })) },
      wedged,
      clean_unmount: clean,
      fsck_clean: fsckOk,
      run_seconds: (performance.now() - started) / 1000,
    });
    mkdirSync(path.dirname(RESULTS), { recursive: true });
    writeFileSync(RESULTS, JSON.stringify(results, null, 2) + '\n');
    log(`wrote ${path.relative(REPO, RESULTS)}`);
    if (wedged) process.exitCode = 1;
  } finally {
    if (local) {
      if (isFuseMounted(local.mp)) await abortFuse(local.mp).catch(() => undefined);
      if (local.running()) local.child.kill('SIGKILL');
      await Promise.race([local.exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
    for (const m of ourMps) if (isFuseMounted(m)) await abortFuse(m).catch((e) => log(`abort ${m}: ${(e as Error).message}`));
    if (c) await c.close().catch((e) => log(`cluster close: ${(e as Error).message}`));
    rmSync(localDir, { recursive: true, force: true });
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeListener(s, onSignal);
  }
}

void main().then(() => process.exit(process.exitCode ?? 0), (e) => {
  console.error(e);
  process.exit(1);
});
