// A FUSE session: one kernel connection (/dev/fuse descriptor) served by one FuseOps.
//
// Lifecycle: construct on the descriptor mountFuse() returned, start(), await `ready` (INIT
// answered), serve; `closed` resolves once the kernel connection is gone (unmount, abort via
// /sys/fs/fuse/connections/N/abort, or DESTROY) and the descriptor is closed.
//
// Concurrency: `readers` reads are outstanding on the libuv threadpool at all times
// (channel.ts explains why and what that costs). Every request is handled asynchronously as
// soon as it is read, so many requests are in flight at once; at most `maxInFlight`, after
// which the readers pause until one finishes (a bound on memory, not on correctness: the
// kernel keeps the rest queued). Each in-flight request has an AbortController; INTERRUPT
// aborts it, and so does the end of the session.
//
// Errors: a handler's exception is turned into an errno reply in exactly one place
// (replyError): FsError -> its errno, Node system errors -> their code, AbortError -> EINTR,
// anything else -> EIO plus a log line. A malformed request gets EINVAL (or EIO if even the
// header is unusable and there is no unique to answer). Nothing a request does can crash
// the process.
import { constants as osConstants } from 'node:os';
import { FsError, errnoOf } from '../errors';
import { DeviceChannel, PollChannel, type FuseChannel } from './channel';
import { devPoll, devPollError } from './devpoll';
import {
  MalformedRequestError, decodeInHeader, decodeInitIn, encodeInitOut, encodeNotifyDelete, encodeNotifyInvalEntry,
  encodeNotifyInvalInode, encodeOutHeader, type InHeaderFields, readU64Number, requireBytes,
} from './codec';
import { HANDLERS, type HandlerEnv, type ReplyPayload } from './handlers';
import type { FuseOps, InitInfo, RequestContext } from './ops';
import {
  BatchForgetIn, ERRNO_REPLY_MAX, EXPIRE_ONLY, FUSE_KERNEL_VERSION, ForgetIn, ForgetOne, InHeader,
  InitFlag, InterruptIn, NAME_MAX_BYTES, NotifyCode, Opcode, OutHeader, PROTOCOL_MINOR_MAX,
  PROTOCOL_MINOR_MIN, REQUEST_HEADER_ROOM_BYTES, XATTR_SIZE_MAX_BYTES, initFlagNames, opcodeName,
} from './protocol';

const ERRNO = osConstants.errno;
const PAGE_BYTES = 4096; // x86_64/arm64-4k; max_pages below assumes it
const MIB = 1024 * 1024;
/** Requests up to this size are copied out so the reader keeps its big buffer. */
const COPY_OUT_MAX_BYTES = 64 * 1024;
/**
 * Busy-poll budget after a reply. Waking a sleeping event loop costs tens of microseconds on
 * the 2-vCPU VM we measure on: a warm lstat loop over 10,000 names (one LOOKUP each) ran at
 * 6,600-8,100/s sleeping between requests (median reply-to-next-request gap 91 us) and at
 * 15,000-16,500/s polling 100 us (30,000 polls: 29,685 found the next request).
 */
export const POLL_AFTER_REPLY_US_DEFAULT = 100;
/** Polls in a row that find nothing before polling stops; then one probe per this many replies. */
const POLL_MISSES_MAX = 2;
const POLL_PROBE_EVERY = 64;
/** Request buffers kept for reuse by the readers (each is max_write plus room for headers). */
const SPARE_BUFFERS_MAX = 4;
/** A reader gives up after this many consecutive failed reads of an unexpected kind. */
const READ_ERRORS_IN_A_ROW_MAX = 100;
/** ...and after this many consecutive benign retries (EINTR/EAGAIN/ENOENT). */
const READ_RETRIES_IN_A_ROW_MAX = 100_000;
const NOTIFY_QUEUE_MAX = 1024;
/** The protocol minor that brought FUSE_NOTIFY_INC_EPOCH. */
const INC_EPOCH_MINOR = 44;
const UNKNOWN_OPCODES_LOGGED_MAX = 64;

export interface FuseSessionOptions {
  /**
   * No kernel caching at all: entry/attr timeouts 0 and FOPEN_DIRECT_IO on every open,
   * whatever the filesystem returns (the cluster fallback until invalidation is proven;
   * DESIGN.md §4). Shared mmap stays possible through FUSE_DIRECT_IO_ALLOW_MMAP.
   */
  noKernelCache?: boolean;
  /**
   * No page cache (FOPEN_DIRECT_IO on every open, shared mmap through DIRECT_IO_ALLOW_MMAP,
   * no CACHE_SYMLINKS), while names and attributes are cached as the filesystem says: a
   * cluster mount, which invalidates those when its locks go (fs/cluster.ts).
   */
  uncachedData?: boolean;
  /** Ask for FUSE_WRITEBACK_CACHE (the kernel then buffers writes). Ignored with noKernelCache. */
  writebackCache?: boolean;
  /** With readdirplus: let the kernel choose READDIRPLUS only when it helps (READDIRPLUS_AUTO). */
  readdirplusAuto?: boolean;
  /** More INIT flags to ask for (e.g. InitFlag.AUTO_INVAL_DATA); still intersected with the kernel's offer. */
  extraInitFlags?: bigint;
  /** max_write, and the largest READ; a multiple of 4096, at most 1 MiB (max_pages 256). Default 1 MiB. */
  maxWriteBytes?: number;
  /** Cap on readahead; default: whatever the kernel offers. */
  maxReadaheadBytes?: number;
  /** Outstanding /dev/fuse reads (threadpool threads held). Default 2, 1..16. */
  readers?: number;
  /** Requests handled at once before the readers pause. Default 4096. */
  maxInFlight?: number;
  /** Kernel-side limit on background requests (readahead, writeback, async direct I/O). Default 64. */
  maxBackground?: number;
  /**
   * After a reply, poll /dev/fuse for up to this many microseconds for the next request
   * before sleeping, while such polls keep finding requests (pollForNext). 0: never.
   * Default POLL_AFTER_REPLY_US_DEFAULT.
   */
  pollAfterReplyUs?: number;
  /** Where log lines go. Default: stderr. */
  log?: (line: string) => void;
}

export interface SessionStats {
  requests: number;
  inFlight: number;
  interrupts: number;
  /** Largest request read from the kernel, header included. */
  requestBytesMax: number;
  /** Per-opcode request counts, by name. */
  byOpcode: Record<string, number>;
  /** Polls after a reply (pollAfterReplyUs) that found the next request, and that did not. */
  pollsFound: number;
  pollsMissed: number;
}

type State = 'new' | 'running' | 'ending' | 'ended';

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function notifyName(name: Buffer | string): Buffer {
  const bytes = typeof name === 'string' ? Buffer.from(name) : name;
  if (bytes.length === 0 || bytes.length > NAME_MAX_BYTES) {
    throw new FsError('ENAMETOOLONG', `notify name of ${bytes.length} bytes`);
  }
  return bytes;
}

function errCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export class FuseSession {
  /** Resolves when INIT has been answered; rejects if the session ends first. */
  readonly ready: Promise<InitInfo>;
  /** Resolves once the connection is gone, every reader has stopped and the descriptor is closed. */
  readonly closed: Promise<void>;
  /** Why the session ended ('unmounted', 'destroy', or an error), once it has. */
  endReason: string | undefined;

  private readonly channel: FuseChannel;
  private readonly ops: FuseOps;
  private readonly log: (line: string) => void;
  private readonly noKernelCache: boolean;
  private readonly uncachedData: boolean;
  /** The kernel refused FUSE_NOTIFY_INC_EPOCH once (older than it says, or a backport without it). */
  private incEpochRefused = false;
  private readonly maxWriteBytes: number;
  private readonly readBufferBytes: number;
  private readonly readerCount: number;
  private readonly maxInFlight: number;
  private readonly options: FuseSessionOptions;
  private readonly readyDeferred = deferred<InitInfo>();
  private readonly closedDeferred = deferred<void>();
  private state: State = 'new';
  private initInfo: InitInfo | undefined;
  private readersRunning = 0;
  /** pollAfterReplyUs in nanoseconds; 0: no polling. */
  private readonly pollBudgetNs: number;
  /** Polls after replies that found nothing, in a row; and replies since polling stopped. */
  private pollMissesInARow = 0;
  private repliesWithoutPoll = 0;
  /** Big request buffers handed back once their WRITE was answered (readerLoop). */
  private readonly spareBuffers: Buffer[] = [];
  private destroyCalled = false;
  private readonly inFlight = new Map<bigint, InFlightRequest>();
  private readonly capacityWaiters: (() => void)[] = [];
  private notifyTail: Promise<unknown> = Promise.resolve();
  private notifyQueued = 0;
  private readonly unknownOpcodesLogged = new Set<number>();
  private readonly counters = { requests: 0, interrupts: 0, requestBytesMax: 0, pollsFound: 0, pollsMissed: 0 };
  private readonly byOpcode = new Map<number, number>();
  private readonly env: HandlerEnv;

  /** `device`: the /dev/fuse descriptor from mountFuse(), or a FuseChannel (tests). */
  constructor(device: number | FuseChannel, ops: FuseOps, options: FuseSessionOptions = {}) {
    this.ops = ops;
    this.options = options;
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.channel = typeof device === 'number' ? openChannel(device, this.log) : device;
    this.noKernelCache = options.noKernelCache ?? false;
    this.uncachedData = this.noKernelCache || (options.uncachedData ?? false);
    this.maxWriteBytes = options.maxWriteBytes ?? MIB;
    if (!(Number.isInteger(this.maxWriteBytes) && this.maxWriteBytes >= PAGE_BYTES
      && this.maxWriteBytes <= MIB && this.maxWriteBytes % PAGE_BYTES === 0)) {
      throw new RangeError(`maxWriteBytes must be a multiple of ${PAGE_BYTES} in [${PAGE_BYTES}, ${MIB}], got ${this.maxWriteBytes}`);
    }
    // The kernel refuses reads smaller than header + fuse_write_in + max_write; SETXATTR may
    // carry a 64 KiB value whatever max_write is.
    this.readBufferBytes = Math.max(this.maxWriteBytes, XATTR_SIZE_MAX_BYTES) + REQUEST_HEADER_ROOM_BYTES;
    this.readerCount = options.readers ?? 2;
    if (!(Number.isInteger(this.readerCount) && this.readerCount >= 1 && this.readerCount <= 16)) {
      throw new RangeError(`readers must be 1..16, got ${this.readerCount}`);
    }
    const pollUs = options.pollAfterReplyUs ?? POLL_AFTER_REPLY_US_DEFAULT;
    if (!(Number.isInteger(pollUs) && pollUs >= 0 && pollUs <= 1000)) throw new RangeError(`pollAfterReplyUs must be 0..1000, got ${pollUs}`);
    this.pollBudgetNs = pollUs * 1000;
    this.maxInFlight = options.maxInFlight ?? 4096;
    if (!(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1)) {
      throw new RangeError(`maxInFlight must be a positive integer, got ${this.maxInFlight}`);
    }
    if (typeof ops.lookup !== 'function' || typeof ops.getattr !== 'function') {
      throw new TypeError('FuseOps needs at least lookup and getattr');
    }
    this.env = { ops, noKernelCache: this.noKernelCache, uncachedData: this.uncachedData, maxReadBytes: this.maxWriteBytes };
    this.ready = this.readyDeferred.promise;
    this.ready.catch(() => undefined); // callers that never await ready must not see an unhandled rejection
    this.closed = this.closedDeferred.promise;
  }

  /** Starts the readers. Call once, after the mount exists (reading an unmounted /dev/fuse fails with EPERM). */
  start(): void {
    if (this.state !== 'new') throw new Error(`FuseSession.start() in state ${this.state}`);
    this.state = 'running';
    // Threadpool readers each hold a libuv thread; notifications need one more (channel.ts).
    const poolThreads = Number.parseInt(process.env.UV_THREADPOOL_SIZE ?? '4', 10) || 4;
    if (!(this.channel instanceof PollChannel) && poolThreads < this.readerCount + 2) {
      this.log(`o2fs fuse: UV_THREADPOOL_SIZE=${poolThreads} leaves ${poolThreads - this.readerCount} thread(s) for everything `
        + `but the ${this.readerCount} /dev/fuse reader(s); set it to at least ${this.readerCount + 2} before Node starts`);
    }
    for (let i = 0; i < this.readerCount; i++) {
      this.readersRunning += 1;
      void this.readerLoop(i);
    }
  }

  /** What INIT negotiated, once it has run. */
  get init(): InitInfo | undefined {
    return this.initInfo;
  }

  get stats(): SessionStats {
    const byOpcode: Record<string, number> = {};
    for (const [op, n] of this.byOpcode) byOpcode[opcodeName(op)] = n;
    return { ...this.counters, inFlight: this.inFlight.size, byOpcode };
  }

  // --- Notifications (the cluster layer's handle on the kernel caches) ----------------------

  /**
   * FUSE_NOTIFY_INVAL_INODE: forget cached attributes of `ino` and its cached pages in
   * [offsetBytes, offsetBytes + lengthBytes) (lengthBytes 0 = to the end of the file;
   * offsetBytes -1 = attributes only). Resolves false if the kernel has no such inode cached.
   * Must not be awaited from inside a request handler for the same inode: the kernel may wait
   * for that request (e.g. page locks held by a READ we have not answered).
   */
  notifyInvalInode(ino: number, offsetBytes = 0, lengthBytes = 0): Promise<boolean> {
    return this.notify(NotifyCode.INVAL_INODE, () => encodeNotifyInvalInode(ino, offsetBytes, lengthBytes));
  }

  /**
   * FUSE_NOTIFY_INVAL_ENTRY: drop the cached name `name` in directory `parent` (and, with
   * expireOnly, just mark it expired -- needs a kernel with HAS_EXPIRE_ONLY). Resolves false if
   * the kernel does not have `parent` cached.
   */
  notifyInvalEntry(parent: number, name: Buffer | string, options: { expireOnly?: boolean } = {}): Promise<boolean> {
    return this.notify(NotifyCode.INVAL_ENTRY, () => {
      if (options.expireOnly && ((this.initInfo?.kernelFlags ?? 0n) & InitFlag.HAS_EXPIRE_ONLY) === 0n) {
        throw new FsError('EOPNOTSUPP', 'kernel lacks FUSE_HAS_EXPIRE_ONLY');
      }
      return encodeNotifyInvalEntry(parent, notifyName(name), options.expireOnly ? EXPIRE_ONLY : 0);
    });
  }

  /** FUSE_NOTIFY_DELETE: `name` in `parent` (inode `child`) is gone; like INVAL_ENTRY but also tells open dirs. */
  notifyDelete(parent: number, child: number, name: Buffer | string): Promise<boolean> {
    return this.notify(NotifyCode.DELETE, () => encodeNotifyDelete(parent, child, notifyName(name)));
  }

  // --- Notifications that cannot block (a lock downconvert waits for them) -------------------

  /**
   * FUSE_NOTIFY_INVAL_INODE for attributes only (offset -1), written now on this thread: the
   * kernel takes no page or directory lock for it, so it cannot wait for a request of ours.
   * False if the kernel has no such inode (or the session is over).
   */
  invalidateAttrsNow(ino: number): boolean {
    return this.notifyNow(NotifyCode.INVAL_INODE, encodeNotifyInvalInode(ino, -1, 0));
  }

  /** Can expireAllNamesNow() work: FUSE_NOTIFY_INC_EPOCH (protocol 7.44, Linux 6.16). */
  get canExpireAllNames(): boolean {
    return !this.incEpochRefused && (this.initInfo?.protocolMinor ?? 0) >= INC_EPOCH_MINOR;
  }

  /**
   * FUSE_NOTIFY_INC_EPOCH: every name the kernel cached must be looked up again before use
   * (the kernel just bumps a counter: it cannot block). False if the kernel refused it (and
   * canExpireAllNames turns false) or the session is over.
   */
  expireAllNamesNow(): boolean {
    if (!this.canExpireAllNames) return false;
    try {
      return this.notifyNow(NotifyCode.INC_EPOCH, Buffer.alloc(0));
    } catch (e) {
      this.incEpochRefused = true;
      this.log(`o2fs fuse: the kernel refused FUSE_NOTIFY_INC_EPOCH (${(e as Error).message}); names are no longer cached`);
      return false;
    }
  }

  private notifyNow(code: number, payload: Buffer): boolean {
    if (this.state !== 'running' || !this.initInfo) return false;
    const header = encodeOutHeader(OutHeader.size + payload.length, code, 0n);
    try {
      this.channel.writeReply([header, payload]);
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      if (errCode(err) === 'ENODEV' || this.state !== 'running') return false;
      throw err;
    }
  }

  /** Queues one notification. Bad arguments (range, name length) reject; they never throw. */
  private notify(code: number, makePayload: () => Buffer): Promise<boolean> {
    if (this.state !== 'running' || !this.initInfo) {
      return Promise.reject(new FsError('ENOTCONN', 'FUSE session not connected'));
    }
    if (this.notifyQueued >= NOTIFY_QUEUE_MAX) {
      return Promise.reject(new FsError('EAGAIN', `${NOTIFY_QUEUE_MAX} notifications already queued`));
    }
    let payload: Buffer;
    try {
      payload = makePayload();
    } catch (err) {
      return Promise.reject(err instanceof FsError ? err : new FsError('EINVAL', (err as Error).message));
    }
    this.notifyQueued += 1;
    const header = encodeOutHeader(OutHeader.size + payload.length, code, 0n);
    // One notification at a time: each may block a threadpool thread inside the kernel, and
    // the readers must always find a free one.
    const run = async (): Promise<boolean> => {
      try {
        if (this.state === 'ended') throw new FsError('ENOTCONN', 'FUSE session ended');
        await this.channel.writeNotify([header, payload]);
        return true;
      } catch (err) {
        if (errCode(err) === 'ENOENT') return false;
        if (err instanceof FsError) throw err;
        throw new FsError(this.errnoName(errnoOf(err)), `notify ${code}: ${(err as Error).message}`);
      } finally {
        this.notifyQueued -= 1;
      }
    };
    const result = this.notifyTail.then(run, run);
    this.notifyTail = result.catch(() => undefined);
    return result;
  }

  private errnoName(errno: number): keyof typeof ERRNO {
    const name = (Object.keys(ERRNO) as (keyof typeof ERRNO)[]).find((k) => ERRNO[k] === errno);
    return name ?? 'EIO';
  }

  // --- Reading ------------------------------------------------------------------------------

  private async readerLoop(readerId: number): Promise<void> {
    let buf: Buffer = Buffer.allocUnsafeSlow(this.readBufferBytes);
    let errorsInARow = 0;
    let retriesInARow = 0;
    try {
      while (this.state === 'running') {
        await this.waitForCapacity();
        if (this.state !== 'running') break;
        let lengthBytes: number;
        try {
          lengthBytes = await this.channel.read(buf);
        } catch (err) {
          const code = errCode(err);
          if (code === 'ENODEV' || code === 'ECONNABORTED') {
            this.beginEnd(this.endReason ?? 'unmounted');
            break;
          }
          if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') {
            // ENOENT: the request was interrupted while being copied out; just read the next.
            retriesInARow += 1;
            if (retriesInARow > READ_RETRIES_IN_A_ROW_MAX) throw err;
            continue;
          }
          errorsInARow += 1;
          this.log(`o2fs fuse: reader ${readerId}: read /dev/fuse failed (${errorsInARow} in a row): ${(err as Error).message}`);
          if (errorsInARow >= READ_ERRORS_IN_A_ROW_MAX) throw err;
          continue;
        }
        errorsInARow = 0;
        retriesInARow = 0;
        if (lengthBytes <= COPY_OUT_MAX_BYTES) {
          void this.handleRequest(Buffer.from(buf.subarray(0, lengthBytes)));
          continue;
        }
        // A big request (a WRITE, or SETXATTR with a big value): it takes this buffer and
        // the reader a spare one. A WRITE's data is valid only until its handler settles
        // (WriteArgs.data), so its buffer is reused after that; fresh buffers cost a page
        // fault per 4 KiB. Other requests may leave references behind: theirs are not reused.
        const lent = buf;
        buf = this.spareBuffers.pop() ?? Buffer.allocUnsafeSlow(this.readBufferBytes);
        const request = lent.subarray(0, lengthBytes);
        // A WRITE answered before its data reached the disk holds the buffer until it has.
        const reusable = request.readUInt32LE(InHeader.opcode) === Opcode.WRITE;
        const holds: Promise<void>[] = [];
        const handled = this.handleRequest(request, reusable ? holds : undefined);
        if (reusable) {
          void handled.then(() => Promise.all(holds)).then(() => this.spareBuffers.length < SPARE_BUFFERS_MAX && this.spareBuffers.push(lent));
        }
      }
    } catch (err) {
      this.log(`o2fs fuse: reader ${readerId} stopped: ${(err as Error).stack ?? String(err)}`);
      this.beginEnd(`reader failed: ${(err as Error).message}`);
    } finally {
      this.readersRunning -= 1;
      if (this.readersRunning === 0) void this.finishEnd();
    }
  }

  private waitForCapacity(): Promise<void> {
    if (this.inFlight.size < this.maxInFlight) return Promise.resolve();
    return new Promise((resolve) => this.capacityWaiters.push(resolve));
  }

  private releaseCapacity(): void {
    while (this.capacityWaiters.length > 0 && this.inFlight.size < this.maxInFlight) {
      this.capacityWaiters.shift()?.();
    }
  }

  // --- Dispatch -----------------------------------------------------------------------------

  /**
   * Handles one request exactly as read from /dev/fuse. Never rejects. Public so tests can
   * drive the dispatcher with crafted buffers through a fake FuseChannel.
   */
  async handleRequest(request: Buffer, holds?: Promise<void>[]): Promise<void> {
    try {
      await this.dispatch(request, holds);
    } catch (err) {
      // dispatch answers every error itself; reaching here is a bug in this file.
      this.log(`o2fs fuse: BUG: dispatch threw: ${(err as Error).stack ?? String(err)}`);
    }
  }

  /**
   * `holds`: where a WRITE handler's WriteArgs.hold puts the promises its buffer must outlive
   * (the caller reuses the buffer); absent, the buffer is this request's own (GC keeps it).
   */
  private async dispatch(request: Buffer, holds?: Promise<void>[]): Promise<void> {
    this.counters.requests += 1;
    this.counters.requestBytesMax = Math.max(this.counters.requestBytesMax, request.length);
    if (request.length < InHeader.size) {
      this.log(`o2fs fuse: dropped a ${request.length}-byte request (shorter than fuse_in_header, no unique to answer)`);
      return;
    }
    const h = decodeInHeader(request);
    this.byOpcode.set(h.opcode, (this.byOpcode.get(h.opcode) ?? 0) + 1);
    const extBytes = h.totalExtlen * 8;
    if (h.lenBytes !== request.length || InHeader.size + extBytes > request.length) {
      this.log(`o2fs fuse: ${opcodeName(h.opcode)} unique ${h.unique}: header says ${h.lenBytes} bytes (+${extBytes} ext), read ${request.length}`);
      if (!this.isNoReply(h.opcode)) this.replyErrno(h.unique, ERRNO.EINVAL);
      return;
    }
    const body = request.subarray(InHeader.size, request.length - extBytes);

    switch (h.opcode) {
      case Opcode.INIT:
        return this.handleInit(h, body);
      case Opcode.FORGET:
        return this.handleForget(h, body);
      case Opcode.BATCH_FORGET:
        return this.handleBatchForget(body);
      case Opcode.INTERRUPT:
        return this.handleInterrupt(h, body);
      case Opcode.NOTIFY_REPLY:
        return; // answers a RETRIEVE we never send
      case Opcode.DESTROY:
        return this.handleDestroy(h);
      default:
        break;
    }
    if (!this.initInfo) {
      this.log(`o2fs fuse: ${opcodeName(h.opcode)} before INIT`);
      this.replyErrno(h.unique, ERRNO.EIO);
      return;
    }
    const handler = HANDLERS.get(h.opcode);
    if (!handler) {
      if (!this.unknownOpcodesLogged.has(h.opcode) && this.unknownOpcodesLogged.size < UNKNOWN_OPCODES_LOGGED_MAX) {
        this.unknownOpcodesLogged.add(h.opcode);
        this.log(`o2fs fuse: ${opcodeName(h.opcode)} (opcode ${h.opcode}) not supported, answering ENOSYS`);
      }
      this.replyErrno(h.unique, ERRNO.ENOSYS);
      return;
    }
    if (this.inFlight.has(h.unique)) {
      this.log(`o2fs fuse: BUG or kernel bug: unique ${h.unique} already in flight`);
      this.replyErrno(h.unique, ERRNO.EIO);
      return;
    }
    const inflight = new InFlightRequest();
    this.inFlight.set(h.unique, inflight);
    try {
      const ino = readU64Number(request, InHeader.nodeid, 'nodeid');
      const ctx: RequestContext = {
        unique: h.unique, uid: h.uid, gid: h.gid, pid: h.pid,
        get signal() { return inflight.signal; },
      };
      const hold = h.opcode !== Opcode.WRITE ? undefined : holds ? (done: Promise<void>) => void holds.push(done) : () => undefined;
      const payload = await handler(this.env, ctx, { ino, body, ...(hold ? { hold } : {}) });
      this.reply(h.unique, payload);
    } catch (err) {
      this.replyError(h.unique, err, opcodeName(h.opcode));
    } finally {
      this.inFlight.delete(h.unique);
      this.releaseCapacity();
    }
  }

  private isNoReply(opcode: number): boolean {
    return opcode === Opcode.FORGET || opcode === Opcode.BATCH_FORGET || opcode === Opcode.NOTIFY_REPLY;
  }

  // --- INIT -----------------------------------------------------------------------------------

  /** The INIT flags we want, before intersecting with the kernel's offer. */
  private wantedInitFlags(): bigint {
    const ops = this.ops;
    let want = InitFlag.ASYNC_READ | InitFlag.ATOMIC_O_TRUNC | InitFlag.BIG_WRITES
      | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES | InitFlag.ASYNC_DIO;
    // POSIX record locks need both halves; flock(2) only SETLK/SETLKW.
    if (ops.getlk && ops.setlk) want |= InitFlag.POSIX_LOCKS;
    if (ops.setlk) want |= InitFlag.FLOCK_LOCKS;
    if (ops.readdirplus) {
      want |= InitFlag.DO_READDIRPLUS;
      if (this.options.readdirplusAuto) want |= InitFlag.READDIRPLUS_AUTO;
    }
    if (this.uncachedData) {
      want |= InitFlag.DIRECT_IO_ALLOW_MMAP;
    } else {
      want |= InitFlag.CACHE_SYMLINKS;
      if (this.options.writebackCache) want |= InitFlag.WRITEBACK_CACHE;
    }
    if (ops.handlesKillPrivV2) want |= InitFlag.HANDLE_KILLPRIV_V2;
    // Deliberately never: EXPORT_SUPPORT (no NFS export), HANDLE_KILLPRIV (v1), DONT_MASK, SPLICE_*, SETXATTR_EXT, SECURITY_CTX, PASSTHROUGH, HAS_RESEND.
    return want | (this.options.extraInitFlags ?? 0n);
  }

  private async handleInit(h: InHeaderFields, body: Buffer): Promise<void> {
    if (this.initInfo) {
      this.log('o2fs fuse: second INIT ignored (EIO)');
      this.replyErrno(h.unique, ERRNO.EIO);
      return;
    }
    let init;
    try {
      init = decodeInitIn(body);
    } catch (err) {
      this.replyError(h.unique, err, 'INIT');
      return;
    }
    if (init.major > FUSE_KERNEL_VERSION) {
      // "Reply with the major version we support and expect a new INIT" (fuse.h).
      this.log(`o2fs fuse: kernel offers protocol ${init.major}.${init.minor}; answering ${FUSE_KERNEL_VERSION}.${PROTOCOL_MINOR_MAX}`);
      this.reply(h.unique, [encodeInitOut({
        major: FUSE_KERNEL_VERSION, minor: PROTOCOL_MINOR_MAX, maxReadaheadBytes: 0, flags: 0n,
        maxBackground: 0, congestionThreshold: 0, maxWriteBytes: 0, timeGranNs: 0, maxPages: 0, requestTimeoutSec: 0,
      })]);
      return;
    }
    if (init.major < FUSE_KERNEL_VERSION || init.minor < PROTOCOL_MINOR_MIN) {
      this.log(`o2fs fuse: kernel protocol ${init.major}.${init.minor} is older than ${FUSE_KERNEL_VERSION}.${PROTOCOL_MINOR_MIN}; refusing`);
      this.replyErrno(h.unique, ERRNO.EPROTO);
      this.readyDeferred.reject(new FsError('EPROTO', `kernel FUSE protocol ${init.major}.${init.minor} unsupported`));
      return;
    }
    const minor = Math.min(init.minor, PROTOCOL_MINOR_MAX);
    let flags = this.wantedInitFlags() & init.flags;
    // The kernel reads our flags2 (bits 32..63) only if we set INIT_EXT, which it must offer.
    if ((init.flags & InitFlag.INIT_EXT) === 0n) flags &= 0xffff_ffffn;
    else if ((flags >> 32n) !== 0n) flags |= InitFlag.INIT_EXT;
    const maxReadaheadBytes = Math.min(init.maxReadaheadBytes, this.options.maxReadaheadBytes ?? init.maxReadaheadBytes);
    const maxPages = this.maxWriteBytes / PAGE_BYTES;
    const info: InitInfo = {
      protocolMinor: minor, kernelFlags: init.flags, flags, maxWriteBytes: this.maxWriteBytes,
      maxReadaheadBytes, maxPages,
    };
    try {
      await this.ops.init?.(info);
    } catch (err) {
      this.replyError(h.unique, err, 'INIT (filesystem init)');
      this.readyDeferred.reject(new FsError('EIO', `filesystem init failed: ${(err as Error).message}`));
      return;
    }
    const maxBackground = this.options.maxBackground ?? 64;
    // Set before the reply goes out: the kernel sends requests the moment it has it.
    this.initInfo = info;
    this.reply(h.unique, [encodeInitOut({
      major: FUSE_KERNEL_VERSION, minor, maxReadaheadBytes, flags,
      maxBackground, congestionThreshold: Math.max(1, Math.floor((maxBackground * 3) / 4)),
      maxWriteBytes: this.maxWriteBytes, timeGranNs: 1, maxPages, requestTimeoutSec: 0,
    })]);
    this.readyDeferred.resolve(info);
    this.log(`o2fs fuse: INIT ${FUSE_KERNEL_VERSION}.${minor} (kernel ${init.major}.${init.minor}), max_write ${this.maxWriteBytes}, flags ${initFlagNames(flags).join(',')}`);
  }

  // --- FORGET, INTERRUPT, DESTROY -------------------------------------------------------------

  private forget(ino: bigint, nlookup: bigint): void {
    if (!this.ops.forget) return;
    try {
      if (ino > BigInt(Number.MAX_SAFE_INTEGER) || nlookup > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new FsError('EINVAL', `FORGET ino ${ino} nlookup ${nlookup} out of range`);
      }
      const result = this.ops.forget(Number(ino), Number(nlookup));
      if (result instanceof Promise) result.catch((err: unknown) => this.log(`o2fs fuse: forget(${ino}) failed: ${String(err)}`));
    } catch (err) {
      this.log(`o2fs fuse: forget(${ino}) failed: ${(err as Error).message}`);
    }
  }

  private handleForget(h: InHeaderFields, body: Buffer): void {
    if (body.length < ForgetIn.size) {
      this.log(`o2fs fuse: short FORGET (${body.length} bytes) dropped`);
      return;
    }
    this.forget(h.nodeid, body.readBigUInt64LE(ForgetIn.nlookup));
  }

  private handleBatchForget(body: Buffer): void {
    try {
      requireBytes(body, BatchForgetIn.size, 'fuse_batch_forget_in');
      const count = body.readUInt32LE(BatchForgetIn.count);
      requireBytes(body, BatchForgetIn.size + count * ForgetOne.size, `BATCH_FORGET of ${count}`);
      for (let i = 0; i < count; i++) {
        const at = BatchForgetIn.size + i * ForgetOne.size;
        this.forget(body.readBigUInt64LE(at + ForgetOne.nodeid), body.readBigUInt64LE(at + ForgetOne.nlookup));
      }
    } catch (err) {
      this.log(`o2fs fuse: BATCH_FORGET dropped: ${(err as Error).message}`);
    }
  }

  private handleInterrupt(h: InHeaderFields, body: Buffer): void {
    if (body.length < InterruptIn.size) {
      this.log('o2fs fuse: short INTERRUPT dropped');
      return;
    }
    this.counters.interrupts += 1;
    const target = body.readBigUInt64LE(InterruptIn.unique);
    const inflight = this.inFlight.get(target);
    if (inflight) {
      inflight.abort(new FsError('EINTR', `request ${target} interrupted`));
      return; // no reply: the interrupted request's own reply completes it
    }
    // Not seen yet (another reader holds it) or already answered. EAGAIN makes the kernel
    // queue the interrupt again if the request still exists; otherwise it drops the reply.
    this.replyErrno(h.unique, ERRNO.EAGAIN);
  }

  private handleDestroy(h: InHeaderFields): void {
    this.reply(h.unique, []);
    this.endReason = 'destroy';
    this.beginEnd('destroy');
  }

  // --- Replies --------------------------------------------------------------------------------

  private reply(unique: bigint, payload: ReplyPayload): void {
    let lengthBytes = OutHeader.size;
    for (const chunk of payload) lengthBytes += chunk.length;
    this.write(unique, [encodeOutHeader(lengthBytes, 0, unique), ...payload]);
  }

  private replyErrno(unique: bigint, errno: number): void {
    if (!(errno > 0 && errno <= ERRNO_REPLY_MAX)) {
      this.log(`o2fs fuse: errno ${errno} cannot be sent to the kernel; answering EIO`);
      errno = ERRNO.EIO;
    }
    this.write(unique, [encodeOutHeader(OutHeader.size, -errno, unique)]);
  }

  /** The one place an exception becomes an errno. */
  private replyError(unique: bigint, err: unknown, what: string): void {
    this.replyErrno(unique, this.errnoFor(err, what));
  }

  private errnoFor(err: unknown, what: string): number {
    if (err instanceof MalformedRequestError) this.log(`o2fs fuse: ${what}: ${err.message}`);
    if (err instanceof FsError) return err.code;
    if ((err as Error | null)?.name === 'AbortError') return ERRNO.EINTR;
    const code = errCode(err);
    if (code !== undefined && code in ERRNO) return errnoOf(err);
    this.log(`o2fs fuse: ${what}: unexpected exception, answering EIO: ${(err as Error | null)?.stack ?? String(err)}`);
    return ERRNO.EIO;
  }

  /**
   * Right after a reply, polls for the client's next request instead of sleeping
   * (FuseSessionOptions.pollAfterReplyUs). After POLL_MISSES_MAX polls in a row found
   * nothing (a slow or idle client), polling stops but for one probe every
   * POLL_PROBE_EVERY replies, which turns it back on if it finds a request: an idle mount
   * never polls, and a slow client costs at most one budget per POLL_PROBE_EVERY replies.
   */
  private pollForNext(): void {
    if (!this.channel.pollBriefly) return;
    if (this.pollMissesInARow >= POLL_MISSES_MAX) {
      this.repliesWithoutPoll += 1;
      if (this.repliesWithoutPoll < POLL_PROBE_EVERY) return;
      this.repliesWithoutPoll = 0;
    }
    const found = this.channel.pollBriefly(this.pollBudgetNs);
    if (found === null) return; // every reader is busy with a request already
    if (found) {
      this.counters.pollsFound += 1;
      this.pollMissesInARow = 0;
    } else {
      this.counters.pollsMissed += 1;
      this.pollMissesInARow += 1;
    }
  }

  private write(unique: bigint, chunks: Buffer[]): void {
    if (this.state === 'ended') return; // the descriptor is closed (and its number maybe reused)
    try {
      this.channel.writeReply(chunks);
    } catch (err) {
      const code = errCode(err);
      // ENOENT: the kernel no longer waits for this request (interrupted and gone, or an
      // EAGAIN interrupt reply for a finished request). ENODEV: the connection is gone.
      if (code === 'ENOENT' || code === 'ENODEV') return;
      this.log(`o2fs fuse: reply to unique ${unique} failed: ${(err as Error).message}`);
    }
    if (this.pollBudgetNs > 0) this.pollForNext();
  }

  // --- Ending ---------------------------------------------------------------------------------

  /** Stop issuing reads and fail what is in flight; readers exit as their reads return. */
  private beginEnd(reason: string): void {
    if (this.state === 'ending' || this.state === 'ended') return;
    this.endReason ??= reason;
    this.state = 'ending';
    for (const waiter of this.capacityWaiters.splice(0)) waiter();
  }

  private async finishEnd(): Promise<void> {
    this.beginEnd(this.endReason ?? 'readers stopped');
    for (const inflight of this.inFlight.values()) {
      inflight.abort(new FsError('EINTR', 'FUSE session ended'));
    }
    await this.notifyTail; // no notification may still be using the descriptor
    this.state = 'ended';
    try {
      this.channel.close();
    } catch (err) {
      this.log(`o2fs fuse: closing /dev/fuse failed: ${(err as Error).message}`);
    }
    this.readyDeferred.reject(new FsError('ENOTCONN', `FUSE session ended before INIT (${this.endReason})`));
    if (this.initInfo && !this.destroyCalled && this.ops.destroy) {
      this.destroyCalled = true;
      try {
        await this.ops.destroy();
      } catch (err) {
        this.log(`o2fs fuse: filesystem destroy failed: ${(err as Error).message}`);
      }
    }
    this.log(`o2fs fuse: session ended (${this.endReason})`);
    this.closedDeferred.resolve();
  }
}

/**
 * A request being served. Its AbortController is made only when someone asks for the signal
 * or the request is interrupted: most requests finish without either, and making one per
 * request was a measurable share of a trivial request's cost.
 */
class InFlightRequest {
  private controller?: AbortController;

  get signal(): AbortSignal {
    return (this.controller ??= new AbortController()).signal;
  }

  abort(reason: Error): void {
    (this.controller ??= new AbortController()).abort(reason);
  }
}

/** The /dev/fuse channel: read on the event loop when the devpoll addon loads, else on the threadpool. */
function openChannel(fd: number, log: (line: string) => void): FuseChannel {
  const dp = devPoll();
  if (dp) return new PollChannel(fd, dp);
  log(`o2fs fuse: devpoll addon unavailable (${devPollError()}); reading /dev/fuse on the libuv threadpool (slower)`);
  return new DeviceChannel(fd);
}
