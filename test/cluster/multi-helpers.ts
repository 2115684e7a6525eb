// Helpers for the multi-node cluster tests (cluster-mount, ocfs2-multi): mounting o2fs on the nodes
// of an O2cbCluster, bounded steps that dump the logs, and python workers "on node i" (host
// processes working through node i's mount point) driven by the test in lockstep.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { abortFuse, isFuseMounted } from '../../fs/fuse/mount';
import { nodeEnv, ManagedProcess, waitFor } from './harness';
import type { O2cbCluster } from './o2cb-cluster';
import { Prng } from '../../fs/prng';

const DIST = path.resolve(__dirname, '../..');
export const O2FS = path.join(DIST, 'tools/o2fs.js');
export const FSCK = path.join(DIST, 'tools/fsck.js');

export interface Mount {
  node: number;
  mp: string;
  server: ManagedProcess;
}

/** The errno name of a failed fs call ('ENOENT'), or the error as text. */
export function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

/** `o2fs mount -f` of the shared disk on node i; `options` go to -o (e.g. 'nokernelcache'). */
export async function mountOn(c: O2cbCluster, i: number, options = ''): Promise<Mount> {
  const mp = path.join(c.world.tmpDir, `mnt${i}`);
  mkdirSync(mp, { recursive: true });
  const server = c.world.spawn(i, process.execPath, [O2FS, 'mount', '-f', c.world.sharedDisk, mp, ...(options ? ['-o', options] : [])], {
    env: { ...nodeEnv(), O2CB_RUN_DIR: c.runDir(i) }, label: `o2fs-mount-${i}`,
  });
  try {
    await waitFor(() => isFuseMounted(mp) || !server.running, 60_000, `mount on node ${i}`);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${server.stderr()}`);
  }
  if (!server.running) throw new Error(`mount on node ${i} failed:\n${server.stderr()}`);
  return { node: i, mp, server };
}

/** Node `num`'s lock manager state, as its o2cbd's test socket dumps it (one JSON line). */
function dlmDump(c: O2cbCluster, num: number): { stdout: string; stderr: string } {
  return spawnSync(python(), ['-c', `import socket,sys\ns=socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1]); s.sendall(b'{"op":"dump"}\\n'); print(s.makefile().readline())`, path.join(c.runDir(num), 'o2test.sock')], { encoding: 'utf8', timeout: 5000 });
}

/** The last lines of every process's stderr (daemons, mounts, workers), and every node's DLM state. */
export function dumpLogs(c: O2cbCluster, lines = 40): string {
  const logs = c.world.processes().map((x) => `--- ${x.label} (pid ${x.pid}${x.running ? '' : `, exited ${JSON.stringify(x.exitStatus)}`})\n${x.stderr().split('\n').slice(-lines).join('\n')}`).join('\n');
  const dumps = c.world.nodes.map((n) => {
    const r = dlmDump(c, n.num);
    return `--- dlm dump of node ${n.num}\n${(r.stdout || r.stderr || '').slice(0, 20_000)}`;
  }).join('\n');
  return `${logs}\n${dumps}`;
}

/**
 * Each node's lock manager as it sees the domain (members) and the resources whose name
 * contains `part` (say an inode's block number in hex), for a failure message.
 */
export function dlmStateOf(c: O2cbCluster, part: string): string {
  return c.world.nodes.map((n) => {
    const r = dlmDump(c, n.num);
    const found: string[] = [];
    const walk = (x: unknown): void => {
      if (Array.isArray(x)) x.forEach(walk);
      else if (x && typeof x === 'object') {
        const o = x as Record<string, unknown>;
        if (Array.isArray(o.resources)) {
          found.push(`members ${JSON.stringify(o.members)} state ${String(o.state)}`);
          for (const res of o.resources as Array<{ name: string }>) if (res.name.includes(part)) found.push(JSON.stringify(res));
        } else Object.values(o).forEach(walk);
      }
    };
    try {
      walk(JSON.parse(r.stdout));
    } catch {
      found.push(`no dump: ${(r.stdout || r.stderr || '').slice(0, 200)}`);
    }
    return `--- node ${n.num}\n${found.join('\n')}`;
  }).join('\n');
}

/** Bounds one step; on timeout the error carries every daemon's, mount's and worker's log. */
export async function step<T>(c: O2cbCluster, what: string, p: Promise<T>, ms = 45_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms} ms\n${dumpLogs(c)}`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** `o2fs umount`, bounded; aborts the FUSE connection if that fails. The server's exit code. */
export async function unmount(m: Mount, timeoutMs = 60_000): Promise<number | null> {
  if (!isFuseMounted(m.mp)) return m.server.exitStatus?.code ?? null;
  const r = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [O2FS, 'umount', m.mp], { env: nodeEnv(), stdio: 'ignore' });
    const timer = setTimeout(() => { p.kill('SIGKILL'); }, timeoutMs);
    p.on('exit', (code) => { clearTimeout(timer); resolve(code); });
  });
  if (r !== 0) await abortFuse(m.mp).catch(() => undefined);
  await m.server.exited;
  return m.server.exitStatus?.code ?? null;
}

let pythonPath: string | null = null;
/** The real interpreter (not a pyenv shim: the workers start faster). */
export function python(): string {
  if (pythonPath === null) {
    try {
      pythonPath = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8', timeout: 10_000 }).trim() || 'python3';
    } catch {
      pythonPath = 'python3';
    }
  }
  return pythonPath;
}

// A worker runs python snippets sent as JSON lines: `args` holds the arguments, `S` persists
// between snippets (open descriptors), the snippet leaves its result in `R`. An OSError that
// escapes the snippet comes back as its errno name.
const WORKER = String.raw`
import sys, os, json, errno, traceback, time
S = {}
def en(e):
    return errno.errorcode.get(e.errno, str(e.errno))
for line in sys.stdin:
    req = json.loads(line)
    g = {'os': os, 'errno': errno, 'time': time, 'json': json, 'en': en, 'args': req.get('args') or {}, 'S': S, 'R': None}
    try:
        exec(req['code'], g)
        out = {'id': req['id'], 'ok': True, 'r': g['R']}
    except OSError as e:
        out = {'id': req['id'], 'ok': False, 'errno': en(e), 'msg': str(e)}
    except Exception:
        out = {'id': req['id'], 'ok': False, 'errno': None, 'msg': traceback.format_exc()}
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
`;

export interface WorkerReply<T> {
  ok: boolean;
  r: T;
  errno: string | null;
  msg?: string;
}

export class PyWorker {
  private nextId = 1;
  private buf = '';
  private readonly pending = new Map<number, (r: WorkerReply<unknown>) => void>();
  readonly proc: ManagedProcess;

  constructor(readonly c: O2cbCluster, readonly node: number, readonly mp: string, label: string) {
    this.proc = c.world.spawn(node, python(), ['-u', '-c', WORKER], { stdin: 'pipe', label });
    this.proc.child.stdout?.on('data', (b: Buffer) => this.onData(b));
    void this.proc.exited.then(() => {
      for (const [, resolve] of this.pending) resolve({ ok: false, r: null, errno: null, msg: `worker ${label} exited: ${JSON.stringify(this.proc.exitStatus)}\n${this.proc.stderr()}` });
      this.pending.clear();
    });
  }

  private onData(b: Buffer): void {
    this.buf += b.toString('utf8');
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let msg: WorkerReply<unknown> & { id: number };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      const resolve = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      resolve?.(msg);
    }
  }

  /** Runs a snippet; resolves with its reply (an OSError is a reply, not a rejection). */
  call<T = unknown>(code: string, args: Record<string, unknown> = {}): Promise<WorkerReply<T>> {
    if (!this.proc.running) return Promise.reject(new Error(`worker ${this.proc.label} is not running: ${this.proc.stderr()}`));
    const id = this.nextId++;
    return new Promise<WorkerReply<T>>((resolve) => {
      this.pending.set(id, resolve as (r: WorkerReply<unknown>) => void);
      this.proc.child.stdin?.write(JSON.stringify({ id, code, args }) + '\n');
    });
  }

  /** As call(), but a failure (OSError or other) rejects. */
  async ok<T = unknown>(code: string, args: Record<string, unknown> = {}): Promise<T> {
    const r = await this.call<T>(code, args);
    if (!r.ok) throw new Error(`worker ${this.proc.label}: ${r.errno ?? ''} ${r.msg ?? ''}`);
    return r.r;
  }

  close(): void {
    this.proc.child.stdin?.end();
  }
}

export interface TreeEntry {
  path: string;
  ino: number;
  dir: boolean;
  nlink: number;
  size: number;
}

/**
 * Walks a tree from one mount point (lstat, no symlinks followed; asynchronous, so a step()
 * around it stays bounded), limited in depth and entries so that a directory loop shows as
 * an error instead of a hang.
 */
export async function walk(root: string, maxDepth = 16, maxEntries = 100_000): Promise<{ entries: TreeEntry[]; errors: string[] }> {
  const entries: TreeEntry[] = [];
  const errors: string[] = [];
  const seenDirs = new Set<number>();
  const rec = async (rel: string, depth: number): Promise<void> => {
    if (depth > maxDepth) {
      errors.push(`${rel}: deeper than ${maxDepth} (a loop?)`);
      return;
    }
    let names: string[];
    try {
      names = await fsp.readdir(path.join(root, rel));
    } catch (e) {
      errors.push(`readdir ${rel}: ${(e as NodeJS.ErrnoException).code}`);
      return;
    }
    for (const n of names.sort()) {
      if (entries.length >= maxEntries) {
        errors.push(`more than ${maxEntries} entries`);
        return;
      }
      const p = rel ? `${rel}/${n}` : n;
      let s;
      try {
        s = await fsp.lstat(path.join(root, p));
      } catch (e) {
        errors.push(`stat ${p}: ${(e as NodeJS.ErrnoException).code}`);
        continue;
      }
      entries.push({ path: p, ino: s.ino, dir: s.isDirectory(), nlink: s.nlink, size: s.size });
      if (s.isDirectory()) {
        if (seenDirs.has(s.ino)) {
          errors.push(`directory inode ${s.ino} reached twice (at ${p}): a loop or a second link`);
          continue;
        }
        seenDirs.add(s.ino);
        await rec(p, depth + 1);
      }
    }
  };
  await rec('', 0);
  return { entries, errors };
}

/** Floats in [0, 1) from the project's seeded PRNG, so a failing run can be replayed from its seed. */
export function prng(seed: number): () => number {
  const r = new Prng(seed);
  return () => r.float();
}
