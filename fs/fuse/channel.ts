// The byte pipe between a FuseSession and the kernel: one /dev/fuse descriptor.
//
// Reading: read(2) on /dev/fuse blocks until the kernel has a request, and Node offers no way to
// poll a character device, so reads run on libuv's threadpool (fs.read). Each outstanding read
// holds one threadpool thread for as long as the mount is idle; the session keeps a small fixed
// number of them (FuseSessionOptions.readers, default 2). The process serving a mount should
// therefore raise UV_THREADPOOL_SIZE (default 4) to readers + 1 notification writer + whatever
// the filesystem's own fs/crypto work needs -- set it in the environment before Node starts,
// or as the very first statement of the entry script, before any threadpool work.
//
// Writing a reply never blocks in the kernel (it copies into the waiting request), so replies
// are written synchronously from the event loop: no threadpool slot, no reordering. A
// notification may block (INVAL_INODE waits for page locks and writeback, INVAL_ENTRY for the
// directory lock, possibly held by a request we have not answered yet), so notifications are
// written on the threadpool and the event loop keeps serving.
import * as fs from 'node:fs';
import { DevPoll } from './devpoll';

export interface FuseChannel {
  /** Reads one whole request into `buf`; resolves with its length. Rejects with an errno error (code 'ENODEV' = unmounted). */
  read(buf: Buffer): Promise<number>;
  /** Writes one reply as a single message. Throws an errno error (e.g. ENOENT: the request is gone). */
  writeReply(chunks: readonly Buffer[]): void;
  /** Writes one notification as a single message, off the event loop. */
  writeNotify(chunks: readonly Buffer[]): Promise<void>;
  /**
   * Optional: tries, for at most `budgetNs` of busy polling, to hand the next request to a
   * waiting read without going back to the event loop; true if one came, null if no read
   * was waiting (nothing to poll for).
   */
  pollBriefly?(budgetNs: number): boolean | null;
  close(): void;
}

export class DeviceChannel implements FuseChannel {
  private closed = false;

  constructor(readonly fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`bad /dev/fuse descriptor ${fd}`);
  }

  read(buf: Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      // position null: read(2), not pread(2) -- /dev/fuse has no file position.
      fs.read(this.fd, buf, 0, buf.length, null, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
    });
  }

  writeReply(chunks: readonly Buffer[]): void {
    const expectedBytes = totalLength(chunks);
    const writtenBytes = fs.writevSync(this.fd, chunks as Buffer[]);
    // /dev/fuse takes a message whole or fails it; a short write would be a kernel bug.
    if (writtenBytes !== expectedBytes) throw new Error(`short write to /dev/fuse: ${writtenBytes}/${expectedBytes}`);
  }

  writeNotify(chunks: readonly Buffer[]): Promise<void> {
    const expectedBytes = totalLength(chunks);
    return new Promise((resolve, reject) => {
      fs.writev(this.fd, chunks as Buffer[], (err, writtenBytes) => {
        if (err) reject(err);
        else if (writtenBytes !== expectedBytes) reject(new Error(`short notify write: ${writtenBytes}/${expectedBytes}`));
        else resolve();
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

const EAGAIN = 11;

/**
 * A DeviceChannel whose reads never leave the event loop: the descriptor is non-blocking and
 * the devpoll addon wakes the loop when the kernel queues a request. A read that finds
 * nothing waits in `waiting` (FIFO); the watcher runs only while someone waits, since it is
 * level-triggered and would otherwise spin on a request nobody is ready to take.
 */
export class PollChannel extends DeviceChannel {
  private readonly waiting: Array<{ buf: Buffer; resolve: (n: number) => void; reject: (e: Error) => void }> = [];
  private readonly watcher: object;
  private watching = true;
  private ended = false;

  constructor(fd: number, private readonly dp: DevPoll) {
    super(fd);
    dp.setNonBlocking(fd);
    this.watcher = dp.watch(fd, () => this.drain());
  }

  override read(buf: Buffer): Promise<number> {
    if (this.ended) return Promise.reject(errnoError('ENODEV', -19));
    if (this.waiting.length === 0) {
      const n = this.dp.read(this.fd, buf);
      if (n >= 0) return Promise.resolve(n);
      if (n !== -EAGAIN) return Promise.reject(errnoError(errnoName(n), n));
    }
    return new Promise((resolve, reject) => {
      this.waiting.push({ buf, resolve, reject });
      if (!this.watching) {
        this.watching = true;
        this.dp.resume(this.watcher);
      }
    });
  }

  /**
   * Busy-polls for the next request on behalf of the first waiting read. Waking a sleeping
   * thread costs tens of microseconds on a virtual machine (the vCPU halts and must be
   * kicked): a client that sends its next request right after our reply finds us here.
   */
  pollBriefly(budgetNs: number): boolean | null {
    if (this.ended || this.waiting.length === 0) return null;
    const deadline = process.hrtime.bigint() + BigInt(budgetNs);
    do {
      if (this.serveFirstWaiting()) return true;
    } while (process.hrtime.bigint() < deadline);
    return false;
  }

  /** Reads into the first waiting read's buffer and settles it; false if nothing was queued. */
  private serveFirstWaiting(): boolean {
    const n = this.dp.read(this.fd, this.waiting[0].buf);
    if (n === -EAGAIN) return false;
    const w = this.waiting.shift()!;
    if (n >= 0) w.resolve(n);
    else w.reject(errnoError(errnoName(n), n));
    return true;
  }

  private drain(): void {
    while (this.waiting.length > 0) {
      if (!this.serveFirstWaiting()) return;
    }
    if (this.watching) {
      this.watching = false;
      this.dp.pause(this.watcher);
    }
  }

  override close(): void {
    if (!this.ended) {
      this.ended = true;
      this.dp.unwatch(this.watcher);
      for (const w of this.waiting.splice(0)) w.reject(errnoError('ENODEV', -19));
    }
    super.close();
  }
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 4: 'EINTR', 5: 'EIO', 11: 'EAGAIN', 19: 'ENODEV', 22: 'EINVAL', 103: 'ECONNABORTED' };

function errnoName(negErrno: number): string {
  return ERRNO_NAMES[-negErrno] ?? `E${-negErrno}`;
}

function errnoError(code: string, negErrno: number): Error {
  return Object.assign(new Error(`read /dev/fuse: ${code}`), { code, errno: negErrno });
}

export function totalLength(chunks: readonly Buffer[]): number {
  let sum = 0;
  for (const c of chunks) sum += c.length;
  return sum;
}
