// `o2fs mount` / `o2fs umount`, and mount.fuse.o2fs (what `mount -t fuse.o2fs` and
// /etc/fstab run). A mount is one Node process per volume: it opens the device, mounts the
// volume (slot, stack), mounts FUSE and serves it until the kernel connection ends (umount,
// abort) or it is told to stop (SIGTERM, SIGINT: it unmounts itself), then releases the
// volume cleanly. By default it daemonizes: the command returns once the mount is ready.
//
// The serving process keeps a pid file at /run/o2fs/<mountpoint path, "/" as "%2F">.pid so
// `o2fs umount` can wait for it to finish releasing the volume.
import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, mkdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { openDevice } from '../blockdev/open';
import { FsError } from '../fs/errors';
import { ERRORS_POLICY, ErrorsPolicy } from '../fs/format/constants';
import { FuseSession, POLL_AFTER_REPLY_US_DEFAULT } from '../fs/fuse/session';
import { abortFuse, isFuseMounted, mountFuse, setReadaheadKb, unmountFuse } from '../fs/fuse/mount';
import { INODE_LOCKS_CACHED_DEFAULT, INODE_LOCKS_CACHED_MIN } from '../fs/inode-locks';
import { PosixFs } from '../fs/posix';
import { MountedVolume } from '../fs/super';
import { Tool, UsageError, parseCommandLine } from './cli';

// FUSE reads hold libuv threadpool threads while they wait for requests, so the pool must
// be larger than the number of readers. libuv reads UV_THREADPOOL_SIZE once, when the pool
// starts, which may already have happened: only a size set in our startup environment (the
// daemon is started with one) is trusted; otherwise the pool has libuv's default of 4.
const POOL_AT_STARTUP = Number(process.env.UV_THREADPOOL_SIZE) || 4;
process.env.UV_THREADPOOL_SIZE ??= '16';
/** FUSE readers: up to 4, always leaving two pool threads for disk I/O. */
const FUSE_READERS = Math.max(1, Math.min(4, POOL_AT_STARTUP - 2));

export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
export const EXIT_ERROR = 32;
const PID_DIR = '/run/o2fs';
const READY_TIMEOUT_MS = 60_000;
const EXIT_WAIT_MS = 60_000;
const LOG_FILE = '/var/log/o2fs.log';
/** Default readahead=: one window fills one largest READ (max_pages 256 = 1 MiB). */
const READAHEAD_KB_DEFAULT = 1024;
const READAHEAD_KB_MAX = 65536;

export interface MountOpts {
  readOnly: boolean;
  errors?: ErrorsPolicy;
  allowOther: boolean;
  defaultPermissions: boolean;
  commitSec: number;
  nocluster: boolean;
  noKernelCache: boolean;
  lockCacheInodes?: number;
  /** FuseSessionOptions.pollAfterReplyUs (mount option replypoll=US). */
  replyPollUs?: number;
  /** The mount's readahead in KiB (readahead=KIB); 0 leaves the kernel's 128 KiB. */
  readaheadKb: number;
}

/** Options mount(8) and fstab pass that mean nothing to o2fs (or are its defaults). */
const IGNORED = new Set(['defaults', 'rw', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'nouser', 'users', 'dev', 'exec', 'suid', 'async', 'relatime', 'atime', 'local', 'heartbeat=none', 'nodev', 'nosuid', 'noexec']);

export function parseMountOptions(list: string[]): MountOpts {
  const o: MountOpts = { readOnly: false, allowOther: false, defaultPermissions: true, commitSec: 5, nocluster: false, noKernelCache: false, readaheadKb: READAHEAD_KB_DEFAULT };
  for (const opt of list.flatMap((s) => s.split(',')).filter((s) => s.length > 0)) {
    const [key, value] = opt.split('=', 2) as [string, string | undefined];
    if (key === 'ro') o.readOnly = true;
    else if (key === 'errors') {
      if (!value || !(ERRORS_POLICY as readonly string[]).includes(value)) throw new UsageError(`errors= takes ${ERRORS_POLICY.join(', ')}`);
      o.errors = value as ErrorsPolicy;
    } else if (key === 'allow_other') o.allowOther = true;
    else if (key === 'default_permissions') o.defaultPermissions = true;
    else if (key === 'nodefault_permissions') o.defaultPermissions = false;
    else if (key === 'commit') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1 || n > 3600) throw new UsageError('commit= takes whole seconds, 1..3600');
      o.commitSec = n;
    } else if (key === 'nocluster') o.nocluster = true;
    else if (key === 'nokernelcache') o.noKernelCache = true;
    else if (key === 'lockcache') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < INODE_LOCKS_CACHED_MIN || n > 1e7) throw new UsageError(`lockcache= takes a number of inodes, ${INODE_LOCKS_CACHED_MIN}..10000000`);
      o.lockCacheInodes = n;
    } else if (key === 'replypoll') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0 || n > 1000) throw new UsageError('replypoll= takes microseconds, 0..1000');
      o.replyPollUs = n;
    } else if (key === 'readahead') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0 || n > READAHEAD_KB_MAX) throw new UsageError(`readahead= takes KiB, 0..${READAHEAD_KB_MAX}`);
      o.readaheadKb = n;
    }
    else if (!IGNORED.has(opt) && !IGNORED.has(key)) throw new UsageError(`unknown mount option ${JSON.stringify(opt)}`);
  }
  return o;
}

function pidFile(mountpoint: string): string {
  return path.join(PID_DIR, `${path.resolve(mountpoint).replace(/%/g, '%25').replace(/\//g, '%2F')}.pid`);
}

/** Serves a mount in this process until it ends; resolves with the exit status. */
export async function serve(device: string, mountpoint: string, o: MountOpts, onReady: () => void, daemon = false): Promise<number> {
  let ready = false;
  // A daemon's stderr goes to the starting command until the mount is ready, then to a log.
  const log = (l: string): void => {
    const line = `${new Date().toISOString()} o2fs[${path.resolve(mountpoint)}]: ${l}\n`;
    if (daemon && ready) appendFileSync(LOG_FILE, line);
    else process.stderr.write(line);
  };
  const dev = await openDevice(device, { readOnly: o.readOnly });
  let m: MountedVolume;
  // Fencing (the cluster stack lost us: quorum, heartbeat or its daemon): no more device
  // I/O from this process, the FUSE connection aborted, exit at once (DESIGN.md §5).
  const fence = (reason: string): void => {
    log(`FENCED: ${reason}; aborting the mount and exiting`);
    void abortFuse(mountpoint).catch(() => undefined).finally(() => process.exit(EXIT_ERROR));
    setTimeout(() => process.exit(EXIT_ERROR), 2000).unref();
  };
  try {
    m = await MountedVolume.mount(dev, { readOnly: o.readOnly, errors: o.errors, nocluster: o.nocluster, commitSec: o.commitSec, lockCacheInodes: o.lockCacheInodes, log, devicePath: path.resolve(device), onFenced: fence });
  } catch (e) {
    await dev.close();
    throw e;
  }
  // A cluster mount lets the kernel cache names and attributes, which fs/inode-locks.ts
  // invalidates before an inode lock lets another node change anything; pages are not
  // cached (every read and write comes to us). -o nokernelcache: nothing is cached.
  const noKernelCache = o.noKernelCache;
  const uncachedData = m.cluster !== null;
  if (m.cluster) log(`cluster mount on ${m.conn.stack} (node ${m.conn.thisNode}, slot ${m.slot}): kernel caches ${noKernelCache ? 'nothing' : 'names and attributes, no pages'}`);
  const timeoutMs = noKernelCache ? 0 : 1000;
  const fs = new PosixFs(m, { entryTimeoutMs: timeoutMs, attrTimeoutMs: timeoutMs, keepCache: !noKernelCache && !uncachedData });
  let fd: number;
  try {
    fd = await mountFuse(mountpoint, { fsName: path.resolve(device), allowOther: o.allowOther, defaultPermissions: o.defaultPermissions, readOnly: o.readOnly });
  } catch (e) {
    await m.unmount();
    await dev.close();
    throw e;
  }
  const session = new FuseSession(fd, fs, { noKernelCache, uncachedData, log, readers: FUSE_READERS, pollAfterReplyUs: o.replyPollUs });
  fs.attachKernel({
    invalEntry: (parent, name) => session.notifyInvalEntry(parent, name),
    invalidateAttrsNow: (ino) => session.invalidateAttrsNow(ino),
    expireAllNamesNow: () => session.expireAllNamesNow(),
    get canExpireAllNames() { return session.canExpireAllNames; },
  });
  session.start();
  let stopping = false;
  const stop = (why: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${why}: unmounting`);
    unmountFuse(mountpoint).catch(() => abortFuse(mountpoint)).catch((e) => log(`could not unmount: ${(e as Error).message}`));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let panicked = false;
  process.on('o2fs-panic' as 'exit', () => {
    panicked = true;
    log('errors=panic: aborting the mount');
    void abortFuse(mountpoint).catch(() => undefined);
  });
  try {
    await session.ready;
    if (o.readaheadKb > 0) {
      try {
        setReadaheadKb(mountpoint, o.readaheadKb);
      } catch (e) {
        log(`warning: could not set readahead to ${o.readaheadKb} KiB (${(e as Error).message}); sequential reads come in 128 KiB requests`);
      }
    }
    mkdirSync(PID_DIR, { recursive: true });
    writeFileSync(pidFile(mountpoint), `${process.pid}\n`);
    onReady();
    ready = true;
    await session.closed;
  } finally {
    rmSync(pidFile(mountpoint), { force: true });
  }
  if (panicked) return EXIT_ERROR;
  const stats = session.stats;
  if (m.cluster) {
    const ops = Object.entries(stats.byOpcode).sort((a, b) => b[1] - a[1]).map(([op, n]) => `${op} ${n}`);
    log(`requests served: ${ops.join(', ')}`);
  }
  log(`${stats.requests} requests; polls after a reply: ${stats.pollsFound} found the next request, ${stats.pollsMissed} did not`);
  await m.unmount();
  await dev.close();
  log('unmounted cleanly');
  return EXIT_OK;
}

const MOUNT_HELP = `Usage: o2fs mount [-f] [-o OPTIONS] DEVICE MOUNTPOINT
       mount -t fuse.o2fs DEVICE MOUNTPOINT [-o OPTIONS]

Mounts the o2fs volume on DEVICE (an image file or block device) at MOUNTPOINT.
The command returns once the mount is ready; the serving process keeps running
until the volume is unmounted.

  -f            stay in the foreground (serve from this process)
  -o OPTIONS    comma-separated mount options:
      ro                   read-only
      errors=POLICY        on metadata corruption: remount-ro (default), continue, panic
      allow_other          let every user access the mount (permissions still apply)
      default_permissions  the kernel checks permissions (default; nodefault_permissions off)
      commit=SECONDS       journal commit interval: changes are durable within it
                           (default 5; fsync and O_SYNC commit at once)
      nocluster            mount a volume formatted for a cluster stack without it
                           (only if no other node can have it mounted)
      nokernelcache        no kernel caching of names, attributes or pages
      lockcache=N          cluster: keep the locks of at most N inodes cached (default ${INODE_LOCKS_CACHED_DEFAULT})
      replypoll=US         after answering a request, poll up to US microseconds for
                           the next one before sleeping, while requests come that fast
                           (default ${POLL_AFTER_REPLY_US_DEFAULT}; 0 never)
      readahead=KIB        readahead window of the mount (default ${READAHEAD_KB_DEFAULT}: sequential
                           reads come as 1 MiB READs; 0 keeps the kernel's 128 KiB)
  -h, --help    this text

Exit status: 0 mounted (or, with -f, unmounted cleanly); 1 bad usage; 32 mount failure.
`;

export const mountTool: Tool = {
  name: 'o2fs mount',
  exitUsage: EXIT_USAGE,
  exitError: EXIT_ERROR,
  async run(argv) {
    const { values, positionals } = parseCommandLine(argv, {
      f: { type: 'boolean', short: 'f' },
      o: { type: 'string', short: 'o', multiple: true },
      n: { type: 'boolean', short: 'n' },
      s: { type: 'boolean', short: 's' },
      v: { type: 'boolean', short: 'v' },
      'ready-fd': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      process.stdout.write(MOUNT_HELP);
      return EXIT_OK;
    }
    if (positionals.length !== 2) throw new UsageError('expected DEVICE and MOUNTPOINT; see --help');
    const [device, mountpoint] = positionals;
    const opts = parseMountOptions(values.o ?? []);
    if (isFuseMounted(path.resolve(mountpoint))) throw new FsError('EBUSY', `${mountpoint} is already a FUSE mount`);
    if (values.f) {
      if (!values['ready-fd']) return serve(device, mountpoint, opts, () => undefined);
      process.stderr.on('error', () => undefined);
      return serve(device, mountpoint, opts, () => {
        writeSync(3, 'ready\n');
        closeSync(3);
      }, true);
    }
    return daemonize(argv);
  },
};

/** Starts `o2fs mount -f ...` detached; returns once it reports ready (or failed). */
async function daemonize(argv: string[]): Promise<number> {
  const script = path.join(__dirname, 'o2fs.js');
  const child = spawn(process.execPath, [script, 'mount', '-f', ...argv, '--ready-fd'], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, UV_THREADPOOL_SIZE: '16' },
  });
  let errText = '';
  child.stderr!.on('data', (d: Buffer) => {
    errText += d.toString();
  });
  const status = await new Promise<number>((resolve) => {
    const timer = setTimeout(() => {
      errText += 'mount did not become ready in time\n';
      child.kill('SIGTERM');
      resolve(EXIT_ERROR);
    }, READY_TIMEOUT_MS);
    (child.stdio[3] as NodeJS.ReadableStream).once('data', () => {
      clearTimeout(timer);
      resolve(EXIT_OK);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code === 0 ? EXIT_ERROR : code ?? EXIT_ERROR);
    });
  });
  if (status !== EXIT_OK) {
    process.stderr.write(errText);
    return status;
  }
  // The daemon's later messages go nowhere once we are gone; detach for good.
  child.stderr!.destroy();
  (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
  child.unref();
  return EXIT_OK;
}

const UMOUNT_HELP = `Usage: o2fs umount MOUNTPOINT

Unmounts an o2fs mount and waits for its process to release the volume. A mount
whose process died is cleared (the FUSE connection aborted, the mount point
detached). Exit status: 0 unmounted; 1 bad usage; 32 failure.
`;

export const umountTool: Tool = {
  name: 'o2fs umount',
  exitUsage: EXIT_USAGE,
  exitError: EXIT_ERROR,
  async run(argv) {
    const { values, positionals } = parseCommandLine(argv, { help: { type: 'boolean', short: 'h' } });
    if (values.help) {
      process.stdout.write(UMOUNT_HELP);
      return EXIT_OK;
    }
    if (positionals.length !== 1) throw new UsageError('expected MOUNTPOINT; see --help');
    const mp = path.resolve(positionals[0]);
    if (!isFuseMounted(mp)) throw new FsError('EINVAL', `${mp} is not a FUSE mount`);
    let pid: number | null = null;
    try {
      pid = Number(readFileSync(pidFile(mp), 'utf8').trim()) || null;
    } catch {
      pid = null;
    }
    const alive = pid !== null && processAlive(pid);
    if (alive) {
      await unmountFuse(mp).catch(async () => {
        await abortFuse(mp);
      });
      const deadline = Date.now() + EXIT_WAIT_MS;
      while (processAlive(pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (processAlive(pid!)) throw new FsError('EBUSY', `the mount process ${pid} did not finish within ${EXIT_WAIT_MS / 1000} s`);
    } else {
      // Nobody serves it: abort the connection and detach the mount point.
      await abortFuse(mp);
      rmSync(pidFile(mp), { force: true });
    }
    return EXIT_OK;
  },
};

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
