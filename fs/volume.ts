// An open o2fs volume: geometry from the superblock, checked metadata reads, a bounded
// block cache, and the system-file directory. Everything above (transactions, allocators,
// directories, tools) reads metadata through here.
import type { BlockDevice } from '../blockdev/types';
import { CorruptionError, FsError } from './errors';
import { BACKUP_SUPER_OFFSETS, BLOCK_SIZES, INODE_FL, MAX_BACKUP_SUPERS, SIG, SUPERBLOCK_BLKNO, Signature } from './format/constants';
import { groupParentOf } from './format/group';
import { Inode, decodeInode, inodeImageIsValid } from './format/inode';
import { BLKNO_OFFSET, GENERATION_OFFSET, readU64, verifyBlock } from './format/header';
import { BlockCache } from './block-cache';
import { DataWritesBehind } from './data-behind';
import { Superblock, checkSuperblock, unsupportedIncompat } from './format/superblock';

const CACHE_BLOCKS_MAX = 16384;
/** Verify cached images completely on every use (tests); otherwise signature and block number. */
const PARANOID = process.env.O2FS_PARANOID === '1';

/** What a Transaction needs of the mounted journal (fs/journal.ts implements it). */
export interface MountJournal {
  lookup(blkno: number): Buffer | undefined;
  /** `orderedData`: the commit must flush data before its commit record (Transaction.orderedData). */
  add(images: Map<number, Buffer>, freed: Set<number>, freedClusters: ReadonlyArray<{ startCluster: number; clusters: number }>, orderedData: boolean): void;
  /** Clusters freed by transactions not yet durable: the allocator must not hand them out. */
  pendingFrees(): ReadonlyArray<{ startCluster: number; clusters: number }>;
  commit(): Promise<boolean>;
  /** Writes everything committed in place and empties the log. */
  checkpoint(): Promise<void>;
  readonly runningBlocks: number;
  readonly runningLimit: number;
}

/**
 * What a cluster mount asks of transactions (fs/inode-locks.ts implements it): the lock of
 * each inode before it is read, and at EX before a change to it commits. Either may
 * return a promise to wait for, or throw to make the operation start over.
 */
export interface InodeGuard {
  reading(blkno: number): Promise<void> | undefined;
  writing(blkno: number, generation: number, created: boolean): Promise<void> | undefined;
  /**
   * The inodes whose locks cover a block entering the cache now (the operation's: a
   * superset of its owner), or null outside any operation: then the block is not cached
   * unless it already is (it would have no owner to be dropped with).
   */
  owners(blkno: number): readonly number[] | null;
  /** A transaction with changes commits: it must run in an operation holding its locks at EX. */
  committing(): void;
  /** A block covered by inode `owner`'s lock is being read: the operation must hold that lock (assertion). */
  assertCovered(owner: number, what: string): void;
  /**
   * Inode `blkno` was read as `generation` (a valid inode) under the operation's lock: that
   * lock must name this generation, else the operation starts over under the right one.
   */
  readInode(blkno: number, generation: number): void;
}

export interface Geometry {
  blockSize: number;
  clusterSize: number;
  blocksPerCluster: number;
  totalBlocks: number;
  totalClusters: number;
}

export function geometryOf(sb: Superblock): Geometry {
  const blockSize = 2 ** sb.blockSizeBits;
  const clusterSize = 2 ** sb.clusterSizeBits;
  return { blockSize, clusterSize, blocksPerCluster: clusterSize / blockSize, totalBlocks: sb.totalBlocks, totalClusters: sb.totalClusters };
}

/** Byte offsets of the backup superblocks a volume of this geometry carries. */
export function backupSuperOffsets(totalBlocks: number, blockSize: number): number[] {
  const sizeBytes = totalBlocks * blockSize;
  return BACKUP_SUPER_OFFSETS.filter((o) => o + blockSize <= sizeBytes).slice(0, MAX_BACKUP_SUPERS);
}

export interface FoundSuper {
  sb: Superblock;
  blockSize: number;
  /** Byte offset it was read from (8192 for the primary at 4 KiB blocks). */
  offsetBytes: number;
}

/** Looks for a valid superblock at block 2 for each block size; throws the first error. */
export async function findPrimarySuper(dev: BlockDevice): Promise<FoundSuper> {
  let firstError: Error | null = null;
  let sawSignature = false;
  for (const bs of [...BLOCK_SIZES].reverse()) {
    const off = SUPERBLOCK_BLKNO * bs;
    if (off + bs > dev.sizeBytes || bs % dev.sectorSize !== 0) continue;
    const buf = await dev.read(off, bs);
    if (buf.toString('latin1', 0, 8) !== SIG.super) continue;
    sawSignature = true;
    try {
      return { sb: checkSuperblock(buf, SUPERBLOCK_BLKNO, bs), blockSize: bs, offsetBytes: off };
    } catch (e) {
      firstError ??= e as Error;
    }
  }
  if (firstError) throw firstError;
  if (sawSignature) throw new CorruptionError(SUPERBLOCK_BLKNO, 'no valid superblock');
  throw new FsError('EINVAL', `${dev.name}: no o2fs superblock found (not an o2fs volume?)`);
}

/** Looks for a valid backup superblock (for fsck when the primary is damaged). */
export async function findBackupSuper(dev: BlockDevice): Promise<FoundSuper | null> {
  for (const bs of [...BLOCK_SIZES].reverse()) {
    for (const off of BACKUP_SUPER_OFFSETS) {
      if (off + bs > dev.sizeBytes || bs % dev.sectorSize !== 0) continue;
      const buf = await dev.read(off, bs);
      if (buf.toString('latin1', 0, 8) !== SIG.super) continue;
      try {
        return { sb: checkSuperblock(buf, off / bs, bs), blockSize: bs, offsetBytes: off };
      } catch {
        // try the next copy
      }
    }
  }
  return null;
}

/** Is `image` an inode block of block `blkno` (signature and self-reference; not checksummed)? */
function isInodeImageOf(image: Buffer | null, blkno: number): image is Buffer {
  return image !== null && image.toString('latin1', 0, 8) === SIG.inode && readU64(image, BLKNO_OFFSET) === blkno;
}

export class Volume {
  readonly dev: BlockDevice;
  sb: Superblock;
  readonly geo: Geometry;
  readonly readOnly: boolean;
  private readonly cache = new BlockCache(CACHE_BLOCKS_MAX);
  private sysInodes: Map<string, number> | null = null;
  /**
   * The mounted slot's journal (set by the mount): transactions commit into it, and it
   * holds the newest images of blocks not yet written in place.
   */
  journal: MountJournal | null = null;
  /** Set on cluster mounts: the per-inode locks transactions must hold. */
  inodeGuard: InodeGuard | null = null;
  /** File data writes answered before they finish (fs/data-behind.ts). */
  private behind: DataWritesBehind | null = null;

  constructor(dev: BlockDevice, sb: Superblock, readOnly: boolean) {
    this.dev = dev;
    this.sb = sb;
    this.geo = geometryOf(sb);
    this.readOnly = readOnly;
    if (this.geo.totalBlocks * this.geo.blockSize > dev.sizeBytes) {
      throw new CorruptionError(SUPERBLOCK_BLKNO, `volume claims ${this.geo.totalBlocks * this.geo.blockSize} bytes but ${dev.name} has ${dev.sizeBytes} (truncated image?)`);
    }
  }

  /** Opens the volume on a device: finds and checks the superblock and feature bits. */
  static async open(dev: BlockDevice, opts: { readOnly?: boolean } = {}): Promise<Volume> {
    const { sb } = await findPrimarySuper(dev);
    const unsupported = unsupportedIncompat(sb);
    if (unsupported) throw new FsError('EINVAL', `volume uses unsupported incompatible features 0x${unsupported.toString(16)}`);
    return new Volume(dev, sb, opts.readOnly ?? dev.readOnly);
  }

  get fsGeneration(): number {
    return this.sb.fsGeneration;
  }

  blockOffset(blkno: number): number {
    if (!Number.isSafeInteger(blkno) || blkno < 0 || blkno >= this.geo.totalBlocks) {
      throw new CorruptionError(blkno, `block number out of range (volume has ${this.geo.totalBlocks} blocks)`);
    }
    return blkno * this.geo.blockSize;
  }

  clusterToBlock(cluster: number): number {
    return cluster * this.geo.blocksPerCluster;
  }

  blockToCluster(blkno: number): number {
    return Math.floor(blkno / this.geo.blocksPerCluster);
  }

  /**
   * Reads a metadata block and verifies it. The buffer returned is shared (with the cache, the
   * journal and other transactions): block images are immutable once sealed. Decoders copy
   * what they hand out for change; encoders make new buffers. Not copying was worth a third
   * of a create's CPU. Hits are verified again (checksum included), so an image changed in
   * place would be caught here rather than written out: by signature and block number always,
   * by checksum too when O2FS_PARANOID=1 (the test suite sets it).
   */
  async readMeta(blkno: number, signature: Signature): Promise<Buffer> {
    const held = this.journal?.lookup(blkno) ?? this.cache.get(blkno);
    if (held) {
      if (PARANOID) verifyBlock(held, blkno, signature, this.fsGeneration);
      else if (held.toString('latin1', 0, 8) !== signature || readU64(held, BLKNO_OFFSET) !== blkno) verifyBlock(held, blkno, signature, this.fsGeneration);
      return held;
    }
    const buf = await this.dev.read(this.blockOffset(blkno), this.geo.blockSize);
    verifyBlock(buf, blkno, signature, this.fsGeneration);
    this.remember(blkno, buf);
    return buf;
  }

  /** Writes sealed metadata blocks in place (the journal sits in front of this later). */
  async writeMeta(blocks: Map<number, Buffer>): Promise<void> {
    if (this.readOnly) throw new FsError('EROFS', 'volume is read-only');
    const sorted = [...blocks.keys()].sort((a, b) => a - b);
    for (const blkno of sorted) {
      const buf = blocks.get(blkno)!;
      if (buf.length !== this.geo.blockSize) throw new Error(`assertion: block ${blkno} image is ${buf.length} bytes`);
      await this.dataWritten(blkno, blkno + 1);
      await this.dev.write(this.blockOffset(blkno), buf);
      this.remember(blkno, buf);
    }
  }

  /** Reads file data blocks (uncached); into `into` when given (exactly that many bytes). */
  async readData(blkno: number, blocks: number, into?: Buffer): Promise<Buffer> {
    this.blockOffset(blkno + blocks - 1);
    await this.dataWritten(blkno, blkno + blocks);
    return this.dev.read(this.blockOffset(blkno), blocks * this.geo.blockSize, into);
  }

  /**
   * Writes file data blocks. With `hold` on a volume that writes behind (enableWriteBehind),
   * resolves once the write has started and hands `hold` the promise of its end: `data` must
   * stay unchanged until then. Otherwise resolves when the write is done.
   */
  async writeData(blkno: number, data: Buffer, hold?: (done: Promise<void>) => void): Promise<void> {
    if (this.readOnly) throw new FsError('EROFS', 'volume is read-only');
    if (data.length % this.geo.blockSize !== 0) throw new Error('assertion: data write not block aligned');
    const end = blkno + data.length / this.geo.blockSize;
    this.blockOffset(end - 1);
    if (this.behind && hold) {
      const { done } = await this.behind.start(blkno, end, data.length, () => this.dev.write(this.blockOffset(blkno), data));
      hold(done);
      return;
    }
    await this.dataWritten(blkno, end);
    await this.dev.write(this.blockOffset(blkno), data);
  }

  /** From now on file data writes given a `hold` are answered before they finish (at most maxBytes at once). */
  enableWriteBehind(maxBytes: number, log: (line: string) => void): void {
    if (this.readOnly || this.behind) throw new Error('assertion: write-behind on a read-only volume, or twice');
    this.behind = new DataWritesBehind(maxBytes, log);
  }

  /** Waits for the writes behind on blocks [first, end): a read or write of them may follow. */
  async dataWritten(first: number, end: number): Promise<void> {
    if (this.behind && this.behind.bytesBehind > 0) await this.behind.overlapping(first, end);
  }

  /**
   * Waits for every data write behind (a journal commit must not get ahead of the data its
   * metadata points at); throws EIO once if one of them failed.
   */
  async allDataWritten(): Promise<void> {
    await this.behind?.drain();
  }

  /** Records the newest image of a block (it reached the journal, not yet its place). */
  updateCache(blkno: number, image: Buffer): void {
    this.remember(blkno, image);
  }

  /**
   * The decoded form a Transaction kept beside this image of the block (see setDecoded), if
   * the image is still the cached one. Immutable images mean it can never be stale, and it
   * goes with the image: replaced, evicted, or dropped with the caches.
   */
  decodedOf(blkno: number, image: Buffer): unknown {
    return this.cache.decodedOf(blkno, image);
  }

  setDecoded(blkno: number, image: Buffer, decoded: unknown): void {
    this.cache.setDecoded(blkno, image, decoded);
  }

  /**
   * The newest image of a block this node has at hand, without I/O: the cache's, which a
   * commit updates and a free drops. (Not the journal's: it keeps the last image of a
   * block freed since, until the checkpoint.)
   */
  heldImage(blkno: number): Buffer | null {
    return this.cache.get(blkno) ?? null;
  }

  /**
   * Inode `blkno` as this node holds it now (heldImage), if it is a live file or directory
   * of `generation`; null otherwise, or when no image is at hand.
   */
  heldInode(blkno: number, generation: number): Inode | null {
    const image = this.heldImage(blkno);
    if (!isInodeImageOf(image, blkno)) return null;
    let ino: Inode;
    try {
      ino = decodeInode(image);
    } catch {
      return null; // a damaged image: whoever reads it next reports it
    }
    if (ino.generation !== generation || !(ino.flags & INODE_FL.valid) || ino.flags & INODE_FL.system) return null;
    return ino;
  }

  forget(blkno: number): void {
    this.cache.delete(blkno);
  }

  /** Drops every cached block inode `blkno`'s lock may have covered (its lock goes); returns how many. */
  forgetCoveredBy(blkno: number): number {
    return this.cache.forgetOwnedBy(blkno);
  }

  /** How many cached blocks inode `blkno`'s lock covers (tests). */
  cachedUnder(blkno: number): number {
    return this.cache.ownedBy(blkno);
  }

  dropCaches(): void {
    this.cache.clear();
    this.sysInodes = null;
  }

  async flush(): Promise<void> {
    await this.allDataWritten();
    await this.dev.flush();
  }

  private remember(blkno: number, buf: Buffer): void {
    const guard = this.inodeGuard;
    if (!guard) return this.cache.set(blkno, buf);
    const owners = guard.owners(blkno);
    if (owners) this.cache.set(blkno, buf, owners);
    else if (this.cache.has(blkno)) this.cache.set(blkno, buf);
  }

  /**
   * The generation an inode block carries (null if it is no inode block): as this node sees
   * it (journal, cache, disk), or straight from the disk, bypassing and not filling the cache
   * (`unlocked`: to name a lock not yet held, fs/inode-locks.ts). A freed inode is the
   * exception: its block is its allocator's, which no inode lock covers, so an image this
   * node kept of it may be older than another node's create there since; the disk says.
   */
  async inodeGeneration(blkno: number, unlocked: boolean): Promise<number | null> {
    const fromDisk = (): Promise<Buffer> => this.dev.read(this.blockOffset(blkno), this.geo.blockSize);
    let image = unlocked ? await fromDisk() : await this.readMeta(blkno, SIG.inode).catch(() => null);
    if (!unlocked && isInodeImageOf(image, blkno) && !inodeImageIsValid(image) && !this.journal?.lookup(blkno)) {
      this.cache.delete(blkno);
      image = await fromDisk();
    }
    return isInodeImageOf(image, blkno) ? image.readUInt32LE(GENERATION_OFFSET) : null;
  }

  /**
   * The allocator inode a suballocator group belongs to (set when the group is made, never
   * changed), read past the cache: a change of the group must read it under that inode's
   * lock (fs/inode-locks.ts: an allocator's lock covers its groups), so this only names the
   * lock to take first and leaves no image cached under the wrong owners.
   */
  async groupParent(blkno: number): Promise<number> {
    const image = this.journal?.lookup(blkno) ?? this.cache.get(blkno) ?? await this.dev.read(this.blockOffset(blkno), this.geo.blockSize);
    verifyBlock(image, blkno, SIG.group, this.fsGeneration);
    return groupParentOf(image);
  }

  /** Block number of a system file by name ("global_bitmap", "journal:0001", ...). */
  async systemInode(name: string): Promise<number> {
    if (!this.sysInodes) {
      const { listDirectory } = await import('./dir');
      const { Transaction } = await import('./transaction');
      const tx = new Transaction(this);
      const map = new Map<string, number>();
      for (const e of await listDirectory(tx, this.sb.systemDirBlkno)) map.set(e.name.toString('utf8'), e.ino);
      this.sysInodes = map;
    }
    const blkno = this.sysInodes.get(name);
    if (blkno === undefined) throw new CorruptionError(this.sb.systemDirBlkno, `system file ${name} is missing`);
    return blkno;
  }

  setSystemInodes(map: Map<string, number>): void {
    this.sysInodes = map;
  }
}
