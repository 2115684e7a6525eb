// File data writes answered before they reach the device ("write-behind").
//
// A FUSE WRITE without a writeback cache is synchronous for the writer: the kernel copies the
// next megabyte only after we answer. Answering once the metadata is in the transaction and
// the data write is started, not finished, lets the device write overlap the kernel's copy
// of the next request. What keeps that invisible (every rule is by block range):
//   - a data read waits for the writes behind that overlap it (it would read the old bytes);
//   - a write, data or metadata, to blocks with a write behind waits for it first (the two
//     could land in either order: a freed cluster may be reused while its old write is out);
//   - a journal commit, and every flush, waits for all of them first (ordered data: no
//     committed metadata may point at data that is not on the device);
//   - on a cluster mount, an inode lock leaving EX waits for all of them (the next holder,
//     on another node, reads the disk): the downconvert's checkpoint (fs/super.ts);
//   - at most `maxBytes` are behind at once; a new one waits for room.
// A failed write behind is logged and reported, once, by the next drain (fsync, commit,
// unmount), as the kernel reports a writeback error at the next fsync.
import assert from 'node:assert/strict';
import { FsError } from './errors';

interface WriteBehind {
  firstBlock: number;
  endBlock: number;
  bytes: number;
  /** Settles (never rejects) when the write has finished or failed. */
  settled: Promise<void>;
}

export class DataWritesBehind {
  private readonly writes = new Set<WriteBehind>();
  private bytes = 0;
  private failure: Error | null = null;
  private readonly roomWaiters: Array<() => void> = [];

  constructor(private readonly maxBytes: number, private readonly log: (line: string) => void) {
    assert(Number.isSafeInteger(maxBytes) && maxBytes > 0);
  }

  get bytesBehind(): number {
    return this.bytes;
  }

  /** Waits until no write behind touches blocks [firstBlock, endBlock). */
  async overlapping(firstBlock: number, endBlock: number): Promise<void> {
    for (;;) {
      const w = this.find(firstBlock, endBlock);
      if (!w) return;
      await w.settled;
    }
  }

  /**
   * Starts `write` (of `bytes` to blocks [firstBlock, endBlock)) once no earlier write behind
   * overlaps it and there is room; resolves when it has started, with `done`, which settles
   * (never rejects) when it has finished (the caller keeps the data alive until then).
   */
  async start(firstBlock: number, endBlock: number, bytes: number, write: () => Promise<void>): Promise<{ done: Promise<void> }> {
    assert(firstBlock < endBlock && bytes > 0);
    await this.overlapping(firstBlock, endBlock);
    while (this.bytes > 0 && this.bytes + bytes > this.maxBytes) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
    // Another start may have taken the range while this one waited for room.
    if (this.find(firstBlock, endBlock)) return this.start(firstBlock, endBlock, bytes, write);
    const w: WriteBehind = { firstBlock, endBlock, bytes, settled: Promise.resolve() };
    w.settled = write().then(
      () => undefined,
      (e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        this.log(`error: data write of blocks ${firstBlock}..${endBlock - 1} failed after it was answered: ${err.message}`);
        this.failure ??= err;
      },
    ).finally(() => {
      this.writes.delete(w);
      this.bytes -= bytes;
      assert(this.bytes >= 0);
      for (const wake of this.roomWaiters.splice(0)) wake();
    });
    this.writes.add(w);
    this.bytes += bytes;
    return { done: w.settled };
  }

  /** Waits for every write behind; throws EIO (once) if one failed since the last drain. */
  async drain(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes].map((w) => w.settled));
    const failure = this.failure;
    this.failure = null;
    if (failure) throw new FsError('EIO', `a data write failed after it was answered: ${failure.message}`);
  }

  private find(firstBlock: number, endBlock: number): WriteBehind | undefined {
    for (const w of this.writes) if (w.firstBlock < endBlock && firstBlock < w.endBlock) return w;
    return undefined;
  }
}
