// FaultyBlockDevice: a fault-injecting wrapper for crash tests, in the spirit of dm-flakey
// (fail I/O on demand) and dm-log-writes (replay a prefix of the write log).
//
// Model: the wrapper is a disk with a volatile write cache. By default a write lands in an
// in-memory ordered log and resolves at once; reads see the log on top of the lower device
// (read-your-writes); flush applies the logged writes to the lower device in order, then
// flushes the lower device. Everything not yet flushed is what a power cut may lose, exactly
// like the page cache / drive cache. With `writeThrough: true` writes go straight down and
// only the lower device's own flush semantics remain.
//
// Faults:
// - powerCut({keep, seed}): the unflushed writes are dropped ('none'), or a seeded random
//   subset of them reaches the lower device in a seeded random order ('random-subset', which
//   is also how reordering is modelled), or a seeded random prefix of them does in order
//   ('prefix'), the first write past the prefix possibly torn: a random proper subset of its
//   sectors lands. Sectors are atomic: nothing tears inside a sector. Afterwards the device is
//   dead: read/write/flush/powerCut reject with 'EIO' until the test opens a new wrapper over
//   the lower device. close() then only closes the lower device.
// - failAfter({reads, writes, flushes}): the next N calls of that kind succeed, every later one
//   rejects with 'EIO' (a failed write is not logged; a failed flush applies nothing).
//   failAfter({}) clears all limits. Only well-formed calls count: EINVAL/ERANGE come first.
//
// A log larger than maxPendingBytes is written back by the write that overflowed it (a cache
// under pressure); if that write-back fails, that write rejects although its data stays logged.
//
// The wrapper owns the lower device: close() flushes what is pending (a clean shutdown loses
// nothing) and closes it.
import assert from 'node:assert/strict';
import { InFlight } from './in-flight';
import { Prng } from '../fs/prng';
import { BlockDevice, BlockDeviceError, checkRange, readTarget } from './types';

export type PowerCutKeep = 'none' | 'random-subset' | 'prefix';

export interface PowerCutOptions {
  keep?: PowerCutKeep;
  /** Required for 'random-subset' and 'prefix'; the same seed gives the same outcome. */
  seed?: number;
}

export interface PowerCutReport {
  /** Unflushed writes at the moment of the cut. */
  pendingWrites: number;
  /** Indexes (into the unflushed log, oldest = 0) of writes that fully reached the lower device, in the order applied. */
  keptWrites: number[];
  /** The torn write, if any: its index and the indexes of its sectors that landed. */
  tornWrite: { index: number; keptSectors: number[]; totalSectors: number } | null;
}

export interface FailAfterOptions {
  reads?: number;
  writes?: number;
  flushes?: number;
}

export interface FaultyDeviceOptions {
  /** Writes go straight to the lower device instead of the in-memory log. Default false. */
  writeThrough?: boolean;
  /** When the log holds more than this, a write first writes the log back (a cache under
   *  pressure writes back on its own). Default 256 MiB. */
  maxPendingBytes?: number;
}

interface LoggedWrite {
  offsetBytes: number;
  data: Buffer;
}

type OpKind = 'reads' | 'writes' | 'flushes';

const DEFAULT_MAX_PENDING_BYTES = 256 << 20;

export class FaultyBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly sectorSize: number;
  readonly readOnly: boolean;
  readonly writeThrough: boolean;

  private readonly lower: BlockDevice;
  private readonly maxPendingBytes: number;
  /** Unflushed writes, oldest first. Only the flusher removes entries, from the head. */
  private log: LoggedWrite[] = [];
  private logBytes = 0;
  /** Flushes run one at a time, in call order. */
  private flushChain: Promise<void> = Promise.resolve();
  private remaining: Partial<Record<OpKind, number>> = {};
  private dead = false;
  /** The power cut in progress, so close() does not close the lower device under it. */
  private cutting: Promise<unknown> | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly inFlight = new InFlight();

  constructor(lower: BlockDevice, opts: FaultyDeviceOptions = {}) {
    this.lower = lower;
    this.name = `faulty(${lower.name})`;
    this.sizeBytes = lower.sizeBytes;
    this.sectorSize = lower.sectorSize;
    this.readOnly = lower.readOnly;
    this.writeThrough = opts.writeThrough ?? false;
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    assert(Number.isSafeInteger(this.maxPendingBytes) && this.maxPendingBytes > 0, `bad maxPendingBytes ${this.maxPendingBytes}`);
  }

  /** Number of writes not yet applied to the lower device. */
  get pendingWriteCount(): number {
    return this.log.length;
  }

  get pendingBytes(): number {
    return this.logBytes;
  }

  get isDead(): boolean {
    return this.dead;
  }

  async read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.checkUsable();
    checkRange(this, offsetBytes, lengthBytes);
    this.consume('reads');
    if (lengthBytes === 0) return readTarget(0, into);
    // Snapshot before reading below: a flush may move an entry down and drop it from the log
    // while our lower read is in flight, and then only the snapshot still has it.
    const overlay = this.log.slice();
    const out = await this.inFlight.track(() => this.lower.read(offsetBytes, lengthBytes, into));
    this.checkAlive();
    const endBytes = offsetBytes + lengthBytes;
    for (const w of overlay) {
      const from = Math.max(offsetBytes, w.offsetBytes);
      const to = Math.min(endBytes, w.offsetBytes + w.data.length);
      if (from < to) w.data.copy(out, from - offsetBytes, from - w.offsetBytes, to - w.offsetBytes);
    }
    return out;
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.checkUsable();
    assert(Buffer.isBuffer(data), 'write data must be a Buffer');
    if (this.readOnly) throw new BlockDeviceError('EROFS', `${this.name}: device is read-only`);
    checkRange(this, offsetBytes, data.length);
    this.consume('writes');
    if (data.length === 0) return;
    if (this.writeThrough) {
      await this.inFlight.track(() => this.lower.write(offsetBytes, data));
      this.checkAlive();
      return;
    }
    // Copy now: the caller may reuse its buffer as soon as we resolve.
    this.log.push({ offsetBytes, data: Buffer.from(data) });
    this.logBytes += data.length;
    if (this.logBytes > this.maxPendingBytes) await this.enqueueFlush();
  }

  async flush(): Promise<void> {
    this.checkUsable();
    this.consume('flushes');
    if (this.readOnly) return;
    await this.enqueueFlush();
  }

  /** Arms per-kind failure budgets; see the header. Replaces any earlier budgets. */
  failAfter(opts: FailAfterOptions): void {
    this.checkUsable();
    for (const [kind, n] of Object.entries(opts)) {
      assert(n === undefined || (Number.isSafeInteger(n) && n >= 0), `failAfter.${kind} must be a non-negative integer, got ${n}`);
    }
    this.remaining = { ...opts };
  }

  /** Cuts the power; see the header. Resolves once the lower device holds the outcome. */
  async powerCut(opts: PowerCutOptions = {}): Promise<PowerCutReport> {
    this.checkUsable();
    const keep = opts.keep ?? 'none';
    assert(keep === 'none' || Number.isFinite(opts.seed), `powerCut keep='${keep}' needs a seed`);
    this.dead = true;
    const cut = this.cut(keep, opts.seed ?? 0);
    this.cutting = cut.catch(() => undefined);
    return await cut;
  }

  private async cut(keep: PowerCutKeep, seed: number): Promise<PowerCutReport> {
    // A flush in progress stops at its next write (it sees `dead`); wait for it and for
    // write-through / read I/O already below us, so the lower device is quiet.
    await this.flushChain;
    await this.waitDrained();
    const pending = this.log;
    this.log = [];
    this.logBytes = 0;
    const report: PowerCutReport = { pendingWrites: pending.length, keptWrites: [], tornWrite: null };
    const toApply: LoggedWrite[] = [];
    if (keep === 'random-subset') {
      const prng = new Prng(seed);
      const chosen = pending.map((_, i) => i).filter(() => (prng.next() & 1) === 1);
      prng.shuffle(chosen);
      for (const i of chosen) toApply.push(pending[i] as LoggedWrite);
      report.keptWrites = chosen;
    } else if (keep === 'prefix') {
      const prng = new Prng(seed);
      const prefixLength = prng.int(0, pending.length + 1);
      for (let i = 0; i < prefixLength; i++) {
        toApply.push(pending[i] as LoggedWrite);
        report.keptWrites.push(i);
      }
      const next = pending[prefixLength];
      if (next !== undefined && next.data.length > this.sectorSize && prng.float() < 0.5) {
        const torn = this.tear(next, prng);
        toApply.push(...torn.writes);
        report.tornWrite = { index: prefixLength, keptSectors: torn.keptSectors, totalSectors: next.data.length / this.sectorSize };
      }
    }
    for (const w of toApply) await this.lower.write(w.offsetBytes, w.data);
    await this.lower.flush();
    return report;
  }

  /**
   * Flushes what is pending unless the power was cut, then closes the lower device. Calls made
   * afterwards reject with 'ECLOSED'. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await this.waitDrained();
      if (this.cutting) await this.cutting;
      let flushError: unknown = null;
      if (!this.dead && !this.readOnly) {
        try {
          await this.enqueueFlush();
        } catch (err) {
          flushError = err;
        }
      }
      await this.lower.close();
      if (flushError !== null) throw flushError;
    })();
    return this.closing;
  }

  /** A random proper, non-empty subset of the write's sectors, as one write per sector. */
  private tear(w: LoggedWrite, prng: Prng): { writes: LoggedWrite[]; keptSectors: number[] } {
    const sectors = w.data.length / this.sectorSize;
    assert(Number.isInteger(sectors) && sectors >= 2);
    const kept = Array.from({ length: sectors }, () => (prng.next() & 1) === 1);
    const count = kept.filter(Boolean).length;
    if (count === 0 || count === sectors) {
      const flip = prng.int(0, sectors);
      kept[flip] = !kept[flip];
    }
    const keptSectors = kept.flatMap((k, i) => (k ? [i] : []));
    assert(keptSectors.length > 0 && keptSectors.length < sectors);
    const writes = keptSectors.map((s) => ({
      offsetBytes: w.offsetBytes + s * this.sectorSize,
      data: w.data.subarray(s * this.sectorSize, (s + 1) * this.sectorSize),
    }));
    return { writes, keptSectors };
  }

  private enqueueFlush(): Promise<void> {
    const run = this.flushChain.then(() => this.writeBack());
    this.flushChain = run.catch(() => undefined);
    return run;
  }

  /** Applies the log to the lower device oldest first, then flushes it. */
  private async writeBack(): Promise<void> {
    if (this.writeThrough) {
      this.checkAlive();
      await this.lower.flush();
      this.checkAlive();
      return;
    }
    // Writes logged while we work are taken too: flushing more than asked is allowed, and the
    // loop still ends because it only takes what was there when it started.
    const count = this.log.length;
    for (let i = 0; i < count; i++) {
      this.checkAlive();
      const w = this.log[0];
      assert(w !== undefined);
      await this.lower.write(w.offsetBytes, w.data);
      // It reached the lower device even if the power was cut meanwhile: powerCut waits for
      // us before it takes the log, so it sees exactly what is still missing below.
      assert(this.log[0] === w, 'log head changed under the flusher');
      this.log.shift();
      this.logBytes -= w.data.length;
    }
    this.checkAlive();
    await this.lower.flush();
    this.checkAlive();
  }

  private checkUsable(): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', `${this.name}: device is closed`);
    this.checkAlive();
  }

  private checkAlive(): void {
    if (this.dead) throw new BlockDeviceError('EIO', `${this.name}: device lost power (powerCut); reopen it`);
  }

  private consume(kind: OpKind): void {
    const left = this.remaining[kind];
    if (left === undefined) return;
    if (left === 0) throw new BlockDeviceError('EIO', `${this.name}: injected ${kind.slice(0, -1)} failure (failAfter)`);
    this.remaining[kind] = left - 1;
  }

  // Unbounded on purpose: everything we wait for is I/O on the lower device, which has its
  // own bounds; a timeout here would leave the lower device in an unknown state.
  private async waitDrained(): Promise<void> {
    await this.inFlight.drained();
  }
}
