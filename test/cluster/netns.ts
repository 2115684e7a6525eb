// Network-namespace plumbing for the cluster harness: naming, synchronous command runs,
// process liveness by pid, the on-disk record of every world, and the sweeper that removes
// worlds whose creator died without cleaning up (SIGKILL, OOM, power cut of the test run).
//
// Everything here is synchronous on purpose: the same code runs from a process 'exit'
// handler, where no promise will ever settle.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Where namespaces live as bind-mounted files (`ip netns add` creates them here). */
export const NETNS_DIR = '/run/netns';
/** One JSON record per world; lets the sweeper find its tmp dir and honour O2FS_KEEP_WORLD. */
export const RECORD_DIR = '/run/o2fs-test/worlds';
/** The tmp dir of every world starts with this; the sweeper deletes nothing else. */
export const TMP_PREFIX = 'o2fs-world-';

// Names carry the creator's pid, so a namespace can be judged stale even when its record is
// missing. The tag is 6 hex digits, random per world. Interface names must fit IFNAMSIZ (15).
const WORLD_RE = /^o2w-(\d+)-([0-9a-f]{6})$/;
const NODE_RE = /^o2n(\d+)-(\d+)-([0-9a-f]{6})$/;

export function worldNsName(pid: number, tag: string): string {
  return `o2w-${pid}-${tag}`;
}
export function nodeNsName(num: number, pid: number, tag: string): string {
  return `o2n${num}-${pid}-${tag}`;
}

export interface ParsedNsName {
  kind: 'world' | 'node';
  pid: number;
  tag: string;
}

/** Null for every namespace the harness did not name: those are never touched. */
export function parseNsName(name: string): ParsedNsName | null {
  let m = WORLD_RE.exec(name);
  if (m) return { kind: 'world', pid: Number(m[1]), tag: m[2] };
  m = NODE_RE.exec(name);
  if (m) return { kind: 'node', pid: Number(m[2]), tag: m[3] };
  return null;
}

export interface CmdResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const CMD_TIMEOUT_MS = 30_000;

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export function runSync(cmd: string, args: string[], opts: RunOptions = {}): CmdResult {
  const r = spawnSync(cmd, args, {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? CMD_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    input: opts.input,
    maxBuffer: 64 << 20,
  });
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT';
  if (r.error && !timedOut) throw r.error;
  return {
    status: r.status,
    signal: r.signal,
    stdout: r.stdout?.toString() ?? '',
    stderr: r.stderr?.toString() ?? '',
    timedOut,
  };
}

/** Runs a setup command that must succeed; the error names the command and its stderr. */
export function mustSync(cmd: string, args: string[], opts: RunOptions = {}): string {
  const r = runSync(cmd, args, opts);
  if (r.status !== 0) {
    const why = r.timedOut ? 'timed out' : `exit ${r.status ?? r.signal}`;
    throw new Error(`${cmd} ${args.join(' ')}: ${why}: ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** Blocks the thread; only for the synchronous cleanup path. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Polls `done` every 20 ms, at most `timeoutMs`; returns whether it became true. */
export function waitSync(done: () => boolean, timeoutMs: number): boolean {
  const deadlineMs = Date.now() + timeoutMs;
  for (;;) {
    if (done()) return true;
    if (Date.now() >= deadlineMs) return false;
    sleepSync(20);
  }
}

/** Process start time in clock ticks since boot (field 22 of /proc/PID/stat), or null. */
export function procStartTime(pid: number): number | null {
  const stat = procStat(pid);
  return stat ? Number(stat[19]) : null;
}

/** Fields of /proc/PID/stat after the command name, i.e. starting with the state (field 3). */
function procStat(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may itself contain ') ', so split after the last.
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Alive and not a zombie: a zombie holds no namespaces and no resources worth waiting for. */
export function isAlive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== null && stat[0] !== 'Z' && stat[0] !== 'X';
}

/** Whether the process that created a world still runs (same pid and same start time). */
export function ownerAlive(pid: number, startTime?: number | null): boolean {
  if (!isAlive(pid)) return false;
  // A recycled pid is a different process: its start time differs from the recorded one.
  return startTime == null || procStartTime(pid) === startTime;
}

export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

export function netnsExists(name: string): boolean {
  return listNetns().includes(name);
}

/** Pids of every process whose network namespace is `name` (none if it does not exist). */
export function netnsPids(name: string): number[] {
  if (!netnsExists(name)) return [];
  const r = runSync('ip', ['netns', 'pids', name], { timeoutMs: 10_000 });
  if (r.status !== 0) return [];
  return r.stdout.split(/\s+/).filter((s) => s !== '').map(Number).filter((pid) => isAlive(pid));
}

/** Sends `signal` to a pid, ignoring one that already exited. */
export function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

export function deleteNetns(name: string): void {
  if (!netnsExists(name)) return;
  const r = runSync('ip', ['netns', 'del', name], { timeoutMs: 10_000 });
  if (r.status !== 0 && netnsExists(name)) throw new Error(`ip netns del ${name}: ${r.stderr.trim()}`);
}

export interface WorldRecord {
  world: string;
  pid: number;
  startTime: number | null;
  tmpDir: string;
  /** Third octet of 10.213.y.0/24; live worlds never share one. */
  subnetOctet: number;
  namespaces: string[];
  /** Set by destroy() under O2FS_KEEP_WORLD=1: the sweeper leaves it unless asked. */
  keep: boolean;
  createdAt: string;
}

function recordPath(world: string): string {
  return path.join(RECORD_DIR, `${world}.json`);
}

export function writeRecord(rec: WorldRecord): void {
  mkdirSync(RECORD_DIR, { recursive: true });
  writeFileSync(recordPath(rec.world), `${JSON.stringify(rec, null, 2)}\n`);
}

export function removeRecord(world: string): void {
  rmSync(recordPath(world), { force: true });
}

export function readRecords(): WorldRecord[] {
  let files: string[];
  try {
    files = readdirSync(RECORD_DIR);
  } catch {
    return [];
  }
  const out: WorldRecord[] = [];
  for (const f of files) {
    if (!f.endsWith('.json') || !parseNsName(f.slice(0, -5))) continue;
    try {
      out.push(JSON.parse(readFileSync(path.join(RECORD_DIR, f), 'utf8')) as WorldRecord);
    } catch {
      // Half-written by a process that died mid-write: its namespaces carry the pid anyway.
    }
  }
  return out;
}

/** Removes a world's tmp dir, but only one the harness made (guards against a bad record). */
export function removeWorldTmpDir(dir: string): void {
  if (!path.isAbsolute(dir) || !path.basename(dir).startsWith(TMP_PREFIX)) return;
  // A crashed world can leave FUSE mounts (dead servers) inside: abort their connections
  // and detach them first, or removing the directory fails (EISDIR on a mount point).
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const mp = f[4];
    if (!mp || !(mp === dir || mp.startsWith(`${dir}/`))) continue;
    const dev = f[2];
    const conn = dev?.startsWith('0:') ? `/sys/fs/fuse/connections/${dev.slice(2)}/abort` : '';
    if (conn) {
      try {
        writeFileSync(conn, '1');
      } catch {
        // not a FUSE mount, or already gone
      }
    }
    spawnSync('umount', ['-l', mp], { timeout: 10_000 });
  }
  rmSync(dir, { recursive: true, force: true });
}

const SWEEP_KILL_WAIT_MS = 5_000;

export interface SweepOptions {
  /** Also remove worlds kept with O2FS_KEEP_WORLD=1 (their creator has exited). */
  includeKept?: boolean;
}

/**
 * Deletes every namespace named by the harness whose creator is no longer alive, after
 * SIGKILLing the processes inside it, and the tmp dirs and records of those worlds.
 * Touches nothing it did not name. Returns the namespaces it deleted.
 */
export function sweepStaleWorlds(opts: SweepOptions = {}): string[] {
  const records = new Map(readRecords().map((r) => [r.world, r]));
  const isStale = (pid: number, tag: string): boolean => {
    const rec = records.get(worldNsName(pid, tag));
    if (rec?.keep && !opts.includeKept) return false;
    return !ownerAlive(pid, rec?.startTime);
  };
  const stale = listNetns().filter((name) => {
    const p = parseNsName(name);
    return p !== null && isStale(p.pid, p.tag);
  });
  // Processes first: a namespace whose last process is gone is freed with its links.
  for (const name of stale) for (const pid of netnsPids(name)) signalPid(pid, 'SIGKILL');
  waitSync(() => stale.every((name) => netnsPids(name).length === 0), SWEEP_KILL_WAIT_MS);
  for (const name of stale) deleteNetns(name);
  for (const rec of records.values()) {
    const p = parseNsName(rec.world);
    if (!p || !isStale(p.pid, p.tag)) continue;
    removeWorldTmpDir(rec.tmpDir);
    removeRecord(rec.world);
  }
  return stale;
}
