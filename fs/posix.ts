// The POSIX filesystem the FUSE session serves (FuseOps): inode-based operations over the
// fs library, run under one metadata RwLock (reads shared, changes exclusive) so
// transactions never interleave. Inode numbers are block numbers, except the root, which
// the kernel knows as 1. Lookup counts and open counts decide when an unlinked inode (kept
// in our slot's orphan directory) is finally freed. Every error leaves as an FsError; a
// corrupt block also triggers the errors= policy.
import type {
  Attr, AttrReply, CreateArgs, CreateReply, DirEntryPlus, DirFiller, DirEntry, Entry, FallocateArgs, FsyncArgs, FuseOps,
  LinkArgs, LseekArgs, MkdirArgs, MknodArgs, NameArgs, OpenArgs, OpenReply, ReadArgs, ReaddirArgs, ReleaseArgs, RenameArgs,
  RequestContext, SetAttrArgs, SetLockArgs, SetxattrArgs, StatFs, SymlinkArgs, WriteArgs, XattrNameArgs,
  FileLock, FlushArgs, LockArgs,
} from './fuse/ops';
import { FlockTable } from './flock';
import { LOCK_END_MAX, LockType, OPEN_KILL_SUIDGID, WRITE_KILL_SUIDGID } from './fuse/protocol';
import { PLOCK_XATTR, Plock, PlockOwner, PlockType, applyPlock, decodePlocks, encodePlocks, findConflict } from './plock';
import { readSlotMapFresh } from './slot-map';
import { allocateRange, extentAt, isInline, isWrittenRange, markWritten, punchClusters, readFile, truncateClusters, writeFile, writeMapped } from './file-data';
import { EXTENT_CHUNK_BYTES } from './inode-locks';
import { dirInsert, dirLookup, dirReaddir } from './dir';
import { CorruptionError, FsError } from './errors';
import { DYN, EXTENT_FL, INODE_FL, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, SYSFILE, fileTypeOfMode, orphanName } from './format/constants';
import { Inode, Timespec, inlineDataCapacity } from './format/inode';
import type { InodeLvb } from './inode-lvb';
import { nowTimespec } from './inode-alloc';
import { createNode, destroyInode, isDir, linkNode, renameNode, unlinkName } from './namei';
import { ReadAhead } from './read-ahead';
import { RwLock } from './rwlock';
import type { MountedVolume } from './super';
import { Transaction } from './transaction';
import { getXattr, listXattrs, removeXattr, setXattr } from './xattr';
import { recordsFrom } from './extent-tree';

const FUSE_ROOT_ID = 1;
const S_ISGID = 0o2000;
const O_ACCMODE = 3;
const O_TRUNC = 0o1000;
const O_DSYNC = 0o10000;
const O_SYNC = 0o4010000;
const O_APPEND = 0o2000;
const FALLOC_FL_KEEP_SIZE = 0x1;
const FALLOC_FL_PUNCH_HOLE = 0x2;
const FALLOC_FL_ZERO_RANGE = 0x10;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const READDIR_BATCH = 256;

export interface PosixOptions {
  /** How long the kernel may cache names and attributes (0 = not at all). */
  entryTimeoutMs: number;
  attrTimeoutMs: number;
  /** Keep page-cache contents across opens (safe when only this node writes). */
  keepCache: boolean;
}

function ns(t: Timespec): bigint {
  return BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
}

function fromNs(v: bigint): Timespec {
  const sec = v / 1_000_000_000n;
  const nsec = v % 1_000_000_000n;
  return nsec < 0n ? { sec: Number(sec - 1n), nsec: Number(nsec + 1_000_000_000n) } : { sec: Number(sec), nsec: Number(nsec) };
}

/** Cluster mounts: how old mtime and ctime may be before an in-place overwrite updates them. */
export const TIMES_LAZY_MS = 1000;

export class PosixFs implements FuseOps {
  private readonly m: MountedVolume;
  private readonly o: PosixOptions;
  private readonly lock = new RwLock();
  private readonly lookups = new Map<number, number>();
  /**
   * Inodes this mount parked in its orphan directory (lastLinkGone), freed when the kernel
   * lets go of them (maybeRelease; on a cluster, unless another node holds them open). On a
   * local mount, orphans of an earlier mount of the slot are freed at mount, before the
   * kernel can know any inode, so this set names every orphan a RELEASE or FORGET can
   * concern, and the others cost no transaction. Inode block -> generation.
   */
  private readonly parkedOrphans = new Map<number, number>();
  private readonly opens = new Map<number, number>();
  /** Only where the kernel caches no pages (it reads ahead itself otherwise). */
  private readonly readAhead: ReadAhead | null;
  private readonly handles = new Map<number, { blkno: number; flags: number }>();
  private nextFh = 1;
  /** Cluster mounts: the names the kernel has cached, so a lock downconvert can drop them. */
  private readonly kernelNames = new KernelNames();
  private notifier: KernelNotifier | null = null;

  /** We clear setuid/setgid ourselves (FUSE_HANDLE_KILLPRIV_V2); see killPrivs(). */
  readonly handlesKillPrivV2 = true;

  private readonly flocks: FlockTable;
  /** Cluster mounts: lock owners that may hold record locks here, per inode (FLUSH drops theirs). */
  private readonly plockOwners = new Map<number, Set<bigint>>();
  /** Cluster mounts: SETLKW waiters per inode, woken when a lock here goes (remote ones poll). */
  private readonly plockWaiters = new Map<number, Set<() => void>>();

  /**
   * F_GETLK, offered on read-write cluster mounts only (with it the kernel sends record
   * locks here and FUSE_POSIX_LOCKS is negotiated); other mounts leave them to the kernel.
   */
  readonly getlk?: (ctx: RequestContext, a: LockArgs) => Promise<FileLock>;
  /** FLUSH (each close): on cluster mounts, drops the closing process's record locks. */
  readonly flush?: (ctx: RequestContext, a: FlushArgs) => Promise<void>;

  constructor(m: MountedVolume, o: PosixOptions) {
    this.m = m;
    this.o = o;
    this.flocks = new FlockTable(m.glue);
    m.inUseLocally = (blkno) => this.inUse(blkno);
    // The orphan scan and recovery change metadata outside any request: they must exclude
    // this node's requests as a change does (before any inode lock, as run() orders them).
    m.exclusive = (fn) => this.lock.write(fn);
    m.invalidateKernel = (blkno) => this.invalidateKernel(blkno);
    this.readAhead = o.keepCache ? null : new ReadAhead();
    m.dataMayChange = () => this.readAhead?.bump();
    // A read-only mount cannot write the lock table: its record locks stay the kernel's,
    // node-local (as every OCFS2 mount on o2cb keeps them).
    if (m.cluster && !m.readOnly) {
      this.getlk = (_ctx, a) => this.plockGet(a);
      this.flush = (_ctx, a) => this.plockFlush(a);
    }
  }

  /** The FUSE session's notifications, once it runs (cluster mounts use them). */
  attachKernel(notifier: KernelNotifier): void {
    this.notifier = notifier;
  }

  /**
   * Another node is about to change inode `blkno` (fs/inode-locks.ts: its lock drops to
   * NL): before returning, the kernel forgets the inode's attributes and, if it holds names
   * in it (a directory), must look every name up again (both notifications cannot block).
   * Then, in the background and never awaited, each name it holds in the directory is
   * dropped outright (FUSE_NOTIFY_INVAL_ENTRY may wait in the kernel for a directory lock
   * held by a syscall that itself waits for this node's lock): a stale directory alias
   * would otherwise fail a later rename's lookup with ESTALE, and a stale name of a file
   * unlinked elsewhere would keep the inode (and its open lock) referenced.
   */
  private invalidateKernel(blkno: number): void {
    const notifier = this.notifier;
    if (!notifier) return;
    const ino = this.inoOf(blkno);
    const names = this.kernelNames.takeUnder(ino);
    try {
      if (ino === FUSE_ROOT_ID || this.lookups.has(blkno)) notifier.invalidateAttrsNow(ino);
      if (names.length > 0) notifier.expireAllNamesNow();
    } catch (e) {
      this.m.log(`invalidating the kernel's caches: ${(e as Error).message}`);
    }
    if (names.length === 0) return;
    void (async () => {
      let failed = 0;
      for (const n of names) await notifier.invalEntry(n.parent, n.name).catch(() => failed++);
      if (failed > 0) this.m.log(`invalidating kernel names: ${failed} of ${names.length} notifications failed`);
    })();
  }

  /**
   * flock(2), cluster-wide through the inode's F lock (fs/flock.ts). Only setlk is offered,
   * so the kernel sends flock requests here (FUSE_FLOCK_LOCKS) and keeps POSIX record locks
   * itself (node-local).
   */
  async setlk(ctx: RequestContext, a: SetLockArgs): Promise<void> {
    if (!a.flock) {
      if (!this.getlk) throw new FsError('EINVAL', 'POSIX record locks are the kernel\'s on this mount');
      return this.plockSet(ctx, a);
    }
    const blkno = this.blknoOf(a.ino);
    if (a.lock.type === LockType.UNLCK) this.flocks.unlock(blkno, a.owner);
    else if (a.lock.type === LockType.RDLCK || a.lock.type === LockType.WRLCK) {
      await this.flocks.lock(blkno, a.owner, a.lock.type === LockType.WRLCK ? 'ex' : 'sh', a.sleep, ctx.signal);
    } else throw new FsError('EINVAL', `lock type ${a.lock.type}`);
  }

  /**
   * What a write, truncate or chown by a caller without CAP_FSETID does to a file's
   * privileges (the kernel tells us when): setuid goes, setgid goes if the group may
   * execute (otherwise it marks mandatory locking, which Linux leaves alone), and so does a
   * file capability.
   */
  private async killPrivs(tx: Transaction, i: Inode): Promise<void> {
    if ((i.mode & S_IFMT) === S_IFDIR) return;
    i.mode &= ~0o4000;
    if (i.mode & 0o010) i.mode &= ~0o2000;
    if (i.xattrBlkno === 0 && !(i.dyn & DYN.inlineXattr)) return;
    try {
      await removeXattr(tx, this.m.ctx, i, 'security.capability');
    } catch (e) {
      if (!(e instanceof FsError && e.errno === 'ENODATA')) throw e;
    }
  }

  // --- plumbing -----------------------------------------------------------------------------

  private blknoOf(ino: number): number {
    if (ino === FUSE_ROOT_ID) return this.m.vol.sb.rootBlkno;
    if (!Number.isSafeInteger(ino) || ino <= 2 || ino >= this.m.vol.geo.totalBlocks) throw new FsError('ESTALE', `inode ${ino} is not on this volume`);
    return ino;
  }

  private inoOf(blkno: number): number {
    return blkno === this.m.vol.sb.rootBlkno ? FUSE_ROOT_ID : blkno;
  }

  /**
   * Runs fn with a transaction; reads share the lock, changes hold it alone and commit.
   * `localExclusive`: a read (of metadata) that must still exclude this node's other requests.
   */
  private async run<T>(write: boolean, fn: (tx: Transaction) => Promise<T>, o: { localExclusive?: boolean } = {}): Promise<T> {
    const body = async (): Promise<T> => {
      if (write) this.m.assertWritable();
      const tx = new Transaction(this.m.vol);
      try {
        const result = await fn(tx);
        if (write) await tx.commit({ durable: false });
        else tx.abort();
        return result;
      } catch (e) {
        tx.abort();
        throw this.onError(e);
      } finally {
        // What was read ahead may predate this change.
        if (write || o.localExclusive) this.readAhead?.bump();
      }
    };
    const cluster = this.m.cluster;
    if (!cluster) return write || o.localExclusive ? this.lock.write(body) : this.lock.read(body);
    // Not even the locks for a change a read-only mount would refuse.
    if (write) this.m.assertWritable();
    // Cluster mount: each inode's lock as the operation first reads it (fs/inode-locks.ts;
    // the operation may start over), and the open locks of inodes it hands to the kernel
    // taken before the reply. This node's own requests exclude each other first.
    return cluster.locks.run(write ? 'EX' : 'PR', async () => {
      const result = await body();
      await cluster.flushOpens();
      return result;
    }, { wrap: write || o.localExclusive ? (f) => this.lock.write(f) : (f) => this.lock.read(f) });
  }

  private onError(e: unknown): unknown {
    if (!(e instanceof CorruptionError)) return e;
    this.m.log(`error: ${e.message}`);
    if (this.m.errors === 'remount-ro') this.m.enterReadOnly(`metadata error: ${e.message}`);
    else if (this.m.errors === 'panic') {
      this.m.log('errors=panic: stopping the mount');
      setImmediate(() => process.emit('o2fs-panic' as 'exit', 1));
    }
    return e;
  }

  private async inode(tx: Transaction, ino: number): Promise<Inode> {
    const i = await tx.getInode(this.blknoOf(ino));
    if (!(i.flags & INODE_FL.valid) || i.flags & INODE_FL.system) throw new FsError('ESTALE', `inode ${ino} is not a live file`);
    return i;
  }

  private async dirInode(tx: Transaction, ino: number): Promise<Inode> {
    const d = await this.inode(tx, ino);
    if (!isDir(d)) throw new FsError('ENOTDIR');
    return d;
  }

  attr(i: InodeLvb & { blkno: number }): Attr {
    const cs = this.m.vol.geo.clusterSize;
    return {
      ino: this.inoOf(i.blkno),
      sizeBytes: i.size,
      blocks512: (i.clusters * cs) / 512,
      atimeNs: ns(i.atime),
      mtimeNs: ns(i.mtime),
      ctimeNs: ns(i.ctime),
      mode: i.mode,
      nlink: i.links,
      uid: i.uid,
      gid: i.gid,
      rdev: i.rdev,
      blksizeBytes: Math.max(4096, cs),
    };
  }

  /**
   * The reply that hands the kernel `i` under `name` in `parent`: counts the lookup and, on a
   * cluster, takes the open lock and remembers the name. Called under the inode's lock.
   */
  private entry(i: Inode, parent: number, name: Buffer, created = false): Entry {
    this.countLookup(i, parent, name, created);
    return this.entryOf(i);
  }

  /** The entry reply for `i`, no lookup counted (readdirplus counts its own). */
  private entryOf(i: Inode): Entry {
    return { ino: this.inoOf(i.blkno), generation: i.generation, attr: this.attr(i), entryTimeoutMs: this.entryTimeoutMs(), attrTimeoutMs: this.o.attrTimeoutMs };
  }

  /**
   * How long the kernel may trust a name. On a cluster mount, only as long as the lock
   * downconvert can expire every name at once (FUSE_NOTIFY_INC_EPOCH); older kernels
   * revalidate each name on every use.
   */
  private entryTimeoutMs(): number {
    if (this.m.cluster && !this.notifier?.canExpireAllNames) return 0;
    return this.o.entryTimeoutMs;
  }

  private countLookup(i: Inode, parent: number, name: Buffer, created = false): void {
    this.lookups.set(i.blkno, (this.lookups.get(i.blkno) ?? 0) + 1);
    if (!this.m.cluster) return;
    this.m.cluster.noteInUse(i.blkno, i.generation, created);
    this.kernelNames.add(parent, name, i.blkno);
  }

  private attrReply(i: InodeLvb & { blkno: number }): AttrReply {
    return { attr: this.attr(i), attrTimeoutMs: this.o.attrTimeoutMs };
  }

  private inUse(blkno: number): boolean {
    return (this.lookups.get(blkno) ?? 0) > 0 || (this.opens.get(blkno) ?? 0) > 0;
  }

  /** An inode lost its last link: free it now, or park it in the orphan directory. */
  private async lastLinkGone(tx: Transaction, i: Inode): Promise<void> {
    if (!this.inUse(i.blkno)) {
      const cluster = this.m.cluster;
      if (!cluster) {
        await destroyInode(tx, this.m.ctx, i);
        return;
      }
      // Free it only if no other node holds it open either; else it waits as an orphan.
      if (await cluster.ifUnusedEverywhere(i.blkno, i.generation, () => destroyInode(tx, this.m.ctx, i))) return;
    }
    i.flags |= INODE_FL.orphaned;
    i.orphanedSlot = this.m.slot;
    tx.putInode(i);
    this.parkedOrphans.set(i.blkno, i.generation);
    const orphanDir = await tx.getInode(this.m.orphanDirBlkno);
    await dirInsert(tx, this.m.ctx, orphanDir, orphanName(i.blkno), i.blkno, fileTypeOfMode(i.mode));
  }

  private async maybeRelease(blkno: number): Promise<void> {
    if (this.inUse(blkno)) return;
    const cluster = this.m.cluster;
    if (cluster) {
      // Our open lock goes. An orphan parked here, or one another node tried to free
      // meanwhile, is freed now unless another node still holds it open; else the orphan
      // scan (of whichever node) frees it later.
      cluster.dropOpen(blkno);
      const parked = this.parkedOrphans.get(blkno);
      this.parkedOrphans.delete(blkno);
      const suspect = cluster.takeMaybeOrphan(blkno);
      const generation = parked ?? suspect;
      if (this.m.readOnly || generation === undefined) return;
      await cluster.freeOrphan(this.m.ctx, blkno, generation).catch((e: Error) => this.m.log(`freeing orphan inode ${blkno}: ${(e as Error).message}`));
      return;
    }
    if (this.m.readOnly || !this.parkedOrphans.has(blkno)) return;
    await this.lock.write(async () => {
      if (this.inUse(blkno)) return;
      await this.m.releaseOrphans((b) => b === blkno);
      this.parkedOrphans.delete(blkno);
    });
  }

  /** New inodes inherit a setgid directory's group (and directories its setgid bit). */
  private owner(ctx: RequestContext, parent: Inode, mode: number): { uid: number; gid: number; mode: number } {
    if (parent.mode & S_ISGID) return { uid: ctx.uid, gid: parent.gid, mode: (mode & S_IFMT) === S_IFDIR ? mode | S_ISGID : mode };
    return { uid: ctx.uid, gid: ctx.gid, mode };
  }

  private touch(i: Inode, what: { m?: boolean; c?: boolean; a?: boolean }): void {
    const t = nowTimespec();
    if (what.m) i.mtime = t;
    if (what.c) i.ctime = t;
    if (what.a) i.atime = t;
  }

  // --- names ----------------------------------------------------------------------------------

  async lookup(_ctx: RequestContext, a: NameArgs): Promise<Entry> {
    return this.run(false, async (tx) => {
      const dir = await this.dirInode(tx, a.parent);
      const e = await dirLookup(tx, dir, a.name);
      if (!e) throw new FsError('ENOENT');
      return this.entry(await tx.getInode(e.ino), a.parent, a.name);
    });
  }

  forget(ino: number, nlookup: number): void {
    const blkno = ino === FUSE_ROOT_ID ? this.m.vol.sb.rootBlkno : ino;
    const left = (this.lookups.get(blkno) ?? 0) - nlookup;
    if (left > 0) this.lookups.set(blkno, left);
    else {
      this.lookups.delete(blkno);
      this.kernelNames.forgetInode(blkno);
      this.readAhead?.forget(blkno);
    }
    if (left <= 0) void this.maybeRelease(blkno).catch((e) => this.m.log(`releasing inode ${blkno}: ${(e as Error).message}`));
  }

  async getattr(_ctx: RequestContext, a: { ino: number }): Promise<AttrReply> {
    return this.run(false, async (tx) => {
      // Cluster mounts: from the inode lock's value block when this node has no image of
      // the inode (another node changed it last), saving the read; else as any read.
      const known = await this.m.cluster?.locks.attributes(this.blknoOf(a.ino));
      if (known) return this.attrReply({ blkno: this.blknoOf(a.ino), ...known });
      return this.attrReply(await this.inode(tx, a.ino));
    });
  }

  /** Creates a node and builds its entry reply under the same lock (its open lock with it). */
  private async makeNode(ctx: RequestContext, parentIno: number, name: Buffer, mode: number, extra: { rdev?: number; target?: Buffer } = {}): Promise<{ i: Inode; entry: Entry }> {
    return this.run(true, async (tx) => {
      const parent = await this.dirInode(tx, parentIno);
      const own = this.owner(ctx, parent, mode);
      const i = await createNode(tx, this.m.ctx, parent, name, { mode: own.mode, uid: own.uid, gid: own.gid, rdev: extra.rdev, target: extra.target });
      return { i, entry: this.entry(i, parentIno, name, true) };
    });
  }

  async mknod(ctx: RequestContext, a: MknodArgs): Promise<Entry> {
    return (await this.makeNode(ctx, a.parent, a.name, a.mode, { rdev: a.rdev })).entry;
  }

  async mkdir(ctx: RequestContext, a: MkdirArgs): Promise<Entry> {
    return (await this.makeNode(ctx, a.parent, a.name, S_IFDIR | (a.mode & 0o7777))).entry;
  }

  async symlink(ctx: RequestContext, a: SymlinkArgs): Promise<Entry> {
    return (await this.makeNode(ctx, a.parent, a.name, S_IFLNK | 0o777, { target: a.target })).entry;
  }

  async create(ctx: RequestContext, a: CreateArgs): Promise<CreateReply> {
    const { i, entry } = await this.makeNode(ctx, a.parent, a.name, S_IFREG | (a.mode & 0o7777));
    return { entry, open: this.openHandle(i.blkno, a.flags) };
  }

  async link(_ctx: RequestContext, a: LinkArgs): Promise<Entry> {
    return this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      await linkNode(tx, this.m.ctx, await this.dirInode(tx, a.newParent), a.newName, i);
      return this.entry(i, a.newParent, a.newName);
    });
  }

  async unlink(_ctx: RequestContext, a: NameArgs): Promise<void> {
    await this.remove(a, false);
  }

  async rmdir(_ctx: RequestContext, a: NameArgs): Promise<void> {
    await this.remove(a, true);
  }

  private async remove(a: NameArgs, dir: boolean): Promise<void> {
    await this.run(true, async (tx) => {
      const i = await unlinkName(tx, await this.dirInode(tx, a.parent), a.name, dir);
      if (i.links === 0) await this.lastLinkGone(tx, i);
      this.kernelNames.remove(a.parent, a.name);
    });
  }

  async rename(_ctx: RequestContext, a: RenameArgs): Promise<void> {
    if (a.flags & ~3) throw new FsError('EINVAL', 'unsupported rename flags');
    await this.run(true, async (tx) => {
      const from = await this.dirInode(tx, a.parent);
      const to = a.newParent === a.parent ? from : await this.dirInode(tx, a.newParent);
      const r = await renameNode(tx, this.m.ctx, from, a.name, to, a.newName, a.flags);
      if (r.replaced && r.replaced.links === 0) await this.lastLinkGone(tx, r.replaced);
      this.kernelNames.rename(a.parent, a.name, a.newParent, a.newName, (a.flags & 2) !== 0);
    });
  }

  async readlink(_ctx: RequestContext, a: { ino: number }): Promise<Buffer> {
    return this.run(false, async (tx) => {
      const i = await this.inode(tx, a.ino);
      if ((i.mode & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL');
      return readFile(tx, i, 0, i.size);
    });
  }

  // --- attributes -----------------------------------------------------------------------------

  async setattr(_ctx: RequestContext, a: SetAttrArgs): Promise<AttrReply> {
    return this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      const t = nowTimespec();
      if (a.mode !== undefined) i.mode = (i.mode & S_IFMT) | (a.mode & 0o7777);
      if (a.uid !== undefined) i.uid = a.uid;
      if (a.gid !== undefined) i.gid = a.gid;
      if (a.killSuidgid) await this.killPrivs(tx, i);
      if (a.sizeBytes !== undefined) {
        if (isDir(i)) throw new FsError('EISDIR');
        if ((i.mode & S_IFMT) !== S_IFREG) throw new FsError('EINVAL');
        await this.setSize(tx, i, a.sizeBytes);
        i.mtime = t;
      }
      if (a.atimeNs !== undefined) i.atime = a.atimeNs === 'now' ? t : fromNs(a.atimeNs);
      if (a.mtimeNs !== undefined) i.mtime = a.mtimeNs === 'now' ? t : fromNs(a.mtimeNs);
      i.ctime = a.ctimeNs !== undefined ? fromNs(a.ctimeNs) : t;
      tx.putInode(i);
      return this.attrReply(i);
    });
  }

  /** truncate(2): frees what lies past the new end and zeroes the rest of its last cluster. */
  private async setSize(tx: Transaction, i: Inode, size: number): Promise<void> {
    if (size < 0 || !Number.isSafeInteger(size)) throw new FsError('EINVAL');
    if (size > 2 ** 32 * this.m.vol.geo.clusterSize - 1) throw new FsError('EFBIG');
    if (i.body.kind === 'inline') {
      if (size <= inlineDataCapacity(tx.bs, i.xattrInlineBytes)) {
        const data = Buffer.alloc(size);
        i.body.data.copy(data, 0, 0, Math.min(size, i.body.data.length));
        i.body = { kind: 'inline', data };
        i.size = size;
        tx.putInode(i);
        return;
      }
      await writeFile(tx, this.m.ctx, i, i.size, Buffer.alloc(0));
      await writeFile(tx, this.m.ctx, i, inlineDataCapacity(tx.bs, i.xattrInlineBytes), Buffer.alloc(1));
    }
    const cs = this.m.vol.geo.clusterSize;
    if (size < i.size) {
      await truncateClusters(tx, i, Math.ceil(size / cs));
      await this.zeroTail(tx, i, size, Math.min(i.size, Math.ceil(size / cs) * cs));
    }
    i.size = size;
    tx.putInode(i);
  }

  /** Writes zeros over [from, to) where it is mapped and written (within one cluster). */
  private async zeroTail(tx: Transaction, i: Inode, from: number, to: number): Promise<void> {
    if (to <= from) return;
    const cs = this.m.vol.geo.clusterSize;
    const bs = tx.bs;
    const ext = await extentAt(tx, i, Math.floor(from / cs));
    if (!ext || ext.flags & EXTENT_FL.unwritten) return;
    const firstBlock = Math.floor(from / bs);
    const lastBlock = Math.ceil(to / bs);
    const phys = ext.blkno + (firstBlock - ext.cpos * (cs / bs));
    const buf = await tx.vol.readData(phys, lastBlock - firstBlock);
    buf.fill(0, from - firstBlock * bs, to - firstBlock * bs);
    await tx.vol.writeData(phys, buf);
  }

  async statfs(): Promise<StatFs> {
    return this.run(false, async (tx) => {
      const bitmap = await tx.getInode(await this.m.vol.systemInode(SYSFILE.globalBitmap));
      const free = bitmap.id1b - bitmap.id1a;
      const cs = this.m.vol.geo.clusterSize;
      const perCluster = this.m.vol.geo.blocksPerCluster;
      return { blocks: bitmap.id1b, blocksFree: free, blocksAvailable: free, files: bitmap.id1b * perCluster, filesFree: free * perCluster, blockSizeBytes: cs, nameLengthMax: 255, fragmentSizeBytes: cs };
    });
  }

  // --- files ----------------------------------------------------------------------------------

  private openHandle(blkno: number, flags: number): OpenReply {
    const fh = this.nextFh++;
    this.handles.set(fh, { blkno, flags });
    this.opens.set(blkno, (this.opens.get(blkno) ?? 0) + 1);
    return { fh, keepCache: this.o.keepCache };
  }

  async open(_ctx: RequestContext, a: OpenArgs): Promise<OpenReply> {
    const truncate = (a.flags & O_TRUNC) !== 0 && (a.flags & O_ACCMODE) !== 0;
    const i = await this.run(truncate, async (tx) => {
      const i = await this.inode(tx, a.ino);
      if (isDir(i)) throw new FsError('EISDIR');
      const kill = truncate && (a.openFlags & OPEN_KILL_SUIDGID) !== 0;
      if (truncate && (i.size > 0 || kill)) {
        if (kill) await this.killPrivs(tx, i);
        await this.setSize(tx, i, 0);
        this.touch(i, { m: true, c: true });
        tx.putInode(i);
      }
      return i;
    });
    return this.openHandle(i.blkno, a.flags);
  }

  async release(_ctx: RequestContext, a: ReleaseArgs): Promise<void> {
    const h = this.handles.get(a.fh);
    if (!h) return;
    this.handles.delete(a.fh);
    if (a.flockUnlock) this.flocks.unlock(h.blkno, a.lockOwner);
    const left = (this.opens.get(h.blkno) ?? 1) - 1;
    if (left > 0) this.opens.set(h.blkno, left);
    else {
      this.opens.delete(h.blkno);
      await this.maybeRelease(h.blkno);
    }
  }

  async read(_ctx: RequestContext, a: ReadArgs): Promise<Buffer> {
    const ahead = this.readAhead;
    if (!ahead) return this.readNow(a.ino, a.offsetBytes, a.sizeBytes);
    const blkno = this.blknoOf(a.ino);
    const sequential = ahead.arrive(blkno, a.offsetBytes, a.sizeBytes);
    const data = (await ahead.take(blkno, a.offsetBytes, a.sizeBytes)) ?? (await this.readNow(a.ino, a.offsetBytes, a.sizeBytes));
    ahead.after(blkno, sequential, (offset, size) => this.readNow(a.ino, offset, size, true));
    return data;
  }

  /** Bytes [offset, offset + size) of a file, under its locks; `ahead`: null at or past the end. */
  private async readNow(ino: number, offset: number, size: number, ahead: true): Promise<Buffer | null>;
  private async readNow(ino: number, offset: number, size: number): Promise<Buffer>;
  private async readNow(ino: number, offset: number, size: number, ahead = false): Promise<Buffer | null> {
    return this.run(false, async (tx) => {
      const i = await this.inode(tx, ino);
      if (ahead && offset >= i.size) return null;
      await this.dataRanges(i, offset, offset + size, 'PR');
      return readFile(tx, i, offset, size);
    });
  }

  /** Cluster mounts: the extent locks of a large file's bytes [start, end) (fs/inode-locks.ts). */
  private async dataRanges(i: Inode, start: number, end: number, mode: 'PR' | 'EX'): Promise<boolean> {
    const cluster = this.m.cluster;
    if (!cluster || (i.mode & S_IFMT) !== S_IFREG || i.size < EXTENT_CHUNK_BYTES) return false;
    await cluster.locks.ranges(i.blkno, i.generation, start, Math.min(end, i.size), mode);
    return true;
  }

  /**
   * Cluster mounts: a write that only overwrites written data of a large file, changing no
   * metadata, under the inode's M lock at PR and its extent locks at EX, so that nodes
   * writing disjoint ranges of one file go on in parallel. Its mtime and ctime are left as
   * they are if both are less than TIMES_LAZY_MS old (the change is that recent: a stat may
   * show times up to that much older than the last write; a write after that updates them
   * through the ordinary path). Null: not such a write, take the ordinary path.
   */
  private async overwriteInPlace(a: WriteArgs): Promise<number | null> {
    if (a.flags & O_APPEND || a.writeFlags & WRITE_KILL_SUIDGID) return null;
    return this.run(false, async (tx) => {
      const i = await this.inode(tx, a.ino);
      const end = a.offsetBytes + a.data.length;
      if ((i.mode & S_IFMT) !== S_IFREG || i.size < EXTENT_CHUNK_BYTES || end > i.size) return null;
      const now = Date.now();
      const ageMs = (t: Timespec): number => now - (t.sec * 1000 + t.nsec / 1e6);
      if (ageMs(i.mtime) >= TIMES_LAZY_MS || ageMs(i.ctime) >= TIMES_LAZY_MS) return null;
      if (!(await isWrittenRange(tx, i, a.offsetBytes, end))) return null;
      await this.dataRanges(i, a.offsetBytes, end, 'EX');
      await writeMapped(tx, i, a.offsetBytes, a.data);
      return a.data.length;
    }, { localExclusive: true });
  }

  async write(_ctx: RequestContext, a: WriteArgs): Promise<number> {
    const done = this.m.cluster ? await this.overwriteInPlace(a) : null;
    if (done !== null) {
      if (a.flags & (O_SYNC | O_DSYNC)) await this.m.sync();
      return done;
    }
    return this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      if ((i.mode & S_IFMT) !== S_IFREG) throw new FsError('EINVAL');
      if (a.offsetBytes + a.data.length > 2 ** 32 * this.m.vol.geo.clusterSize) throw new FsError('EFBIG');
      if (a.writeFlags & WRITE_KILL_SUIDGID) await this.killPrivs(tx, i);
      // On a cluster mount the kernel's idea of the size (its O_APPEND offset) may be
      // another node's past: append at the size under the inode's lock instead.
      const offsetBytes = this.m.cluster && a.flags & O_APPEND ? i.size : a.offsetBytes;
      // Answered before the data is on the disk (Volume.writeData, hold; fs/data-behind.ts).
      await writeFile(tx, this.m.ctx, i, offsetBytes, a.data, a.hold);
      this.touch(i, { m: true, c: true });
      tx.putInode(i);
      return a.data.length;
    }).then(async (n) => {
      if (a.flags & (O_SYNC | O_DSYNC)) await this.m.sync();
      return n;
    });
  }

  // No flush() on local mounts: close(2) has nothing to push (durability comes from fsync or
  // the group commit) and POSIX locks are the kernel's, so the session answers FLUSH with
  // ENOSYS once and the kernel stops sending it: one request less per close. Cluster mounts
  // keep record locks in the inode (fs/plock.ts) and need FLUSH to drop them at close.

  // --- record locks (cluster mounts; fs/plock.ts) --------------------------------------------

  private plockMe(owner: bigint): PlockOwner {
    return { slot: this.m.slot, generation: this.m.mountGeneration, owner };
  }

  /** The inode's table and a liveness test, read under the inode's lock. */
  private async plockTable(tx: Transaction, i: Inode): Promise<{ list: Plock[]; live: (o: PlockOwner) => boolean }> {
    let list: Plock[] = [];
    try {
      list = decodePlocks(await getXattr(tx, i, PLOCK_XATTR));
    } catch (e) {
      if (!(e instanceof FsError && e.errno === 'ENODATA')) throw e;
    }
    if (list.length === 0) return { list, live: () => false };
    const slots = await readSlotMapFresh(tx);
    return { list, live: (o) => slots[o.slot]?.inUse === true && slots[o.slot].mountGeneration === o.generation };
  }

  /** Writes the table back (no times change: a lock is not a change of the file). */
  private async plockWrite(tx: Transaction, i: Inode, list: Plock[]): Promise<void> {
    if (list.length > 0) await setXattr(tx, this.m.ctx, i, PLOCK_XATTR, encodePlocks(list));
    else if (await getXattr(tx, i, PLOCK_XATTR).then(() => true, () => false)) await removeXattr(tx, this.m.ctx, i, PLOCK_XATTR);
    else return;
    tx.putInode(i);
  }

  /** The record-lock table is the filesystem's, not the user's. */
  private static userXattr(name: string): string {
    if (name === PLOCK_XATTR) throw new FsError('EPERM', `${name} is reserved`);
    return name;
  }

  private async plockGet(a: LockArgs): Promise<FileLock> {
    const type: PlockType = a.lock.type === LockType.WRLCK ? 'write' : 'read';
    return this.run(false, async (tx) => {
      const i = await this.inode(tx, a.ino);
      const { list, live } = await this.plockTable(tx, i);
      const c = findConflict(list, this.plockMe(a.owner), { type, start: a.lock.start, end: a.lock.end }, live);
      if (!c) return { start: a.lock.start, end: a.lock.end, type: LockType.UNLCK, pid: 0 };
      return { start: c.start, end: c.end, type: c.type === 'write' ? LockType.WRLCK : LockType.RDLCK, pid: c.pid };
    });
  }

  /** F_SETLK / F_SETLKW (sleep): conflicts anywhere in the cluster count. */
  private async plockSet(ctx: RequestContext, a: SetLockArgs): Promise<void> {
    const blkno = this.blknoOf(a.ino);
    const unlock = a.lock.type === LockType.UNLCK;
    if (!unlock && a.lock.type !== LockType.RDLCK && a.lock.type !== LockType.WRLCK) throw new FsError('EINVAL', `lock type ${a.lock.type}`);
    const type: PlockType | null = unlock ? null : a.lock.type === LockType.WRLCK ? 'write' : 'read';
    const me = this.plockMe(a.owner);
    for (let attempt = 0; ; attempt++) {
      const granted = await this.run(true, async (tx) => {
        const i = await this.inode(tx, a.ino);
        const { list, live } = await this.plockTable(tx, i);
        if (type && findConflict(list, me, { type, start: a.lock.start, end: a.lock.end }, live)) return false;
        await this.plockWrite(tx, i, applyPlock(list, me, type, a.lock.start, a.lock.end, a.lock.pid, live));
        return true;
      });
      if (granted) {
        if (unlock) this.plockWake(blkno);
        else {
          let owners = this.plockOwners.get(blkno);
          if (!owners) this.plockOwners.set(blkno, (owners = new Set()));
          owners.add(a.owner);
        }
        return;
      }
      if (!a.sleep) throw new FsError('EAGAIN');
      // A lock released here wakes us at once; one released on another node is seen at the
      // next look (every 10 ms at first, backing off to 250 ms).
      await this.plockWait(blkno, Math.min(250, 10 * 2 ** Math.min(attempt, 5)), ctx.signal);
    }
  }

  private plockWait(blkno: number, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      let waiters = this.plockWaiters.get(blkno);
      if (!waiters) this.plockWaiters.set(blkno, (waiters = new Set()));
      const done = (): void => {
        clearTimeout(timer);
        waiters!.delete(done);
        if (waiters!.size === 0) this.plockWaiters.delete(blkno);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        done();
        reject(new FsError('EINTR'));
      };
      const timer = setTimeout(() => {
        done();
        resolve();
      }, ms);
      waiters.add(() => {
        done();
        resolve();
      });
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private plockWake(blkno: number): void {
    for (const w of [...(this.plockWaiters.get(blkno) ?? [])]) w();
  }

  /** FLUSH: a process closed a descriptor of the file; POSIX drops all its record locks on it. */
  private async plockFlush(a: FlushArgs): Promise<void> {
    const blkno = this.blknoOf(a.ino);
    const owners = this.plockOwners.get(blkno);
    if (!owners?.has(a.lockOwner)) return;
    await this.plockSet({ signal: new AbortController().signal } as RequestContext, {
      ino: a.ino, fh: a.fh, owner: a.lockOwner, flock: false, sleep: false,
      lock: { start: 0n, end: LOCK_END_MAX, type: LockType.UNLCK, pid: 0 },
    });
    owners.delete(a.lockOwner);
    if (owners.size === 0) this.plockOwners.delete(blkno);
  }

  async fsync(_ctx: RequestContext, _a: FsyncArgs): Promise<void> {
    await this.m.sync();
  }

  async fsyncdir(_ctx: RequestContext, _a: FsyncArgs): Promise<void> {
    await this.m.sync();
  }

  async fallocate(_ctx: RequestContext, a: FallocateArgs): Promise<void> {
    if (a.mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) throw new FsError('EOPNOTSUPP');
    if (a.mode & FALLOC_FL_PUNCH_HOLE && !(a.mode & FALLOC_FL_KEEP_SIZE)) throw new FsError('EOPNOTSUPP');
    if (a.lengthBytes <= 0 || a.offsetBytes < 0) throw new FsError('EINVAL');
    await this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      if ((i.mode & S_IFMT) !== S_IFREG) throw new FsError(isDir(i) ? 'EISDIR' : 'ENODEV');
      const cs = this.m.vol.geo.clusterSize;
      const start = a.offsetBytes;
      const end = a.offsetBytes + a.lengthBytes;
      if (end > 2 ** 32 * cs) throw new FsError('EFBIG');
      const keepSize = (a.mode & FALLOC_FL_KEEP_SIZE) !== 0;
      if (a.mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        // Zeros over the partial clusters at both edges, free the whole ones between.
        const zEnd = Math.min(end, i.size);
        if (isInline(i) && i.body.kind === 'inline') {
          if (start < zEnd) i.body.data.fill(0, start, zEnd);
        } else if (start < zEnd) {
          const firstWhole = Math.ceil(start / cs);
          const lastWhole = Math.floor(end / cs);
          if (firstWhole >= lastWhole) {
            await this.zeroRange(tx, i, start, zEnd);
          } else {
            await this.zeroRange(tx, i, start, Math.min(zEnd, firstWhole * cs));
            await this.zeroRange(tx, i, Math.max(start, lastWhole * cs), zEnd);
            await punchClusters(tx, this.m.ctx, i, firstWhole, lastWhole - firstWhole);
          }
        }
        if (a.mode & FALLOC_FL_ZERO_RANGE && !isInline(i)) await allocateRange(tx, this.m.ctx, i, Math.floor(start / cs), Math.ceil(end / cs) - Math.floor(start / cs), EXTENT_FL.unwritten);
      } else {
        if (isInline(i)) await writeFile(tx, this.m.ctx, i, inlineDataCapacity(tx.bs, i.xattrInlineBytes), Buffer.alloc(0)).then(() => this.uninline(tx, i));
        await allocateRange(tx, this.m.ctx, i, Math.floor(start / cs), Math.ceil(end / cs) - Math.floor(start / cs), EXTENT_FL.unwritten);
      }
      if (!keepSize && end > i.size) {
        if (isInline(i)) await this.uninline(tx, i);
        i.size = end;
      }
      this.touch(i, { m: true, c: true });
      tx.putInode(i);
    });
  }

  private async uninline(tx: Transaction, i: Inode): Promise<void> {
    if (!isInline(i)) return;
    const size = i.size;
    await writeFile(tx, this.m.ctx, i, inlineDataCapacity(tx.bs, i.xattrInlineBytes), Buffer.alloc(1));
    if (i.body.kind === 'extents') await this.setSize(tx, i, size);
  }

  /** Writes zeros over [from, to) of a file's mapped, written clusters (holes stay holes). */
  private async zeroRange(tx: Transaction, i: Inode, from: number, to: number): Promise<void> {
    const cs = this.m.vol.geo.clusterSize;
    for (let pos = from; pos < to; ) {
      const next = Math.min(to, (Math.floor(pos / cs) + 1) * cs);
      await this.zeroTail(tx, i, pos, next);
      pos = next;
    }
  }

  async lseek(_ctx: RequestContext, a: LseekArgs): Promise<number> {
    if (a.whence !== SEEK_DATA && a.whence !== SEEK_HOLE) throw new FsError('EINVAL');
    return this.run(false, async (tx) => {
      const i = await this.inode(tx, a.ino);
      if (a.offsetBytes >= i.size) throw new FsError('ENXIO');
      if (isInline(i)) return a.whence === SEEK_DATA ? a.offsetBytes : i.size;
      const cs = this.m.vol.geo.clusterSize;
      let pos = a.offsetBytes;
      while (pos < i.size) {
        const cpos = Math.floor(pos / cs);
        const ext = await extentAt(tx, i, cpos);
        const isData = !!ext && !(ext.flags & EXTENT_FL.unwritten);
        if (a.whence === SEEK_DATA && isData) return pos;
        if (a.whence === SEEK_HOLE && !isData) return pos;
        if (ext) pos = (ext.cpos + ext.clusters) * cs;
        else {
          const [next] = await recordsFrom(tx, i, cpos + 1, 1);
          pos = next ? next.cpos * cs : i.size;
        }
      }
      if (a.whence === SEEK_DATA) throw new FsError('ENXIO');
      return i.size;
    });
  }

  // --- directories ----------------------------------------------------------------------------

  async opendir(_ctx: RequestContext, a: OpenArgs): Promise<OpenReply> {
    await this.run(false, async (tx) => this.dirInode(tx, a.ino));
    const fh = this.nextFh++;
    return { fh, keepCache: false };
  }

  async releasedir(): Promise<void> {}

  async readdir(_ctx: RequestContext, a: ReaddirArgs, out: DirFiller<DirEntry>): Promise<void> {
    await this.run(false, async (tx) => {
      out.reset(); // a cluster mount's operation may start over
      const dir = await this.dirInode(tx, a.ino);
      if (a.offset < 1 && !out.add({ ino: this.inoOf(dir.blkno), offset: 1, mode: S_IFDIR, name: '.' })) return;
      if (a.offset < 2 && !out.add({ ino: this.inoOf(dir.parentBlkno), offset: 2, mode: S_IFDIR, name: '..' })) return;
      let after = Math.max(a.offset, 2);
      for (;;) {
        const batch = await dirReaddir(tx, dir, after, READDIR_BATCH);
        if (batch.length === 0) return;
        for (const e of batch) {
          if (!out.add({ ino: this.inoOf(e.ino), offset: e.cookie, mode: fileTypeToMode(e.fileType), name: e.name })) return;
          after = e.cookie;
        }
      }
    });
  }

  async readdirplus(_ctx: RequestContext, a: ReaddirArgs, out: DirFiller<DirEntryPlus>): Promise<void> {
    await this.run(false, async (tx) => {
      // A cluster mount's operation may start over at any inode read: the reply is reset,
      // and lookups are counted only once every inode is read.
      out.reset();
      const counted: Array<{ child: Inode; name: Buffer }> = [];
      const dir = await this.dirInode(tx, a.ino);
      const fill = async (): Promise<void> => {
        if (a.offset < 1 && !out.add({ entry: this.entryOf(dir), offset: 1, name: '.' })) return;
        if (a.offset < 2 && !out.add({ entry: this.entryOf(await tx.getInode(dir.parentBlkno)), offset: 2, name: '..' })) return;
        let after = Math.max(a.offset, 2);
        for (;;) {
          const batch = await dirReaddir(tx, dir, after, READDIR_BATCH);
          if (batch.length === 0) return;
          for (const e of batch) {
            const child = await tx.getInode(e.ino);
            if (!out.add({ entry: this.entryOf(child), offset: e.cookie, name: e.name })) return;
            counted.push({ child, name: e.name });
            after = e.cookie;
          }
        }
      };
      await fill();
      for (const { child, name } of counted) this.countLookup(child, a.ino, name);
    });
  }

  // --- xattrs ---------------------------------------------------------------------------------

  async setxattr(_ctx: RequestContext, a: SetxattrArgs): Promise<void> {
    await this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      await setXattr(tx, this.m.ctx, i, PosixFs.userXattr(a.name), a.value, a.flags);
      this.touch(i, { c: true });
      tx.putInode(i);
    });
  }

  async getxattr(_ctx: RequestContext, a: XattrNameArgs): Promise<Buffer> {
    if (a.name === PLOCK_XATTR) throw new FsError('ENODATA');
    return this.run(false, async (tx) => getXattr(tx, await this.inode(tx, a.ino), a.name));
  }

  async listxattr(_ctx: RequestContext, a: { ino: number }): Promise<string[]> {
    return this.run(false, async (tx) => (await listXattrs(tx, await this.inode(tx, a.ino))).filter((n) => n !== PLOCK_XATTR));
  }

  async removexattr(_ctx: RequestContext, a: XattrNameArgs): Promise<void> {
    await this.run(true, async (tx) => {
      const i = await this.inode(tx, a.ino);
      await removeXattr(tx, this.m.ctx, i, PosixFs.userXattr(a.name));
      this.touch(i, { c: true });
      tx.putInode(i);
    });
  }

  /** Inodes the kernel still references (for tests and unmount accounting). */
  get referencedInodes(): number {
    return this.lookups.size;
  }
}

function fileTypeToMode(ft: number): number {
  return [0, 0o100000, 0o040000, 0o020000, 0o060000, 0o010000, 0o140000, 0o120000][ft] ?? 0;
}

/** How PosixFs reaches the kernel's caches (the FUSE session's notifications). */
export interface KernelNotifier {
  /** FUSE_NOTIFY_INVAL_ENTRY, queued; resolves false if the kernel had no such name. */
  invalEntry(parent: number, name: Buffer): Promise<boolean>;
  /** FUSE_NOTIFY_INVAL_INODE for attributes only, written at once (cannot block). */
  invalidateAttrsNow(ino: number): boolean;
  /** FUSE_NOTIFY_INC_EPOCH, written at once (cannot block); false if unsupported. */
  expireAllNamesNow(): boolean;
  readonly canExpireAllNames: boolean;
}

/**
 * The names (parent inode number + name) the kernel holds dentries for, with the inode each
 * names. Over-approximate by design: a name the kernel already dropped costs one useless
 * notification; a name missing here would leave a stale dentry behind.
 */
class KernelNames {
  private readonly byKey = new Map<string, { parent: number; name: Buffer; blkno: number }>();
  private readonly byInode = new Map<number, Set<string>>();
  private readonly byParent = new Map<number, Set<string>>();

  private static key(parent: number, name: Buffer): string {
    return `${parent}/${name.toString('latin1')}`;
  }

  add(parent: number, name: Buffer, blkno: number): void {
    const key = KernelNames.key(parent, name);
    this.removeKey(key);
    this.byKey.set(key, { parent, name: Buffer.from(name), blkno });
    KernelNames.index(this.byInode, blkno, key);
    KernelNames.index(this.byParent, parent, key);
  }

  private static index(m: Map<number, Set<string>>, at: number, key: string): void {
    let keys = m.get(at);
    if (!keys) m.set(at, (keys = new Set()));
    keys.add(key);
  }

  private static unindex(m: Map<number, Set<string>>, at: number, key: string): void {
    const keys = m.get(at);
    keys?.delete(key);
    if (keys && keys.size === 0) m.delete(at);
  }

  remove(parent: number, name: Buffer): void {
    this.removeKey(KernelNames.key(parent, name));
  }

  /** The kernel moved its dentry (rename, or swapped two with RENAME_EXCHANGE). */
  rename(parent: number, name: Buffer, newParent: number, newName: Buffer, exchange: boolean): void {
    const from = this.byKey.get(KernelNames.key(parent, name));
    const to = this.byKey.get(KernelNames.key(newParent, newName));
    this.remove(parent, name);
    this.remove(newParent, newName);
    if (from) this.add(newParent, newName, from.blkno);
    if (exchange && to) this.add(parent, name, to.blkno);
  }

  /** The kernel forgot the inode: none of its names are cached any more. */
  forgetInode(blkno: number): void {
    for (const key of [...(this.byInode.get(blkno) ?? [])]) this.removeKey(key);
  }

  /** Every name in directory `parent` (its inode number), forgetting them. */
  takeUnder(parent: number): Array<{ parent: number; name: Buffer }> {
    const keys = [...(this.byParent.get(parent) ?? [])];
    const out = keys.map((k) => this.byKey.get(k)!);
    for (const k of keys) this.removeKey(k);
    return out;
  }

  private removeKey(key: string): void {
    const e = this.byKey.get(key);
    if (!e) return;
    this.byKey.delete(key);
    KernelNames.unindex(this.byInode, e.blkno, key);
    KernelNames.unindex(this.byParent, e.parent, key);
  }
}
