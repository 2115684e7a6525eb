// The transaction API: every metadata change is made on block images held by a
// Transaction and reaches the disk at commit, all together. Today commit writes the blocks
// in place and flushes; the per-slot journal (issue 4) goes between commit and the device
// without changing this API. Locks are taken before a transaction starts (DESIGN.md §4).
import { FsError } from './errors';
import { SIG, Signature } from './format/constants';
import { DirLeaf, decodeDirLeaf, encodeDirLeaf } from './format/dirent';
import { ExtentBlock, decodeExtentBlock, encodeExtentBlock } from './format/extent-block';
import { GroupDesc, decodeGroup, encodeGroup } from './format/group';
import { Inode, decodeInode, encodeInode } from './format/inode';
import { XattrBlock, decodeXattrBlock, encodeXattrBlock } from './format/xattr';
import type { Volume } from './volume';

/** Decoded directory leaves by image (see getDirLeaf); gone with the image. */
const decodedLeaves = new WeakMap<Buffer, DirLeaf>();

/** Blocks one transaction may dirty (bounds memory and, later, journal space). */
export const TX_BLOCKS_MAX = 65536;

export class Transaction {
  readonly vol: Volume;
  private readonly dirty = new Map<number, Buffer>();
  private readonly freed = new Set<number>();
  /** Data clusters this transaction freed: not reusable until it is durably committed. */
  readonly freedClusters: Array<{ startCluster: number; clusters: number }> = [];
  private done = false;

  constructor(vol: Volume) {
    this.vol = vol;
  }

  get bs(): number {
    return this.vol.geo.blockSize;
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  /** A verified metadata block as this transaction sees it: shared and immutable (Volume.readMeta). */
  async read(blkno: number, sig: Signature): Promise<Buffer> {
    this.assertOpen();
    const mine = this.dirty.get(blkno);
    if (mine) return mine;
    return this.vol.readMeta(blkno, sig);
  }

  /** Records a new image of a metadata block (already encoded and sealed; never changed after). */
  put(blkno: number, image: Buffer): void {
    this.assertOpen();
    if (image.length !== this.bs) throw new Error(`assertion: image of block ${blkno} has ${image.length} bytes`);
    this.vol.blockOffset(blkno);
    this.dirty.set(blkno, image);
    this.freed.delete(blkno);
    if (this.dirty.size > TX_BLOCKS_MAX) throw new FsError('ENOSPC', 'transaction too large');
  }

  /** The block was freed: drop any image of it so it is not written. */
  discard(blkno: number): void {
    this.dirty.delete(blkno);
    this.freed.add(blkno);
  }

  async getInode(blkno: number): Promise<Inode> {
    return decodeInode(await this.read(blkno, SIG.inode));
  }
  putInode(ino: Inode): void {
    this.put(ino.blkno, encodeInode(ino, this.bs));
  }
  async getGroup(blkno: number): Promise<GroupDesc> {
    return decodeGroup(await this.read(blkno, SIG.group));
  }
  putGroup(g: GroupDesc): void {
    this.put(g.blkno, encodeGroup(g, this.bs));
  }
  async getExtentBlock(blkno: number): Promise<ExtentBlock> {
    return decodeExtentBlock(await this.read(blkno, SIG.extentBlock));
  }
  putExtentBlock(eb: ExtentBlock): void {
    this.put(eb.blkno, encodeExtentBlock(eb, this.bs));
  }
  /**
   * A directory leaf for this transaction to change: its own entries array over Dirent
   * objects shared with other readers (Dirents are never changed in place, only replaced).
   * Decoding is cached per image, since images are immutable: a lookup in a big directory
   * otherwise decoded a whole leaf.
   */
  async getDirLeaf(blkno: number): Promise<DirLeaf> {
    const image = await this.read(blkno, SIG.dirLeaf);
    let leaf = decodedLeaves.get(image);
    if (!leaf) {
      leaf = decodeDirLeaf(image);
      decodedLeaves.set(image, leaf);
    }
    return { ...leaf, entries: leaf.entries.slice() };
  }
  putDirLeaf(leaf: DirLeaf): void {
    this.put(leaf.blkno, encodeDirLeaf(leaf, this.bs));
  }
  async getXattrBlock(blkno: number): Promise<XattrBlock> {
    return decodeXattrBlock(await this.read(blkno, SIG.xattrBlock));
  }
  putXattrBlock(xb: XattrBlock): void {
    this.put(xb.blkno, encodeXattrBlock(xb, this.bs));
  }

  /**
   * Ends the transaction. On a mounted volume the blocks join the journal's running
   * transaction (durable at the next journal commit: commit= seconds, fsync, or `durable`).
   * Offline (mkfs, fsck), or with `inPlace`, they are written in place, and flushed unless
   * durable is false.
   */
  async commit(opts: { durable?: boolean; inPlace?: boolean } = {}): Promise<void> {
    this.assertOpen();
    this.done = true;
    for (const b of this.freed) this.vol.forget(b);
    const journal = this.vol.journal;
    if (journal && opts.inPlace) {
      // Blocks other nodes read under a lock and never through our journal (the slot map).
      for (const b of this.dirty.keys()) if (journal.lookup(b)) throw new Error(`assertion: in-place write of journaled block ${b}`);
    } else if (journal) {
      // A mount: the journal takes the blocks; they reach their place at checkpoint.
      if (this.vol.readOnly && this.dirty.size > 0) throw new FsError('EROFS', 'volume is read-only');
      journal.add(this.dirty, this.freed, this.freedClusters);
      for (const [blkno, image] of this.dirty) this.vol.updateCache(blkno, image);
      if ((opts.durable ?? false) || journal.runningBlocks > journal.runningLimit) await journal.commit();
      return;
    }
    if (this.dirty.size === 0) return;
    await this.vol.writeMeta(this.dirty);
    if (opts.durable ?? true) await this.vol.flush();
  }

  abort(): void {
    this.done = true;
  }

  private assertOpen(): void {
    if (this.done) throw new Error('assertion: transaction already finished');
  }
}
