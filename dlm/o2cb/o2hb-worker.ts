// The o2hb heartbeat loop, run on a worker thread (o2hb.ts starts it). It opens the device
// itself and does synchronous I/O on its own thread, so however long the main event loop is
// stuck (a long GC, a busy handler), this node keeps writing its block and peers do not
// declare it dead: only the disk, or this thread, can stop the beat.
//
// The thread never runs an event loop of its own. It sleeps with Atomics.wait on a shared
// control array, which is also how the main thread rings it (stop, abort, test hooks); it
// reports to the main thread with postMessage. The time of its last completed write goes into
// shared memory, not a message, so the main thread's write-timeout watchdog reads the truth
// even when a stall has left messages queued (o2hb.ts).
import { closeSync, constants as fsConstants, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { encodeHeartbeat } from '../../fs/format/heartbeat';
import type { HbRegion } from './hb-region';
import type { O2HbErrorCode } from './o2hb-errors';
import { HbSample, SlotEvent, SlotTracker, sampleOf } from './o2hb-slots';

/** Int32 slots of the shared control array. */
export const CTL = {
  /** Bumped (and notified) by the main thread whenever it changes another slot. */
  doorbell: 0,
  /** One of CMD. */
  command: 1,
  /** Test hook: sleep this long before the next write (taken and zeroed by the worker). */
  stallMs: 2,
  /** Test hook: fail this many of the next writes as if the device returned EIO. */
  failWrites: 3,
  length: 4,
} as const;

export const CMD = { run: 0, stopClean: 1, abort: 2 } as const;

/** BigInt64 slots of the shared time array (process.hrtime.bigint() nanoseconds). */
export const TIME = { lastWriteDoneNs: 0, length: 1 } as const;

export interface WorkerConfig {
  kind: 'o2hb';
  region: HbRegion;
  thisNode: number;
  nodes: number[];
  intervalMs: number;
  deadThreshold: number;
  deadMs: number;
  hbGeneration: number;
  /** O_DIRECT; undefined = only for block devices. */
  direct: boolean | undefined;
  /** Reads of our own slot, one interval apart, before we dare write to it. */
  collisionSamples: number;
  /** Clean passes after which the region counts as steady. */
  steadyPasses: number;
  ctl: SharedArrayBuffer;
  time: SharedArrayBuffer;
}

export type WorkerMessage =
  | { type: 'started'; seq: number }
  | { type: 'startFailed'; code: O2HbErrorCode; message: string }
  | SlotEvent
  | { type: 'steady' }
  | { type: 'fence'; reason: string }
  | { type: 'stopped'; clean: boolean };

// The project compiles without the DOM lib, where TypeScript keeps the WebAssembly types.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory };
const WASM_PAGE_BYTES = 65536;
const SEQ_RESTART_AT = 2 ** 52;
const ALIGN_BYTES = 4096;

class StartError extends Error {
  constructor(readonly code: O2HbErrorCode, message: string) {
    super(message);
  }
}

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Monotonic milliseconds: sleeps must not stretch or shrink when the wall clock is set. */
function nowMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}

/**
 * The region's file descriptor and page-aligned buffers. O_DIRECT needs aligned memory;
 * Node gives no addresses, but WebAssembly memory starts on a page boundary (see
 * blockdev/aligned-buffers.ts), so both buffers are carved out of one.
 */
class RegionIo {
  private readonly fd: number;
  private readonly syncAfterWrite: boolean;
  private readonly readBuf: Buffer;
  private readonly writeBuf: Buffer;
  private readonly memory: WasmMemory;
  readonly lowNode: number;
  readonly direct: boolean;

  constructor(private readonly cfg: WorkerConfig) {
    const r = cfg.region;
    const all = [...cfg.nodes, cfg.thisNode];
    this.lowNode = Math.min(...all);
    const highNode = Math.max(...all);
    const readBytes = (highNode - this.lowNode + 1) * r.blockSizeBytes;
    const writeOffsetBytes = alignUp(readBytes, ALIGN_BYTES);
    const pages = Math.ceil((writeOffsetBytes + alignUp(r.blockSizeBytes, ALIGN_BYTES)) / WASM_PAGE_BYTES);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    this.readBuf = Buffer.from(this.memory.buffer, 0, readBytes);
    this.writeBuf = Buffer.from(this.memory.buffer, writeOffsetBytes, r.blockSizeBytes);

    let fd: number;
    let isBlock: boolean;
    try {
      // Probe the kind first: O_DIRECT is for block devices unless the caller forces it.
      const probe = openSync(r.devicePath, fsConstants.O_RDONLY);
      try {
        isBlock = fstatSync(probe).isBlockDevice();
      } finally {
        closeSync(probe);
      }
      this.direct = cfg.direct ?? isBlock;
      fd = openSync(r.devicePath, fsConstants.O_RDWR | (this.direct ? fsConstants.O_DIRECT : 0));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StartError(code === 'ENOENT' || code === 'EINVAL' ? 'EINVAL' : 'EIO', `${r.devicePath}: cannot open for heartbeat: ${errText(err)}`);
    }
    this.fd = fd;
    // A file's writes must reach the disk other hosts read; a block device opened O_DIRECT
    // already bypasses our page cache.
    this.syncAfterWrite = !isBlock;
    if (!isBlock) {
      const size = fstatSync(fd).size;
      const end = r.firstBlockOffsetBytes + (highNode + 1) * r.blockSizeBytes;
      if (size < end) {
        closeSync(fd);
        throw new StartError('EINVAL', `${r.devicePath}: ${size} bytes, but the heartbeat region ends at byte ${end}`);
      }
    }
  }

  blkno(node: number): number {
    return this.cfg.region.firstBlockOffsetBytes / this.cfg.region.blockSizeBytes + node;
  }

  /** Reads every configured slot with one pread; throws on a short read or I/O error. */
  readAll(): void {
    const off = this.cfg.region.firstBlockOffsetBytes + this.lowNode * this.cfg.region.blockSizeBytes;
    let done = 0;
    // Bounded: each round either advances or throws.
    while (done < this.readBuf.length) {
      const n = readSync(this.fd, this.readBuf, done, this.readBuf.length - done, off + done);
      if (n <= 0) throw new Error(`short read at byte ${off + done}`);
      done += n;
    }
  }

  /** Node `node`'s block from the last readAll (a view: copy it to keep it). */
  slot(node: number): Buffer {
    const bs = this.cfg.region.blockSizeBytes;
    const i = node - this.lowNode;
    return this.readBuf.subarray(i * bs, (i + 1) * bs);
  }

  sample(node: number): HbSample {
    return sampleOf(this.slot(node), this.blkno(node), this.cfg.region.fsGeneration, node);
  }

  writeOwn(block: Buffer): void {
    if (block.length !== this.writeBuf.length) throw new Error(`assertion: heartbeat block is ${block.length} bytes`);
    block.copy(this.writeBuf);
    const off = this.cfg.region.firstBlockOffsetBytes + this.cfg.thisNode * this.cfg.region.blockSizeBytes;
    const n = writeSync(this.fd, this.writeBuf, 0, this.writeBuf.length, off);
    if (n !== this.writeBuf.length) throw new Error(`short write (${n} of ${this.writeBuf.length} bytes)`);
    if (this.syncAfterWrite) fdatasyncSync(this.fd);
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      // the thread is ending; nothing useful to do with a close error
    }
  }
}

class HeartbeatLoop {
  private readonly ctl: Int32Array;
  private readonly time: BigInt64Array;
  private readonly io: RegionIo;
  private readonly trackers: SlotTracker[];
  private readonly blockBytes: number;
  private seq = 0;
  private lastWritten: Buffer | null = null;
  private cleanPasses = 0;
  private readFailing = false;
  private writeFailing = false;

  constructor(private readonly cfg: WorkerConfig, private readonly post: (m: WorkerMessage) => void) {
    this.ctl = new Int32Array(cfg.ctl);
    this.time = new BigInt64Array(cfg.time);
    this.blockBytes = cfg.region.blockSizeBytes;
    this.io = new RegionIo(cfg);
    this.trackers = cfg.nodes.filter((n) => n !== cfg.thisNode).map((n) => new SlotTracker(n, cfg.deadThreshold, cfg.deadMs));
  }

  private command(): number {
    return Atomics.load(this.ctl, CTL.command);
  }

  /** Sleeps up to `ms`, waking early when the main thread sets a command other than run. */
  private sleep(ms: number): void {
    const deadline = nowMs() + ms;
    // Bounded: ends at the deadline; a doorbell without a command only re-arms the wait.
    for (let left = ms; left > 0 && this.command() === CMD.run; left = deadline - nowMs()) {
      Atomics.wait(this.ctl, CTL.doorbell, Atomics.load(this.ctl, CTL.doorbell), left);
    }
  }

  /**
   * Before our first write: watch our slot for a few intervals. If it keeps changing, some
   * other process is heartbeating as this node; writing too would make both look alive.
   */
  private checkSlotFree(): void {
    let prev: HbSample | null = null;
    for (let i = 0; i < this.cfg.collisionSamples; i++) {
      if (i > 0) this.sleep(this.cfg.intervalMs);
      if (this.command() !== CMD.run) return;
      try {
        this.io.readAll();
      } catch (err) {
        throw new StartError('EIO', `cannot read the heartbeat region: ${errText(err)}`);
      }
      const cur = this.io.sample(this.cfg.thisNode);
      if (prev?.kind === 'ok' && cur.kind === 'ok' && cur.hbGeneration !== 0 && (cur.seq !== prev.seq || cur.hbGeneration !== prev.hbGeneration)) {
        throw new StartError('EBUSY', `another node is heartbeating in node ${this.cfg.thisNode}'s slot (generation ${cur.hbGeneration}, seq ${prev.seq} -> ${cur.seq}); is node ${this.cfg.thisNode} running elsewhere?`);
      }
      // Continue the slot's sequence so a seq value is never reused on it (a seq near 2^53
      // would overflow our u64-in-a-number: start over, the new generation tells peers).
      if (cur.kind === 'ok' && cur.seq < SEQ_RESTART_AT) this.seq = Math.max(this.seq, cur.seq);
      prev = cur;
    }
  }

  private block(seq: number, hbGeneration: number, deadMs: number): Buffer {
    return encodeHeartbeat({
      blkno: this.io.blkno(this.cfg.thisNode), fsGeneration: this.cfg.region.fsGeneration, seq,
      nodeNum: this.cfg.thisNode, deadMs, hbGeneration, timeMs: Date.now(),
    }, this.blockBytes);
  }

  /** Returns true when the write completed. */
  private write(): boolean {
    const stallMs = Atomics.exchange(this.ctl, CTL.stallMs, 0);
    if (stallMs > 0) {
      this.sleep(stallMs);
      if (this.command() === CMD.abort) return false;
    }
    const buf = this.block(this.seq + 1, this.cfg.hbGeneration, this.cfg.deadMs);
    try {
      if (Atomics.load(this.ctl, CTL.failWrites) > 0) {
        Atomics.sub(this.ctl, CTL.failWrites, 1);
        throw new Error('EIO: injected write failure (test hook)');
      }
      this.io.writeOwn(buf);
    } catch (err) {
      // The write timer is not re-armed: if writes keep failing, the main thread fences.
      if (!this.writeFailing) this.post({ type: 'log', line: `heartbeat write failed: ${errText(err)}` });
      this.writeFailing = true;
      return false;
    }
    if (this.writeFailing) this.post({ type: 'log', line: 'heartbeat writes succeed again' });
    this.writeFailing = false;
    this.seq += 1;
    this.lastWritten = Buffer.from(buf);
    Atomics.store(this.time, TIME.lastWriteDoneNs, process.hrtime.bigint());
    return true;
  }

  /** One pass; returns false when the loop must end (fenced). */
  private pass(): boolean {
    try {
      this.io.readAll();
    } catch (err) {
      // Like OCFS2: a failed read skips the pass, write included, so a node that cannot
      // see the disk stops beating and its write timer fences it.
      if (!this.readFailing) this.post({ type: 'log', line: `heartbeat read failed, pass skipped: ${errText(err)}` });
      this.readFailing = true;
      return true;
    }
    if (this.readFailing) this.post({ type: 'log', line: 'heartbeat reads succeed again' });
    this.readFailing = false;

    const own = this.io.slot(this.cfg.thisNode);
    if (this.lastWritten && !own.equals(this.lastWritten)) {
      const s = this.io.sample(this.cfg.thisNode);
      if (s.kind === 'ok') {
        this.post({ type: 'fence', reason: `another node is heartbeating in our slot (node ${this.cfg.thisNode}: found generation ${s.hbGeneration} seq ${s.seq}, we wrote generation ${this.cfg.hbGeneration} seq ${this.seq})` });
        return false;
      }
      this.post({ type: 'log', line: `our own heartbeat block reads back damaged (${s.why}); rewriting it` });
    }

    if (this.write()) {
      this.cleanPasses++;
      if (this.cleanPasses === this.cfg.steadyPasses) this.post({ type: 'steady' });
    }
    if (this.command() === CMD.abort) return false;
    for (const t of this.trackers) {
      for (const ev of t.sample(this.io.sample(t.node))) this.post(ev);
    }
    return true;
  }

  run(): void {
    try {
      this.checkSlotFree();
    } catch (err) {
      this.io.close();
      throw err;
    }
    // The write timer starts now: the first write is due within one pass.
    Atomics.store(this.time, TIME.lastWriteDoneNs, process.hrtime.bigint());
    this.post({ type: 'started', seq: this.seq });
    let fenced = false;
    while (this.command() === CMD.run) {
      const startNs = process.hrtime.bigint();
      if (!this.pass()) {
        fenced = true;
        break;
      }
      const tookMs = Number(process.hrtime.bigint() - startNs) / 1e6;
      this.sleep(Math.max(0, this.cfg.intervalMs - tookMs));
    }
    let clean = false;
    if (!fenced && this.command() === CMD.stopClean) clean = this.writeLeaveMark();
    this.io.close();
    this.post({ type: 'stopped', clean });
  }

  /**
   * A clean stop: generation 0 with a fresh seq tells every peer at its next read that we
   * left on purpose, so they report us down at once instead of after the dead time. Written
   * only over our own block: if someone else's is there we fence rather than stop.
   */
  private writeLeaveMark(): boolean {
    try {
      this.io.readAll();
      if (this.lastWritten && !this.io.slot(this.cfg.thisNode).equals(this.lastWritten)) return false;
      this.io.writeOwn(this.block(this.seq + 1, 0, 0));
      this.seq += 1;
      return true;
    } catch (err) {
      this.post({ type: 'log', line: `could not write the clean-stop block: ${errText(err)}` });
      return false;
    }
  }
}

function main(cfg: WorkerConfig): void {
  const port = parentPort;
  if (!port) throw new Error('assertion: o2hb worker without a parent port');
  const post = (m: WorkerMessage): void => port.postMessage(m);
  try {
    new HeartbeatLoop(cfg, post).run();
  } catch (err) {
    if (err instanceof StartError) post({ type: 'startFailed', code: err.code, message: err.message });
    else throw err; // a bug: the Worker's 'error' event makes the main thread fence
  }
}

if (!isMainThread && (workerData as { kind?: unknown } | null)?.kind === 'o2hb') main(workerData as WorkerConfig);
