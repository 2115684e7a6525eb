// Test harness for real o2fs mounts: makes a volume, mounts it through `o2fs mount` (a
// separate serving process, as a user would), and always cleans up: unmount, abort a hung
// connection, kill the server by pid. Tests then use the mount from this process (which
// does not serve it) or from child processes.
import { spawnSync, SpawnSyncOptions } from 'node:child_process';
import { mkdtempSync, promises as fsp, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { abortFuse, isFuseMounted } from '../../fs/fuse/mount';

export const TOOLS = path.resolve(__dirname, '../../tools');
const RUN_TIMEOUT_MS = 120_000;

export interface Run {
  status: number | null;
  out: string;
  err: string;
}

export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): Run {
  const r = spawnSync(cmd, args, { timeout: RUN_TIMEOUT_MS, maxBuffer: 256 << 20, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout?.toString() ?? '', err: r.stderr?.toString() ?? '' };
}

export function tool(name: 'mkfs' | 'fsck' | 'debugfs' | 'o2fs', args: string[], opts: SpawnSyncOptions = {}): Run {
  return run(process.execPath, [path.join(TOOLS, `${name}.js`), ...args], opts);
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export function tempDir(t: Teardown, prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

export function pidFileOf(mountpoint: string): string {
  return path.join('/run/o2fs', `${path.resolve(mountpoint).replace(/%/g, '%25').replace(/\//g, '%2F')}.pid`);
}

export function serverPid(mountpoint: string): number | null {
  try {
    return Number(readFileSync(pidFileOf(mountpoint), 'utf8').trim()) || null;
  } catch {
    return null;
  }
}

/** Unmounts however it takes; never throws. */
export async function forceCleanup(mountpoint: string): Promise<void> {
  const mp = path.resolve(mountpoint);
  const pid = serverPid(mp);
  if (isFuseMounted(mp)) {
    const r = tool('o2fs', ['umount', mp], { timeout: 30_000 });
    if (r.status !== 0 && isFuseMounted(mp)) {
      await abortFuse(mp).catch(() => undefined);
      run('umount', ['-l', mp]);
    }
  }
  if (pid) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export interface Mounted {
  img: string;
  mp: string;
  pid: number;
  umount(): Run;
}

/** mkfs + mount; cleanup registered on `t`. */
export async function mountFresh(t: Teardown, dir: string, o: { sizeBytes?: number; mkfsArgs?: string[]; options?: string } = {}): Promise<Mounted> {
  const img = path.join(dir, `vol-${Math.random().toString(36).slice(2)}.img`);
  const mk = tool('mkfs', ['-q', '--size', String(o.sizeBytes ?? 256 << 20), ...(o.mkfsArgs ?? []), img]);
  if (mk.status !== 0) throw new Error(`mkfs failed: ${mk.err}`);
  return mountExisting(t, img, path.join(dir, `mnt-${Math.random().toString(36).slice(2)}`), o.options);
}

export async function mountExisting(t: Teardown, img: string, mp: string, options?: string): Promise<Mounted> {
  await fsp.mkdir(mp, { recursive: true });
  t.teardown(() => forceCleanup(mp));
  const args = ['mount', ...(options ? ['-o', options] : []), img, mp];
  const r = tool('o2fs', args);
  if (r.status !== 0) throw new Error(`o2fs mount failed (${r.status}): ${r.err}`);
  const pid = serverPid(mp);
  if (!pid) throw new Error('mount has no pid file');
  return { img, mp, pid, umount: () => tool('o2fs', ['umount', mp]) };
}

/** Runs python3 code (as root, or as uid/gid with `as`) and parses its JSON output. */
export function py(code: string, o: { cwd?: string; as?: number } = {}): unknown {
  // Debian's python3: a per-user interpreter (pyenv under /root) is not reachable as another user.
  const args = o.as !== undefined ? ['setpriv', `--reuid=${o.as}`, `--regid=${o.as}`, '--clear-groups', '/usr/bin/python3', '-c', code] : ['/usr/bin/python3', '-c', code];
  const r = run(args[0], args.slice(1), { cwd: o.cwd });
  if (r.status !== 0) throw new Error(`python failed (${r.status}): ${r.err}`);
  return JSON.parse(r.out);
}

/** Asserts a clean fsck of an unmounted image (tap-style callback). */
export function fsckClean(img: string): Run {
  return tool('fsck', ['-n', img]);
}
