// The per-slot write-ahead journal (DESIGN.md §3). Metadata changes of a mount collect in
// a running transaction; a commit writes them to the slot's journal as descriptor + block
// images (+ revokes) + commit record, after which they are durable; a checkpoint later
// writes the blocks in place and empties the log. Until checkpointed, the newest images
// live here, and Volume.readMeta asks us first.
//
// Ordering (ordered data): file data goes to its clusters when written; a commit writes
// its log blocks, then, if it maps data to new or unwritten clusters, flushes (that data
// durable before anything points at it), then writes the commit record and flushes. Replay
// accepts a transaction only with a commit record of the right sequence and a checksum
// over its log blocks, so a torn transaction is ignored: the log itself needs no flush
// before its commit record.
//
// The journal superblock's `start` is 0 when the log is empty (clean) and otherwise the
// log block where replay begins, with `startSequence` the transaction expected there. It is
// written before the first commit record that depends on it and made durable by that
// commit's last flush at the latest (until then, that commit is not durable either).
import { crc32c } from '@node-rs/crc32';
import { FsError } from './errors';
import { SIG, SYSFILE, slotFileName } from './format/constants';
import { CommitRecord, ListRecord, blocksPerRecord, decodeRecord, encodeCommit, encodeListRecord } from './format/journal-records';
import { JournalSuper, decodeJournalSuper, encodeJournalSuper } from './format/journal-super';
import { Transaction } from './transaction';
import type { Volume } from './volume';

export interface ReplayResult {
  transactions: number;
  blocks: number;
  revoked: number;
  lastSequence: number;
}

interface Run {
  firstBlock: number;
  blocks: number;
}

/** Longest run of blocks written with one device write (bounds the bounce buffer). */
const RUN_BLOCKS_MAX = 256;
/** Fraction of the log after which a commit checkpoints first. */
const CHECKPOINT_AT_FRACTION = 0.5;

export class Journal {
  readonly vol: Volume;
  readonly slot: number;
  private readonly runs: Run[];
  private readonly total: number;
  private js: JournalSuper;
  /** Log positions are 1..total-1 (0 is the superblock). */
  private head: number;
  private tail: number;
  private nextSeq: number;
  private running = new Map<number, Buffer>();
  private runningRevokes = new Set<number>();
  /**
   * Clusters freed by the running and the in-flight transaction. Until the transaction that
   * freed them is committed, a crash gives them back to their old owner, so nobody else may
   * write to them (OCFS2 keeps freed clusters in the truncate log for the same reason).
   */
  private runningFrees: Array<{ startCluster: number; clusters: number }> = [];
  private inflightFrees: Array<{ startCluster: number; clusters: number }> = [];
  /** The running transaction has ordered data (Transaction.orderedData). */
  private runningOrdered = false;
  /** The transaction being written to the log right now. */
  private inflight: Map<number, Buffer> | null = null;
  private committed = new Map<number, Buffer>();
  private busy: Promise<void> = Promise.resolve();
  /** A dirty journal must be replayed before anything is written through it. */
  private needsReplay: boolean;
  /** Counters for benchmarks and tests. */
  readonly stats = { commits: 0, checkpoints: 0, blocksLogged: 0 };

  private constructor(vol: Volume, slot: number, runs: Run[], js: JournalSuper) {
    this.vol = vol;
    this.slot = slot;
    this.runs = runs;
    this.js = js;
    this.total = js.totalBlocks;
    this.head = js.start === 0 ? 1 : js.start;
    this.tail = this.head;
    this.nextSeq = js.start === 0 ? js.sequence : js.startSequence;
    this.needsReplay = js.start !== 0;
  }

  static async open(vol: Volume, slot: number): Promise<Journal> {
    const tx = new Transaction(vol);
    const ino = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.journal, slot)));
    if (ino.body.kind !== 'extents' || ino.body.list.depth !== 0 || ino.body.list.records.length === 0) throw new FsError('EIO', `journal of slot ${slot} has no usable extent list`);
    const bpc = vol.geo.blocksPerCluster;
    const runs = ino.body.list.records.map((r) => ({ firstBlock: r.blkno, blocks: r.clusters * bpc }));
    const mapped = runs.reduce((n, r) => n + r.blocks, 0);
    const js = decodeJournalSuper(await tx.read(runs[0].firstBlock, SIG.journalSuper));
    if (js.totalBlocks > mapped) throw new FsError('EIO', `journal of slot ${slot} claims ${js.totalBlocks} blocks but maps ${mapped}`);
    if (js.totalBlocks < 8) throw new FsError('EIO', `journal of slot ${slot} is too small (${js.totalBlocks} blocks)`);
    return new Journal(vol, slot, runs, js);
  }

  get dirty(): boolean {
    return this.js.start !== 0;
  }

  get runningBlocks(): number {
    return this.running.size;
  }

  /** Largest running transaction before add() asks for a commit. */
  get runningLimit(): number {
    return Math.floor((this.total - 2) / 4);
  }

  /** Physical block of log position `pos`. */
  physical(pos: number): number {
    if (pos < 0 || pos >= this.total) throw new Error(`assertion: journal position ${pos} outside 0..${this.total - 1}`);
    let left = pos;
    for (const r of this.runs) {
      if (left < r.blocks) return r.firstBlock + left;
      left -= r.blocks;
    }
    throw new Error('assertion: journal position beyond its extents');
  }

  private nextPos(pos: number): number {
    return pos + 1 >= this.total ? 1 : pos + 1;
  }

  private used(): number {
    return (this.head - this.tail + (this.total - 1)) % (this.total - 1);
  }

  /** The newest image of a block that is not yet in place, if any. */
  lookup(blkno: number): Buffer | undefined {
    return this.running.get(blkno) ?? this.inflight?.get(blkno) ?? this.committed.get(blkno);
  }

  /** Takes a finished operation's blocks into the running transaction (no I/O). */
  pendingFrees(): ReadonlyArray<{ startCluster: number; clusters: number }> {
    return this.inflightFrees.length === 0 ? this.runningFrees : [...this.runningFrees, ...this.inflightFrees];
  }

  add(images: Map<number, Buffer>, freed: Set<number>, freedClusters: ReadonlyArray<{ startCluster: number; clusters: number }> = [], orderedData = false): void {
    this.runningFrees.push(...freedClusters);
    if (orderedData) this.runningOrdered = true;
    for (const [blkno, image] of images) {
      if (image.toString('latin1', 0, 3) === 'O2J') throw new Error(`assertion: block ${blkno} looks like a journal record`);
      this.running.set(blkno, image);
      this.runningRevokes.delete(blkno);
    }
    for (const blkno of freed) {
      this.running.delete(blkno);
      this.runningRevokes.add(blkno);
    }
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.busy.then(fn);
    this.busy = p.then(() => undefined, () => undefined);
    return p;
  }

  /** Makes everything added so far durable in the log; false if there was nothing to commit. */
  commit(): Promise<boolean> {
    return this.serialized(() => this.commitLocked());
  }

  private async commitLocked(): Promise<boolean> {
    if (this.needsReplay) throw new Error(`assertion: journal of slot ${this.slot} written before replay`);
    if (this.running.size === 0 && this.runningRevokes.size === 0 && this.runningFrees.length === 0) return false;
    const per = blocksPerRecord(this.vol.geo.blockSize);
    const needFor = (n: number, r: number): number => Math.ceil(n / per) + n + Math.ceil(r / per) + 1;
    // Make room first (operations keep adding meanwhile), then take the snapshot.
    const estimate = needFor(this.running.size, this.runningRevokes.size);
    if (this.used() + estimate > (this.total - 2) * CHECKPOINT_AT_FRACTION) await this.checkpointLocked();
    const images = this.running;
    const revokes = [...this.runningRevokes];
    const ordered = this.runningOrdered;
    this.running = new Map();
    this.runningRevokes = new Set();
    this.runningOrdered = false;
    this.inflightFrees = this.runningFrees;
    this.runningFrees = [];
    // Until the commit record is down, these blocks must stay visible to lookup().
    this.inflight = images;
    const targets = [...images.keys()];
    const need = needFor(targets.length, revokes.length);
    if (need > this.total - 2 - this.used()) {
      this.putBack(images, revokes, ordered);
      throw new FsError('ENOSPC', `transaction of ${need} blocks does not fit the ${this.total}-block journal`);
    }
    try {
      return await this.writeTransaction(images, targets, revokes, ordered);
    } catch (e) {
      this.putBack(images, revokes, ordered);
      throw e;
    }
  }

  /**
   * A snapshot that was not committed goes back into the running transaction: its images
   * and revokes unless that block changed there since (a newer image, or freed again), its
   * cluster frees, its need for ordered data.
   */
  private putBack(images: Map<number, Buffer>, revokes: readonly number[], ordered: boolean): void {
    for (const [b, img] of images) if (!this.running.has(b) && !this.runningRevokes.has(b)) this.running.set(b, img);
    for (const b of revokes) if (!this.running.has(b)) this.runningRevokes.add(b);
    this.runningOrdered ||= ordered;
    this.runningFrees.push(...this.inflightFrees);
    this.inflightFrees = [];
    this.inflight = null;
  }

  /**
   * Writes one transaction to the log and its commit record. Two flushes when `ordered`
   * (data its metadata points at in new or unwritten clusters goes down before the commit
   * record can), else one: the commit record's checksum over the log blocks tells a torn
   * transaction at replay, so the log needs no flush of its own before it.
   */
  private async writeTransaction(images: Map<number, Buffer>, targets: number[], revokes: number[], ordered: boolean): Promise<boolean> {
    const per = blocksPerRecord(this.vol.geo.blockSize);
    const seq = this.nextSeq;
    const fsGen = this.vol.fsGeneration;
    const bs = this.vol.geo.blockSize;
    const writes: Array<[number, Buffer]> = [];
    let pos = this.head;
    const put = (b: Buffer): void => {
      writes.push([this.physical(pos), b]);
      pos = this.nextPos(pos);
    };
    for (let i = 0; i < targets.length; i += per) {
      const chunk = targets.slice(i, i + per);
      put(encodeListRecord({ kind: 'descriptor', sequence: seq, blocks: chunk }, this.physical(pos), fsGen, bs));
      for (const t of chunk) put(images.get(t)!);
    }
    for (let i = 0; i < revokes.length; i += per) put(encodeListRecord({ kind: 'revoke', sequence: seq, blocks: revokes.slice(i, i + per) }, this.physical(pos), fsGen, bs));
    let crc = 0;
    for (const [, b] of writes) crc = crc32c(b, crc);
    const commitPos = pos;
    const commitRec = encodeCommit({ kind: 'commit', sequence: seq, blockCount: writes.length, crc, timeMs: Date.now() }, this.physical(commitPos), fsGen, bs);
    await this.writeBlocks(writes);
    if (this.js.start === 0) {
      // The log was empty: replay must now start at this transaction.
      this.js = { ...this.js, start: this.head, startSequence: seq, sequence: seq };
      await this.writeSuper();
    }
    // Data written behind is written before the flush that makes this commit durable (an
    // fsync promises it); ordered data is on the device before the commit record.
    await this.vol.allDataWritten();
    if (ordered) await this.vol.dev.flush();
    await this.vol.dev.write(this.physical(commitPos) * bs, commitRec);
    await this.vol.dev.flush();
    this.head = this.nextPos(commitPos);
    this.nextSeq = seq + 1;
    for (const [b, img] of images) this.committed.set(b, img);
    this.inflight = null;
    this.inflightFrees = [];
    this.stats.commits += 1;
    this.stats.blocksLogged += images.size;
    return true;
  }

  /**
   * Writes blocks given as [block number, image], one device write per run of consecutive
   * block numbers (a log append is one run, a checkpoint mostly short runs): one system call
   * and one threadpool trip per run instead of per block.
   */
  private async writeBlocks(writes: ReadonlyArray<readonly [number, Buffer]>): Promise<void> {
    const bs = this.vol.geo.blockSize;
    for (let i = 0; i < writes.length;) {
      let j = i + 1;
      while (j < writes.length && writes[j][0] === writes[j - 1][0] + 1 && j - i < RUN_BLOCKS_MAX) j++;
      const run = writes.slice(i, j).map(([, img]) => img);
      // A checkpoint may write over a freed data cluster whose last data write is behind.
      await this.vol.dataWritten(writes[i][0], writes[i][0] + run.length);
      await this.vol.dev.write(writes[i][0] * bs, run.length === 1 ? run[0] : Buffer.concat(run));
      i = j;
    }
  }

  /** Writes committed blocks in place and empties the log. */
  checkpoint(): Promise<void> {
    return this.serialized(() => this.checkpointLocked());
  }

  private async checkpointLocked(): Promise<void> {
    if (this.committed.size === 0 && this.js.start === 0) return;
    const bs = this.vol.geo.blockSize;
    const blocks = [...this.committed.keys()].sort((a, b) => a - b);
    await this.writeBlocks(blocks.map((b) => [b, this.committed.get(b)!]));
    await this.vol.dev.flush();
    this.committed = new Map();
    this.tail = this.head;
    this.js = { ...this.js, start: 0, startSequence: 0, sequence: this.nextSeq };
    await this.writeSuper();
    await this.vol.dev.flush();
    this.stats.checkpoints += 1;
  }

  /** Commit, checkpoint: the journal is clean and everything is in place. */
  async shutdown(): Promise<void> {
    await this.commit();
    await this.checkpoint();
  }

  private async writeSuper(): Promise<void> {
    const sbBlk = this.physical(0);
    await this.vol.dev.write(sbBlk * this.vol.geo.blockSize, encodeJournalSuper({ ...this.js, blkno: sbBlk }, this.vol.geo.blockSize));
  }

  /**
   * Replays a dirty journal: every complete transaction from `start` on is written in
   * place (except images revoked by the same or a later transaction), then the journal is
   * marked clean. Idempotent: replaying twice writes the same blocks.
   */
  async replay(log: (line: string) => void = () => undefined): Promise<ReplayResult> {
    const result: ReplayResult = { transactions: 0, blocks: 0, revoked: 0, lastSequence: this.js.sequence - 1 };
    if (this.js.start === 0) return result;
    const bs = this.vol.geo.blockSize;
    const fsGen = this.vol.fsGeneration;
    const txns: Array<{ seq: number; images: Array<[number, Buffer]>; revokes: number[] }> = [];
    let pos = this.js.start;
    let seq = this.js.startSequence;
    for (let guard = 0; guard < this.total; guard++) {
      const t = await this.readTransaction(pos, seq, bs, fsGen);
      if (!t) break;
      txns.push({ seq, images: t.images, revokes: t.revokes });
      pos = t.nextPos;
      seq += 1;
    }
    // Last revoke of each block: images from transactions up to it are skipped.
    const revokedUpTo = new Map<number, number>();
    for (const t of txns) for (const b of t.revokes) revokedUpTo.set(b, t.seq);
    const final = new Map<number, Buffer>();
    for (const t of txns) {
      for (const [target, image] of t.images) {
        const r = revokedUpTo.get(target);
        if (r !== undefined && r >= t.seq) {
          result.revoked += 1;
          continue;
        }
        final.set(target, image);
      }
    }
    for (const [target, image] of [...final].sort((a, b) => a[0] - b[0])) {
      this.vol.blockOffset(target);
      await this.vol.dev.write(target * bs, image);
    }
    await this.vol.dev.flush();
    result.transactions = txns.length;
    result.blocks = final.size;
    result.lastSequence = seq - 1;
    this.nextSeq = seq;
    this.head = 1;
    this.tail = 1;
    this.js = { ...this.js, start: 0, startSequence: 0, sequence: seq };
    await this.writeSuper();
    await this.vol.dev.flush();
    this.needsReplay = false;
    this.vol.dropCaches();
    log(`journal of slot ${this.slot}: replayed ${txns.length} transactions (${final.size} blocks, ${result.revoked} revoked images skipped)`);
    return result;
  }

  /** One complete transaction at `pos` with sequence `seq`, or null (end of log, torn, damaged). */
  private async readTransaction(pos: number, seq: number, bs: number, fsGen: number): Promise<{ images: Array<[number, Buffer]>; revokes: number[]; nextPos: number } | null> {
    const images: Array<[number, Buffer]> = [];
    const revokes: number[] = [];
    let crc = 0;
    let count = 0;
    for (let guard = 0; guard < this.total; guard++) {
      const phys = this.physical(pos);
      const buf = await this.vol.dev.read(phys * bs, bs);
      const rec = decodeRecord(buf, phys, fsGen);
      if (!rec || rec.sequence !== seq) return null;
      if (rec.kind === 'commit') {
        const c = rec as CommitRecord;
        if (c.blockCount !== count || c.crc !== crc >>> 0) return null;
        return { images, revokes, nextPos: this.nextPos(pos) };
      }
      crc = crc32c(buf, crc);
      count += 1;
      pos = this.nextPos(pos);
      const list = rec as ListRecord;
      if (list.kind === 'revoke') {
        revokes.push(...list.blocks);
        continue;
      }
      for (const target of list.blocks) {
        const phys2 = this.physical(pos);
        const img = await this.vol.dev.read(phys2 * bs, bs);
        crc = crc32c(img, crc);
        count += 1;
        images.push([target, img]);
        pos = this.nextPos(pos);
      }
    }
    return null;
  }
}
