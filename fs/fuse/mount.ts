// Mounting and unmounting a FUSE filesystem without libfuse: open /dev/fuse, hand the
// descriptor to mount(8) as fd 3, and let it call mount(2) with "fd=3,rootmode=...". The
// kernel sends INIT on that descriptor as soon as mount(2) returns; a FuseSession answers it.
//
//   mount -i -t fuse.<subtype> -o fd=3,rootmode=40000,user_id=U,group_id=G[,allow_other]
//         [,default_permissions][,ro][,max_read=N] <fsName> <mountpoint>
//
// `-i` keeps mount(8) from running /sbin/mount.fuse.<subtype> helpers. Needs root (or
// CAP_SYS_ADMIN in the mount namespace).
//
// Every path here avoids touching the mounted filesystem itself (no stat/realpath of the
// mountpoint): a hung server would hang the caller. Mounts are found in /proc/self/mountinfo
// by the absolute path given at mount time (path.resolve, no symlink resolution).
import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface MountFuseOptions {
  /** The "source" shown in /proc/mounts and df (e.g. the device or volume name). */
  fsName: string;
  /** Type becomes fuse.<subtype>. Default 'o2fs'. */
  subtype?: string;
  /** Let users other than the mounting one access the mount (allow_other). */
  allowOther?: boolean;
  /** Let the kernel check permissions from the mode bits (default_permissions). */
  defaultPermissions?: boolean;
  readOnly?: boolean;
  /** max_read=N mount option; absent = no limit beyond max_pages. */
  maxReadBytes?: number;
  /** More -o options, e.g. ['nosuid', 'nodev']. */
  extraOptions?: readonly string[];
  /** Bound on the mount(8) run. Default 10 s. */
  timeoutMs?: number;
}

/** mount(8)/umount(8) failed or timed out. */
export class MountCommandError extends Error {
  constructor(message: string, readonly exitCode: number | null, readonly stderr: string) {
    super(message);
    this.name = 'MountCommandError';
  }
}

const FUSE_DEVICE = '/dev/fuse';
const FUSECTL_DIR = '/sys/fs/fuse/connections';
const COMMAND_TIMEOUT_MS_DEFAULT = 10_000;
const STDERR_KEPT_MAX_BYTES = 16 * 1024;
const ABORT_ATTEMPTS_MAX = 3;

function checkOptionValue(what: string, value: string): void {
  if (value.length === 0 || /[,\s\0=]/.test(value)) throw new RangeError(`${what} ${JSON.stringify(value)} may not be empty or contain , = NUL or spaces`);
}

/** The -o option string mountFuse passes (exported for tests). */
export function fuseMountOptions(opts: MountFuseOptions, uid: number, gid: number): string {
  const o = ['fd=3', 'rootmode=40000', `user_id=${uid}`, `group_id=${gid}`];
  if (opts.allowOther) o.push('allow_other');
  if (opts.defaultPermissions) o.push('default_permissions');
  if (opts.readOnly) o.push('ro');
  if (opts.maxReadBytes !== undefined) {
    if (!(Number.isInteger(opts.maxReadBytes) && opts.maxReadBytes > 0)) throw new RangeError(`maxReadBytes ${opts.maxReadBytes}`);
    o.push(`max_read=${opts.maxReadBytes}`);
  }
  for (const extra of opts.extraOptions ?? []) {
    if (extra.length === 0 || /[,\s\0]/.test(extra)) throw new RangeError(`mount option ${JSON.stringify(extra)}`);
    o.push(extra);
  }
  return o.join(',');
}

/** Runs a command with a time limit; rejects with MountCommandError unless it exits 0. */
function run(command: string, args: string[], stdio: StdioOptions, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < STDERR_KEPT_MAX_BYTES) stderr += chunk.toString();
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // this child, by its pid
      reject(new MountCommandError(`${command} ${args.join(' ')}: timed out after ${timeoutMs} ms`, null, stderr));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new MountCommandError(`${command}: ${err.message}`, null, stderr));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new MountCommandError(`${command} ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim()}`, code, stderr));
    });
  });
}

/**
 * Mounts a FUSE filesystem at `mountpoint` and returns the /dev/fuse descriptor to serve it
 * with (new FuseSession(fd, ops).start()). The caller owns the descriptor.
 */
export async function mountFuse(mountpoint: string, opts: MountFuseOptions): Promise<number> {
  const subtype = opts.subtype ?? 'o2fs';
  checkOptionValue('subtype', subtype);
  if (opts.fsName.length === 0 || opts.fsName.includes('\0')) throw new RangeError('fsName must be non-empty');
  const target = path.resolve(mountpoint);
  const options = fuseMountOptions(opts, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
  const fd = fs.openSync(FUSE_DEVICE, fs.constants.O_RDWR);
  try {
    // The child gets the descriptor as its fd 3 (libuv dup2s it; CLOEXEC on ours is irrelevant).
    await run('mount', ['-i', '-t', `fuse.${subtype}`, '-o', options, opts.fsName, target],
      ['ignore', 'ignore', 'pipe', fd], opts.timeoutMs ?? COMMAND_TIMEOUT_MS_DEFAULT);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  return fd;
}

export interface MountInfoLine {
  mountpoint: string;
  fstype: string;
  /** st_dev of the mount: for FUSE, major 0 and minor = the connection id. */
  major: number;
  minor: number;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** /proc/self/mountinfo, parsed (mount point, type, device numbers). */
export function readMountInfo(): MountInfoLine[] {
  const out: MountInfoLine[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line.length === 0) continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-');
    if (sep < 6 || fields.length < sep + 2) continue;
    const [major, minor] = (fields[2] ?? '').split(':').map((n) => Number.parseInt(n, 10));
    if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) continue;
    out.push({ mountpoint: unescapeMountPath(fields[4] ?? ''), fstype: fields[sep + 1] ?? '', major, minor });
  }
  return out;
}

function findFuseMount(mountpoint: string): MountInfoLine | undefined {
  const target = path.resolve(mountpoint);
  const matches = readMountInfo().filter((m) => m.mountpoint === target && (m.fstype === 'fuse' || m.fstype.startsWith('fuse.')));
  return matches[matches.length - 1]; // the top of a stack of mounts
}

/** Is a FUSE filesystem mounted at `mountpoint` (in this mount namespace)? */
export function isFuseMounted(mountpoint: string): boolean {
  return findFuseMount(mountpoint) !== undefined;
}

/** The /sys/fs/fuse/connections/<id> id of the FUSE mount at `mountpoint`, if any. */
export function fuseConnectionId(mountpoint: string): number | undefined {
  const m = findFuseMount(mountpoint);
  // fusectl names connections by the kernel dev_t; for an anonymous device (major 0) that is the minor.
  return m && m.major === 0 ? m.minor : undefined;
}

/** Where the kernel keeps the readahead of a mount's backing device (KiB; text). */
function readaheadPath(mountpoint: string): string {
  const m = findFuseMount(mountpoint);
  if (!m) throw new Error(`no FUSE mount at ${mountpoint}`);
  return `/sys/class/bdi/${m.major}:${m.minor}/read_ahead_kb`;
}

/** The readahead (KiB) of the FUSE mount at `mountpoint`. */
export function readaheadKb(mountpoint: string): number {
  const kb = Number(fs.readFileSync(readaheadPath(mountpoint), 'utf8').trim());
  if (!Number.isInteger(kb) || kb < 0) throw new Error(`unreadable read_ahead_kb for ${mountpoint}`);
  return kb;
}

/**
 * Sets the readahead of the FUSE mount at `mountpoint`. The kernel starts a FUSE mount at
 * 128 KiB, whatever max_readahead INIT answers (it can only lower it), so a sequential read
 * reaches the server as 128 KiB READs; a window as large as max_pages lets each READ carry
 * up to 1 MiB. Call after INIT, which would lower it again. Throws the sysfs write's error.
 */
export function setReadaheadKb(mountpoint: string, kb: number): void {
  if (!Number.isInteger(kb) || kb < 0) throw new RangeError(`readahead of ${kb} KiB`);
  fs.writeFileSync(readaheadPath(mountpoint), `${kb}\n`);
}

/**
 * Unmounts the FUSE filesystem at `mountpoint` (umount -i [-l]); a no-op if none is mounted.
 * Lazy: detach now, finish when the last user leaves. The server's reads then end with
 * ENODEV and its session's `closed` resolves.
 */
export async function unmountFuse(mountpoint: string, opts: { lazy?: boolean; timeoutMs?: number } = {}): Promise<void> {
  if (!isFuseMounted(mountpoint)) return;
  const args = ['-i', ...(opts.lazy ? ['-l'] : []), path.resolve(mountpoint)];
  await run('umount', args, ['ignore', 'ignore', 'pipe'], opts.timeoutMs ?? COMMAND_TIMEOUT_MS_DEFAULT);
}

function fusectlMounted(): boolean {
  return readMountInfo().some((m) => m.mountpoint === FUSECTL_DIR && m.fstype === 'fusectl');
}

/**
 * Aborts the FUSE connection behind `mountpoint` (every pending and future request fails with
 * ENOTCONN, the server's reads with ENODEV), then lazily unmounts it. For hung servers and
 * self-fencing. Mounts fusectl at /sys/fs/fuse/connections if needed, and unmounts it again
 * if it was not there before. A no-op if nothing is mounted at `mountpoint`.
 */
export async function abortFuse(mountpoint: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS_DEFAULT;
  const id = fuseConnectionId(mountpoint);
  // Another process may mount/unmount fusectl concurrently (it does the same dance): if our
  // write finds no connection directory while fusectl is gone, try again, a bounded number of times.
  for (let attempt = 1; id !== undefined && attempt <= ABORT_ATTEMPTS_MAX; attempt++) {
    const mountedHere = !fusectlMounted();
    if (mountedHere) await run('mount', ['-t', 'fusectl', 'fusectl', FUSECTL_DIR], ['ignore', 'ignore', 'pipe'], timeoutMs);
    try {
      await fs.promises.writeFile(path.join(FUSECTL_DIR, String(id), 'abort'), '1');
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      // ENOENT with fusectl mounted: the connection ended meanwhile; nothing left to abort.
      if (fusectlMounted()) break;
    } finally {
      if (mountedHere) await run('umount', ['-i', FUSECTL_DIR], ['ignore', 'ignore', 'pipe'], timeoutMs).catch(() => undefined);
    }
  }
  await unmountFuse(mountpoint, { lazy: true, timeoutMs });
}
