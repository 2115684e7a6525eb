// The transaction API: every metadata change is made on block images held by a
// Transaction and reaches the disk at commit, all together. Today commit writes the blocks
// in place and flushes; the per-slot journal (issue 4) goes between commit and the device
// without changing this API. On a cluster mount each inode's lock is taken as the transaction
// first reads it, or changes it (Volume.inodeGuard, fs/inode-locks.ts).
//
// Blocks are changed as decoded objects: a get hands out a private copy, a put records a copy
// of the object as it is then, and each changed block is encoded and checksummed once, at
// commit, however often the operation put it. What reaches the journal is unchanged: one
// sealed image per block the transaction changed.
import { isDeepStrictEqual } from 'node:util';
import { CorruptionError, FsError } from './errors';
import { INODE_FL, SIG, Signature } from './format/constants';
import { DirLeaf, cloneDirLeaf, decodeDirLeaf, encodeDirLeaf, viewDirLeafOverImage } from './format/dirent';
import { ExtentBlock, cloneExtentBlock, decodeExtentBlock, encodeExtentBlock } from './format/extent-block';
import { GroupDesc, cloneGroup, decodeGroup, encodeGroup, groupParentOf, viewGroupOverImage } from './format/group';
import { Inode, cloneInode, decodeInode, encodeInode, viewInodeOverImage } from './format/inode';
import { XattrBlock, cloneXattrBlock, decodeXattrBlock, encodeXattrBlock } from './format/xattr';
import type { Volume } from './volume';

/** Check every decoded object against a fresh decode of its image (tests set O2FS_PARANOID=1). */
const PARANOID = process.env.O2FS_PARANOID === '1';

/** How one kind of metadata block turns into an object and back. */
interface Codec<T> {
  readonly signature: Signature;
  decode(image: Buffer): T;
  encode(obj: T, bs: number): Buffer;
  /** A copy to hand out: changing it changes nothing else (equal to decode(encode(obj))). */
  clone(obj: T): T;
  /**
   * `obj` (private, and equal to what `image` decodes to) made fit to live as long as the
   * image: holding no buffer but the image's own bytes. Null: do not keep it, decode again.
   */
  keep(obj: T, image: Buffer): T | null;
}

const INODE: Codec<Inode> = { signature: SIG.inode, decode: decodeInode, encode: encodeInode, clone: cloneInode, keep: viewInodeOverImage };
const GROUP: Codec<GroupDesc> = { signature: SIG.group, decode: decodeGroup, encode: encodeGroup, clone: cloneGroup, keep: viewGroupOverImage };
const EXTENT_BLOCK: Codec<ExtentBlock> = { signature: SIG.extentBlock, decode: decodeExtentBlock, encode: encodeExtentBlock, clone: cloneExtentBlock, keep: (eb) => eb };
const DIR_LEAF: Codec<DirLeaf> = {
  signature: SIG.dirLeaf,
  decode: decodeDirLeaf,
  encode: encodeDirLeaf,
  clone: cloneDirLeaf,
  // Decoded names are views into the image; a leaf changed in a transaction is re-pointed at
  // its new image so it does not keep older ones alive.
  keep: viewDirLeafOverImage,
};
// Rare, and its names and values are small pooled copies (see viewInodeOverImage): not kept.
const XATTR_BLOCK: Codec<XattrBlock> = { signature: SIG.xattrBlock, decode: decodeXattrBlock, encode: encodeXattrBlock, clone: cloneXattrBlock, keep: () => null };

/** A decoded block: the object is never handed out, only copies of it. */
interface Decoded<T> {
  codec: Codec<T>;
  obj: T;
}

/** Blocks one transaction may dirty (bounds memory and, later, journal space). */
export const TX_BLOCKS_MAX = 65536;

export class Transaction {
  readonly vol: Volume;
  /** New images of blocks, sealed (put raw, or encoded from `changed`). */
  private readonly dirty = new Map<number, Buffer>();
  /**
   * Blocks changed as objects: encoded and sealed once, at commit, however many times the
   * operation put them (a create put the parent, the allocator and its group several times
   * each). Never holds a block `dirty` holds.
   */
  private readonly changed = new Map<number, Decoded<unknown>>();
  /** The objects `dirty` images were encoded from (kept beside them once committed). */
  private readonly encoded = new Map<number, Decoded<unknown>>();
  private readonly freed = new Set<number>();
  /** Inodes this transaction allocated (nobody else can know them before it commits). */
  private readonly created = new Set<number>();
  /** Data clusters this transaction freed: not reusable until it is durably committed. */
  readonly freedClusters: Array<{ startCluster: number; clusters: number }> = [];
  /**
   * This transaction maps file data to clusters whose old contents must not show (newly
   * allocated, or unwritten until now): the journal commit that makes it durable flushes
   * the data before writing its commit record (ordered data). Others need no such flush.
   */
  orderedData = false;
  private done = false;

  constructor(vol: Volume) {
    this.vol = vol;
  }

  get bs(): number {
    return this.vol.geo.blockSize;
  }

  get dirtyCount(): number {
    return this.dirty.size + this.changed.size;
  }

  /** A verified metadata block as this transaction sees it: shared and immutable (Volume.readMeta). */
  async read(blkno: number, sig: Signature): Promise<Buffer> {
    this.assertOpen();
    if (this.changed.has(blkno)) this.encodeChanged(blkno);
    const mine = this.dirty.get(blkno);
    if (mine) return mine;
    return this.vol.readMeta(blkno, sig);
  }

  /** Records a new image of a metadata block (already encoded and sealed; never changed after). */
  put(blkno: number, image: Buffer): void {
    this.assertOpen();
    if (image.length !== this.bs) throw new Error(`assertion: image of block ${blkno} has ${image.length} bytes`);
    this.vol.blockOffset(blkno);
    this.changed.delete(blkno);
    this.encoded.delete(blkno);
    this.dirty.set(blkno, image);
    this.freed.delete(blkno);
    this.assertSize();
  }

  /** The block was freed: drop any image of it so it is not written. */
  discard(blkno: number): void {
    this.dirty.delete(blkno);
    this.changed.delete(blkno);
    this.encoded.delete(blkno);
    this.freed.add(blkno);
  }

  /** The inode at `blkno` is new, allocated by this transaction. */
  markCreated(blkno: number): void {
    this.assertOpen();
    this.created.add(blkno);
  }

  async getInode(blkno: number): Promise<Inode> {
    return this.getObject(blkno, INODE);
  }
  putInode(ino: Inode): void {
    this.putObject(ino.blkno, INODE, ino);
  }
  async getGroup(blkno: number): Promise<GroupDesc> {
    const g = await this.getObject(blkno, GROUP);
    // Cluster mounts: its allocator's lock covers it, and must have been taken first.
    this.vol.inodeGuard?.assertCovered(g.parentBlkno, `allocator group ${blkno}`);
    return g;
  }
  /**
   * The allocator inode group `blkno` belongs to (set when the group is made), without
   * reading the group into this transaction: from its state here, else Volume.groupParent.
   */
  async groupParent(blkno: number): Promise<number> {
    const mine = this.changed.get(blkno);
    if (mine) {
      if (mine.codec !== GROUP) throw new CorruptionError(blkno, `read as a group, but this transaction changed it as ${mine.codec.signature}`);
      return (mine.obj as GroupDesc).parentBlkno;
    }
    const image = this.dirty.get(blkno);
    return image ? groupParentOf(image) : this.vol.groupParent(blkno);
  }
  putGroup(g: GroupDesc): void {
    this.putObject(g.blkno, GROUP, g);
  }
  async getExtentBlock(blkno: number): Promise<ExtentBlock> {
    return this.getObject(blkno, EXTENT_BLOCK);
  }
  putExtentBlock(eb: ExtentBlock): void {
    this.putObject(eb.blkno, EXTENT_BLOCK, eb);
  }
  /**
   * A directory leaf for this transaction to change: its own entries array over Dirent
   * objects shared with other readers (Dirents are never changed in place, only replaced).
   */
  async getDirLeaf(blkno: number): Promise<DirLeaf> {
    return this.getObject(blkno, DIR_LEAF);
  }
  putDirLeaf(leaf: DirLeaf): void {
    this.putObject(leaf.blkno, DIR_LEAF, leaf);
  }
  async getXattrBlock(blkno: number): Promise<XattrBlock> {
    return this.getObject(blkno, XATTR_BLOCK);
  }
  putXattrBlock(xb: XattrBlock): void {
    this.putObject(xb.blkno, XATTR_BLOCK, xb);
  }

  /**
   * A private copy of a block as this transaction sees it: the state of its last put here,
   * else the decoded image (decoded once per image: Volume.decodedOf).
   */
  private async getObject<T>(blkno: number, codec: Codec<T>): Promise<T> {
    this.assertOpen();
    const mine = this.changed.get(blkno);
    if (mine) {
      // Old code decoded whatever image it held here; a block read as another kind is damage.
      if (mine.codec !== codec) throw new CorruptionError(blkno, `read as ${codec.signature}, but this transaction changed it as ${mine.codec.signature}`);
      return codec.clone(mine.obj as T);
    }
    if (codec === INODE && this.vol.inodeGuard) {
      const locking = this.vol.inodeGuard.reading(blkno);
      if (locking) await locking;
    }
    const image = await this.read(blkno, codec.signature);
    const known = this.vol.decodedOf(blkno, image) as Decoded<T> | undefined;
    let obj: T;
    if (known && known.codec === codec) {
      if (PARANOID) this.assertDecodes(blkno, image, known);
      obj = known.obj as T;
    } else {
      obj = codec.decode(image);
      this.remember(blkno, image, codec, obj);
    }
    if (codec === INODE && this.vol.inodeGuard) {
      const ino = obj as Inode;
      if (ino.flags & INODE_FL.valid) this.vol.inodeGuard.readInode(blkno, ino.generation);
    }
    return codec.clone(obj);
  }

  /** Records the state of `obj` now (a copy: later changes to `obj` need another put). */
  private putObject<T>(blkno: number, codec: Codec<T>, obj: T): void {
    this.assertOpen();
    this.vol.blockOffset(blkno);
    this.dirty.delete(blkno);
    this.encoded.delete(blkno);
    this.changed.set(blkno, { codec, obj: codec.clone(obj) });
    this.freed.delete(blkno);
    this.assertSize();
  }

  /** Encodes and seals a changed block; its image then stands for it like any put image. */
  private encodeChanged(blkno: number): void {
    const d = this.changed.get(blkno);
    if (!d) throw new Error(`assertion: block ${blkno} is not changed in this transaction`);
    const image = d.codec.encode(d.obj, this.bs);
    if (image.length !== this.bs) throw new Error(`assertion: image of block ${blkno} has ${image.length} bytes`);
    // Copies handed out so far came from d.obj: the image must say exactly the same.
    if (PARANOID) this.assertDecodes(blkno, image, d);
    this.changed.delete(blkno);
    this.dirty.set(blkno, image);
    this.encoded.set(blkno, d);
  }

  /** Keeps the decoded form of a cached image for later readers, if its codec allows. */
  private remember<T>(blkno: number, image: Buffer, codec: Codec<T>, obj: T): void {
    const kept = codec.keep(obj, image);
    if (kept) this.vol.setDecoded(blkno, image, { codec, obj: kept });
  }

  /** After commit put the images in the cache: their objects go beside them. */
  private rememberEncoded(): void {
    for (const [blkno, d] of this.encoded) {
      const image = this.dirty.get(blkno);
      if (image) this.remember(blkno, image, d.codec, d.obj);
    }
  }

  private assertDecodes(blkno: number, image: Buffer, d: Decoded<unknown>): void {
    if (!isDeepStrictEqual(d.codec.decode(image), d.obj)) throw new Error(`assertion: decoded ${d.codec.signature} block ${blkno} differs from its image`);
  }

  private assertSize(): void {
    if (this.dirtyCount > TX_BLOCKS_MAX) throw new FsError('ENOSPC', 'transaction too large');
  }

  /**
   * Ends the transaction. On a mounted volume the blocks join the journal's running
   * transaction (durable at the next journal commit: commit= seconds, fsync, or `durable`).
   * Offline (mkfs, fsck), or with `inPlace`, they are written in place, and flushed unless
   * durable is false.
   */
  async commit(opts: { durable?: boolean; inPlace?: boolean } = {}): Promise<void> {
    this.assertOpen();
    const guard = this.vol.inodeGuard;
    if (guard && this.dirtyCount > 0) guard.committing();
    if (guard) {
      // Cluster mount: every inode changed must be ours at EX (a new one is locked here).
      for (const m of [this.changed, this.encoded]) {
        for (const [blkno, d] of m) {
          if (d.codec !== INODE) continue;
          const locking = guard.writing(blkno, (d.obj as Inode).generation, this.created.has(blkno));
          if (locking) await locking;
        }
      }
    }
    for (const blkno of [...this.changed.keys()]) this.encodeChanged(blkno);
    this.done = true;
    for (const b of this.freed) this.vol.forget(b);
    const journal = this.vol.journal;
    if (journal && opts.inPlace) {
      // Blocks other nodes read under a lock and never through our journal (the slot map).
      for (const b of this.dirty.keys()) if (journal.lookup(b)) throw new Error(`assertion: in-place write of journaled block ${b}`);
    } else if (journal) {
      // A mount: the journal takes the blocks; they reach their place at checkpoint.
      if (this.vol.readOnly && this.dirty.size > 0) throw new FsError('EROFS', 'volume is read-only');
      journal.add(this.dirty, this.freed, this.freedClusters, this.orderedData);
      for (const [blkno, image] of this.dirty) this.vol.updateCache(blkno, image);
      this.rememberEncoded();
      if ((opts.durable ?? false) || journal.runningBlocks > journal.runningLimit) await journal.commit();
      return;
    }
    if (this.dirty.size === 0) return;
    await this.vol.writeMeta(this.dirty);
    this.rememberEncoded();
    if (opts.durable ?? true) await this.vol.flush();
  }

  abort(): void {
    this.done = true;
  }

  private assertOpen(): void {
    if (this.done) throw new Error('assertion: transaction already finished');
  }
}
