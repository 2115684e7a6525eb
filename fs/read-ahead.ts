// Read-ahead for mounts whose kernel caches no pages (cluster mounts, -o nokernelcache):
// there each read(2) is one READ, sent only when the reader asks, so a sequential reader
// waits for the device on every request. When a READ continues where the last one of its
// inode ended, up to READ_AHEAD_WINDOW_BYTES past it are read in the background,
// READ_AHEAD_CHUNK_BYTES at a time (each under its own lock scope: the caller's `fetch`),
// and the READs that ask for them are answered from memory.
//
// Validity: one epoch for the whole mount. It moves whenever data read so far may no
// longer be what the disk says: any change made on this node (every changing operation,
// when it ends) and any lock another node may change data under next (an inode lock
// dropping to NL, an extent lock leaving its level). Bytes fetched in an earlier epoch are
// never served. A fetch holds its inode's lock while it reads, so what it read was current
// when the epoch was taken, unless the epoch moved meanwhile (then it is dropped).
const STREAMS_MAX = 64;
/** READs smaller than this do not start reading ahead (they may continue it). */
export const READ_AHEAD_MIN_BYTES = 64 * 1024;
/** What one fetch reads: the largest READ (max_read). */
export const READ_AHEAD_CHUNK_BYTES = 1024 * 1024;
/**
 * How far ahead of a sequential reader fetches run, in bytes: several at once, since a
 * device serves one request at a time slowly (the kernel's own read-ahead of a mount with
 * a page cache keeps as many READs in flight).
 */
export const READ_AHEAD_WINDOW_BYTES = 4 * 1024 * 1024;
/** At most this many readers have fetches at a time (the least recently read lose theirs). */
const STREAMS_AHEAD_MAX = 8;

interface Fetch {
  offset: number;
  size: number;
  epoch: number;
  data: Promise<Buffer | null>;
}

interface Stream {
  /** Where the furthest READ asked for so far ends (READs answered or still being read). */
  requestedEnd: number;
  /** Fetches in offset order, each starting where the one before ends. */
  ahead: Fetch[];
}

export class ReadAhead {
  private epoch = 0;
  /** By inode block, least recently read first. */
  private readonly streams = new Map<number, Stream>();
  readonly stats = { fetched: 0, served: 0, dropped: 0 };

  /** Data read so far may have changed (see the header). */
  bump(): void {
    this.epoch += 1;
  }

  /**
   * A READ of [offset, offset + size) of inode `blkno` arrived: is it sequential (it starts
   * where the furthest READ asked for so far ends: the kernel may split one read(2) into
   * READs in flight at once)?
   */
  arrive(blkno: number, offset: number, size: number): boolean {
    let s = this.streams.get(blkno);
    // Small reads are left to go one by one (a 1 MiB fetch for each would cost more).
    const sequential = s !== undefined && s.requestedEnd === offset && (size >= READ_AHEAD_MIN_BYTES || s.ahead.length > 0);
    if (s) this.streams.delete(blkno);
    else s = { requestedEnd: 0, ahead: [] };
    this.streams.set(blkno, s);
    this.bound();
    s.requestedEnd = offset + size;
    return sequential;
  }

  /**
   * The bytes [offset, offset + size) of inode `blkno` if the oldest fetches hold them (null
   * otherwise): a READ may span two, since fetches start where the READs before them
   * ended, not where the next READ will. A fetch goes once a READ reaches its end. A
   * shorter buffer means the file ended there when they were read.
   */
  async take(blkno: number, offset: number, size: number): Promise<Buffer | null> {
    const s = this.streams.get(blkno);
    if (!s) return null;
    const end = offset + size;
    const pieces: Buffer[] = [];
    for (let pos = offset; pos < end;) {
      const a = s.ahead[0];
      if (!a || pos < a.offset || pos >= a.offset + a.size) return pieces.length > 0 ? this.drop(s) : null;
      if (end >= a.offset + a.size) s.ahead.shift();
      const data = a.epoch === this.epoch ? await a.data : null;
      if (data === null || a.epoch !== this.epoch) return this.drop(s);
      const from = pos - a.offset;
      const to = Math.min(end - a.offset, data.length);
      if (from < to) pieces.push(data.subarray(from, to));
      if (data.length < a.size) break; // the file ended inside this fetch
      pos = a.offset + a.size;
    }
    this.stats.served += 1;
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
  }

  private drop(s: Stream): null {
    this.stats.dropped += 1 + s.ahead.length;
    s.ahead = [];
    return null;
  }

  /**
   * A READ was answered: if it was sequential, `fetch` reads on, from where the fetches and
   * the READs asked for so far end, READ_AHEAD_CHUNK_BYTES at a time, in the background,
   * until READ_AHEAD_WINDOW_BYTES are ahead; fetch resolves null where there is nothing to
   * read (end of file). A READ that was not sequential drops the inode's fetches.
   */
  after(blkno: number, sequential: boolean, fetch: (offset: number, size: number) => Promise<Buffer | null>): void {
    const s = this.streams.get(blkno);
    if (!s) return;
    if (!sequential || (s.ahead.length > 0 && s.ahead[0].epoch !== this.epoch)) {
      s.ahead = [];
      if (!sequential) return;
    }
    const last = s.ahead[s.ahead.length - 1];
    let from = Math.max(last ? last.offset + last.size : 0, s.requestedEnd);
    const reader = s.ahead.length > 0 ? s.ahead[0].offset : s.requestedEnd;
    while (from + READ_AHEAD_CHUNK_BYTES - reader <= READ_AHEAD_WINDOW_BYTES) {
      this.stats.fetched += 1;
      s.ahead.push({ offset: from, size: READ_AHEAD_CHUNK_BYTES, epoch: this.epoch, data: fetch(from, READ_AHEAD_CHUNK_BYTES).catch(() => null) });
      from += READ_AHEAD_CHUNK_BYTES;
    }
  }

  /** Inode `blkno` is gone or its reader closed: forget its stream. */
  forget(blkno: number): void {
    this.streams.delete(blkno);
  }

  private bound(): void {
    if (this.streams.size > STREAMS_MAX) this.streams.delete(this.streams.keys().next().value as number);
    let withFetches = 0;
    for (const s of [...this.streams.values()].reverse()) {
      if (s.ahead.length > 0 && ++withFetches > STREAMS_AHEAD_MAX) s.ahead = [];
    }
  }
}
