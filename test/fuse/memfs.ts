// Test fixture: a small in-memory filesystem implementing FuseOps, with counters the tests
// assert on (largest WRITE, lock requests, readdirplus calls, interrupted requests) and
// "behind the kernel's back" mutators for the cache-invalidation test. Not for production.
import { constants } from 'node:fs';
import { FsError } from '../../fs/errors';
import type {
  Attr, AttrReply, CopyFileRangeArgs, CreateArgs, CreateReply, DirEntry, DirEntryPlus, DirFiller,
  Entry, FallocateArgs, FileLock, FlushArgs, FsyncArgs, FuseOps, LinkArgs, LockArgs, LseekArgs,
  MkdirArgs, MknodArgs, NameArgs, OpenArgs, OpenReply, ReadArgs, ReaddirArgs, ReleaseArgs,
  RenameArgs, RequestContext, SetAttrArgs, SetLockArgs, SetxattrArgs, StatFs, SymlinkArgs, WriteArgs,
  XattrNameArgs,
} from '../../fs/fuse/ops';
import { LockType } from '../../fs/fuse/protocol';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const O_TRUNC = constants.O_TRUNC;
const O_EXCL = constants.O_EXCL;
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FIRST_COOKIE = 3; // 1 and 2 are "." and ".."
const LOCK_WAIT_MS_MAX = 20_000;
const BLOCK_WAIT_MS_MAX = 20_000;

interface LockRecord {
  owner: bigint;
  start: bigint;
  end: bigint;
  type: number;
  pid: number;
}

interface Node {
  ino: number;
  generation: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  data: Buffer; // capacity; the file is data[0, sizeBytes)
  sizeBytes: number;
  target: Buffer; // symlinks
  entries: Map<string, { ino: number; cookie: number }>; // directories; key = latin1 name
  nextCookie: number;
  parent: number;
  xattrs: Map<string, Buffer>;
  lookups: number;
  opens: number;
  posixLocks: LockRecord[];
  flockLocks: LockRecord[];
  lockWaiters: (() => void)[];
  /** Interrupt test: OPEN of this inode waits until the request is aborted. */
  blockOnOpen: boolean;
}

export interface MemFsOptions {
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
  keepCache?: boolean;
  /** Offer readdirplus (FUSE_DO_READDIRPLUS). Default true. */
  readdirplus?: boolean;
  /** Called for notable events: 'blocked-open', 'aborted' ... */
  onEvent?: (name: string, detail: Record<string, unknown>) => void;
}

export interface MemFsStats {
  writes: number;
  writeSizeBytesMax: number;
  reads: number;
  readSizeBytesMax: number;
  readdirCalls: number;
  readdirplusCalls: number;
  posixLockRequests: number;
  flockRequests: number;
  getlkRequests: number;
  forgets: number;
  aborted: string[];
  inodes: number;
}

const EPOCH_OFFSET_NS = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
function nowNs(): bigint {
  return process.hrtime.bigint() + EPOCH_OFFSET_NS;
}

function key(name: Buffer): string {
  return name.toString('latin1');
}

function overlaps(a: { start: bigint; end: bigint }, b: { start: bigint; end: bigint }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

function sleepAbortable(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export class MemFs implements FuseOps {
  private readonly nodes = new Map<number, Node>();
  private nextIno = 2;
  private nextFh = 1;
  private readonly opts: MemFsOptions;
  readonly counters: Omit<MemFsStats, 'inodes'> = {
    writes: 0, writeSizeBytesMax: 0, reads: 0, readSizeBytesMax: 0, readdirCalls: 0, readdirplusCalls: 0,
    posixLockRequests: 0, flockRequests: 0, getlkRequests: 0, forgets: 0, aborted: [],
  };
  readdirplus?: (ctx: RequestContext, args: ReaddirArgs, out: DirFiller<DirEntryPlus>) => Promise<void>;

  constructor(opts: MemFsOptions = {}) {
    this.opts = opts;
    const root = this.newNode(S_IFDIR | 0o755, 0, 0, 1);
    root.ino = 1;
    root.nlink = 2;
    root.lookups = 1; // the kernel holds the root forever
    this.nodes.set(1, root);
    if (opts.readdirplus !== false) this.readdirplus = this.readdirplusImpl.bind(this);
  }

  stats(): MemFsStats {
    return { ...this.counters, aborted: [...this.counters.aborted], inodes: this.nodes.size };
  }

  // --- Fixture controls (the "behind the kernel's back" side) --------------------------------

  /** Resolves a path like "a/b" from the root. */
  resolve(path: string): Node {
    let node = this.get(1);
    for (const part of path.split('/').filter((p) => p.length > 0)) {
      const e = node.entries.get(key(Buffer.from(part)));
      if (!e) throw new FsError('ENOENT', path);
      node = this.get(e.ino);
    }
    return node;
  }

  /** Creates or replaces a regular file's content without telling the kernel. */
  writeFileBehind(path: string, data: Buffer, opts: { blockOnOpen?: boolean } = {}): number {
    const parts = path.split('/').filter((p) => p.length > 0);
    const name = parts.pop();
    if (name === undefined) throw new FsError('EINVAL', 'empty path');
    const dir = this.resolve(parts.join('/'));
    const existing = dir.entries.get(key(Buffer.from(name)));
    const node = existing ? this.get(existing.ino) : this.newNode(S_IFREG | 0o644, 0, 0, 1);
    if (!existing) this.addLink(dir, Buffer.from(name), node);
    node.data = Buffer.from(data);
    node.sizeBytes = data.length;
    node.mtimeNs = node.ctimeNs = nowNs();
    node.blockOnOpen = opts.blockOnOpen ?? false;
    return node.ino;
  }

  /** Removes a name without telling the kernel. */
  unlinkBehind(path: string): void {
    const parts = path.split('/').filter((p) => p.length > 0);
    const name = parts.pop() ?? '';
    const dir = this.resolve(parts.join('/'));
    const e = dir.entries.get(key(Buffer.from(name)));
    if (!e) throw new FsError('ENOENT', path);
    dir.entries.delete(key(Buffer.from(name)));
    this.dropLink(this.get(e.ino));
  }

  // --- Helpers ---------------------------------------------------------------------------------

  private get(ino: number): Node {
    const node = this.nodes.get(ino);
    if (!node) throw new FsError('ENOENT', `no inode ${ino}`);
    return node;
  }

  private dir(ino: number): Node {
    const node = this.get(ino);
    if ((node.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR', `inode ${ino}`);
    return node;
  }

  private newNode(mode: number, uid: number, gid: number, parent: number): Node {
    const t = nowNs();
    const node: Node = {
      ino: this.nextIno++, generation: 1, mode, nlink: 0, uid, gid, rdev: 0,
      atimeNs: t, mtimeNs: t, ctimeNs: t, data: Buffer.alloc(0), sizeBytes: 0, target: Buffer.alloc(0),
      entries: new Map(), nextCookie: FIRST_COOKIE, parent, xattrs: new Map(), lookups: 0, opens: 0,
      posixLocks: [], flockLocks: [], lockWaiters: [], blockOnOpen: false,
    };
    this.nodes.set(node.ino, node);
    return node;
  }

  private addLink(dir: Node, name: Buffer, node: Node): void {
    dir.entries.set(key(name), { ino: node.ino, cookie: dir.nextCookie++ });
    node.nlink += 1;
    if ((node.mode & S_IFMT) === S_IFDIR) {
      node.nlink += 1; // "."
      node.parent = dir.ino;
      dir.nlink += 1; // ".."
    }
    dir.mtimeNs = dir.ctimeNs = nowNs();
  }

  private dropLink(node: Node): void {
    node.nlink -= (node.mode & S_IFMT) === S_IFDIR ? 2 : 1;
    node.ctimeNs = nowNs();
    this.maybeFree(node);
  }

  private maybeFree(node: Node): void {
    if (node.nlink <= 0 && node.lookups <= 0 && node.opens <= 0 && node.ino !== 1) this.nodes.delete(node.ino);
  }

  private attr(node: Node): Attr {
    return {
      ino: node.ino, sizeBytes: node.sizeBytes, blocks512: Math.ceil(node.sizeBytes / 512),
      atimeNs: node.atimeNs, mtimeNs: node.mtimeNs, ctimeNs: node.ctimeNs, mode: node.mode,
      nlink: node.nlink, uid: node.uid, gid: node.gid, rdev: node.rdev, blksizeBytes: 4096,
    };
  }

  private entry(node: Node): Entry {
    node.lookups += 1; // every Entry reply is one kernel lookup reference
    return {
      ino: node.ino, generation: node.generation, attr: this.attr(node),
      entryTimeoutMs: this.opts.entryTimeoutMs ?? 1000, attrTimeoutMs: this.opts.attrTimeoutMs ?? 1000,
    };
  }

  private attrReply(node: Node): AttrReply {
    return { attr: this.attr(node), attrTimeoutMs: this.opts.attrTimeoutMs ?? 1000 };
  }

  private child(parent: number, name: Buffer): Node | undefined {
    const e = this.dir(parent).entries.get(key(name));
    return e ? this.get(e.ino) : undefined;
  }

  private create_(parent: number, name: Buffer, mode: number, ctx: RequestContext): Node {
    const dir = this.dir(parent);
    if (dir.entries.has(key(name))) throw new FsError('EEXIST', name.toString());
    const node = this.newNode(mode, ctx.uid, ctx.gid, parent);
    this.addLink(dir, name, node);
    return node;
  }

  private resize(node: Node, sizeBytes: number): void {
    if (sizeBytes > node.data.length) {
      const grown = Buffer.alloc(Math.max(sizeBytes, node.data.length * 2));
      node.data.copy(grown, 0, 0, node.sizeBytes);
      node.data = grown;
    } else if (sizeBytes < node.sizeBytes) {
      node.data.fill(0, sizeBytes, node.sizeBytes);
    }
    node.sizeBytes = sizeBytes;
  }

  // --- FuseOps ---------------------------------------------------------------------------------

  async lookup(_ctx: RequestContext, a: NameArgs): Promise<Entry> {
    const node = this.child(a.parent, a.name);
    if (!node) throw new FsError('ENOENT', a.name.toString());
    return this.entry(node);
  }

  forget(ino: number, nlookup: number): void {
    this.counters.forgets += 1;
    const node = this.nodes.get(ino);
    if (!node) return;
    node.lookups -= nlookup;
    if (node.lookups < 0) throw new Error(`inode ${ino}: lookup count went negative`);
    this.maybeFree(node);
  }

  async getattr(_ctx: RequestContext, a: { ino: number }): Promise<AttrReply> {
    return this.attrReply(this.get(a.ino));
  }

  async setattr(_ctx: RequestContext, a: SetAttrArgs): Promise<AttrReply> {
    const node = this.get(a.ino);
    const t = nowNs();
    if (a.mode !== undefined) node.mode = (node.mode & S_IFMT) | (a.mode & 0o7777);
    if (a.uid !== undefined) node.uid = a.uid;
    if (a.gid !== undefined) node.gid = a.gid;
    if (a.sizeBytes !== undefined) {
      this.resize(node, a.sizeBytes);
      node.mtimeNs = t;
    }
    if (a.atimeNs !== undefined) node.atimeNs = a.atimeNs === 'now' ? t : a.atimeNs;
    if (a.mtimeNs !== undefined) node.mtimeNs = a.mtimeNs === 'now' ? t : a.mtimeNs;
    node.ctimeNs = a.ctimeNs ?? t;
    return this.attrReply(node);
  }

  async readlink(_ctx: RequestContext, a: { ino: number }): Promise<Buffer> {
    const node = this.get(a.ino);
    if ((node.mode & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL', 'not a symlink');
    return node.target;
  }

  async mknod(ctx: RequestContext, a: MknodArgs): Promise<Entry> {
    const node = this.create_(a.parent, a.name, a.mode, ctx);
    node.rdev = a.rdev;
    return this.entry(node);
  }

  async mkdir(ctx: RequestContext, a: MkdirArgs): Promise<Entry> {
    return this.entry(this.create_(a.parent, a.name, S_IFDIR | (a.mode & 0o7777), ctx));
  }

  async unlink(_ctx: RequestContext, a: NameArgs): Promise<void> {
    const dir = this.dir(a.parent);
    const node = this.child(a.parent, a.name);
    if (!node) throw new FsError('ENOENT', a.name.toString());
    if ((node.mode & S_IFMT) === S_IFDIR) throw new FsError('EISDIR', a.name.toString());
    dir.entries.delete(key(a.name));
    dir.mtimeNs = dir.ctimeNs = nowNs();
    this.dropLink(node);
  }

  async rmdir(_ctx: RequestContext, a: NameArgs): Promise<void> {
    const dir = this.dir(a.parent);
    const node = this.child(a.parent, a.name);
    if (!node) throw new FsError('ENOENT', a.name.toString());
    if ((node.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR', a.name.toString());
    if (node.entries.size > 0) throw new FsError('ENOTEMPTY', a.name.toString());
    dir.entries.delete(key(a.name));
    dir.nlink -= 1;
    dir.mtimeNs = dir.ctimeNs = nowNs();
    this.dropLink(node);
  }

  async symlink(ctx: RequestContext, a: SymlinkArgs): Promise<Entry> {
    const node = this.create_(a.parent, a.name, S_IFLNK | 0o777, ctx);
    node.target = Buffer.from(a.target);
    node.sizeBytes = a.target.length;
    return this.entry(node);
  }

  async rename(_ctx: RequestContext, a: RenameArgs): Promise<void> {
    const from = this.dir(a.parent);
    const to = this.dir(a.newParent);
    const src = from.entries.get(key(a.name));
    if (!src) throw new FsError('ENOENT', a.name.toString());
    const dst = to.entries.get(key(a.newName));
    if (a.flags & RENAME_EXCHANGE) {
      if (!dst) throw new FsError('ENOENT', a.newName.toString());
      from.entries.set(key(a.name), { ino: dst.ino, cookie: from.nextCookie++ });
      to.entries.set(key(a.newName), { ino: src.ino, cookie: to.nextCookie++ });
      return;
    }
    if (dst && a.flags & RENAME_NOREPLACE) throw new FsError('EEXIST', a.newName.toString());
    const node = this.get(src.ino);
    if (dst) {
      if (dst.ino === src.ino) return;
      const victim = this.get(dst.ino);
      if ((victim.mode & S_IFMT) === S_IFDIR && victim.entries.size > 0) throw new FsError('ENOTEMPTY', a.newName.toString());
      to.entries.delete(key(a.newName));
      if ((victim.mode & S_IFMT) === S_IFDIR) to.nlink -= 1;
      this.dropLink(victim);
    }
    from.entries.delete(key(a.name));
    to.entries.set(key(a.newName), { ino: node.ino, cookie: to.nextCookie++ });
    if ((node.mode & S_IFMT) === S_IFDIR && from !== to) {
      from.nlink -= 1;
      to.nlink += 1;
      node.parent = to.ino;
    }
    const t = nowNs();
    from.mtimeNs = from.ctimeNs = to.mtimeNs = to.ctimeNs = node.ctimeNs = t;
  }

  async link(_ctx: RequestContext, a: LinkArgs): Promise<Entry> {
    const node = this.get(a.ino);
    const dir = this.dir(a.newParent);
    if (dir.entries.has(key(a.newName))) throw new FsError('EEXIST', a.newName.toString());
    this.addLink(dir, a.newName, node);
    return this.entry(node);
  }

  private openReply(): OpenReply {
    return { fh: this.nextFh++, keepCache: this.opts.keepCache ?? false };
  }

  async open(ctx: RequestContext, a: OpenArgs): Promise<OpenReply> {
    const node = this.get(a.ino);
    if (node.blockOnOpen) {
      this.opts.onEvent?.('blocked-open', { ino: a.ino, pid: ctx.pid });
      try {
        await sleepAbortable(BLOCK_WAIT_MS_MAX, ctx.signal);
      } catch (err) {
        this.counters.aborted.push(`open:${a.ino}`);
        this.opts.onEvent?.('aborted', { op: 'open', ino: a.ino });
        throw err;
      }
      throw new FsError('ETIMEDOUT', 'blocked open was never interrupted');
    }
    if (a.flags & O_TRUNC) this.resize(node, 0);
    node.opens += 1;
    return this.openReply();
  }

  async create(ctx: RequestContext, a: CreateArgs): Promise<CreateReply> {
    let node = this.child(a.parent, a.name);
    if (node && a.flags & O_EXCL) throw new FsError('EEXIST', a.name.toString());
    node ??= this.create_(a.parent, a.name, a.mode, ctx);
    if (a.flags & O_TRUNC) this.resize(node, 0);
    node.opens += 1;
    return { entry: this.entry(node), open: this.openReply() };
  }

  async read(_ctx: RequestContext, a: ReadArgs): Promise<Buffer> {
    const node = this.get(a.ino);
    this.counters.reads += 1;
    this.counters.readSizeBytesMax = Math.max(this.counters.readSizeBytesMax, a.sizeBytes);
    const end = Math.min(node.sizeBytes, a.offsetBytes + a.sizeBytes);
    if (a.offsetBytes >= end) return Buffer.alloc(0);
    return Buffer.from(node.data.subarray(a.offsetBytes, end));
  }

  async write(_ctx: RequestContext, a: WriteArgs): Promise<number> {
    const node = this.get(a.ino);
    this.counters.writes += 1;
    this.counters.writeSizeBytesMax = Math.max(this.counters.writeSizeBytesMax, a.data.length);
    const end = a.offsetBytes + a.data.length;
    if (end > node.sizeBytes) this.resize(node, end);
    a.data.copy(node.data, a.offsetBytes);
    node.mtimeNs = node.ctimeNs = nowNs();
    return a.data.length;
  }

  async flush(_ctx: RequestContext, a: FlushArgs): Promise<void> {
    // POSIX locks die with any close(2) by their owner; the kernel tells us only here.
    this.dropLocks(this.get(a.ino), 'posix', a.lockOwner);
  }

  async release(_ctx: RequestContext, a: ReleaseArgs): Promise<void> {
    const node = this.nodes.get(a.ino);
    if (!node) return;
    if (a.flockUnlock) this.dropLocks(node, 'flock', a.lockOwner);
    node.opens -= 1;
    this.maybeFree(node);
  }

  async fsync(_ctx: RequestContext, _a: FsyncArgs): Promise<void> {
    // memory is always "durable"
  }

  async opendir(_ctx: RequestContext, a: OpenArgs): Promise<OpenReply> {
    this.dir(a.ino);
    return { fh: this.nextFh++ };
  }

  private *listing(dir: Node, offset: number): Generator<{ name: Buffer; ino: number; cookie: number }> {
    if (offset < 1) yield { name: Buffer.from('.'), ino: dir.ino, cookie: 1 };
    if (offset < 2) yield { name: Buffer.from('..'), ino: dir.parent, cookie: 2 };
    for (const [name, e] of dir.entries) {
      if (e.cookie > offset) yield { name: Buffer.from(name, 'latin1'), ino: e.ino, cookie: e.cookie };
    }
  }

  async readdir(_ctx: RequestContext, a: ReaddirArgs, out: DirFiller<DirEntry>): Promise<void> {
    this.counters.readdirCalls += 1;
    const dir = this.dir(a.ino);
    for (const e of this.listing(dir, a.offset)) {
      const mode = this.nodes.get(e.ino)?.mode ?? S_IFDIR;
      if (!out.add({ ino: e.ino, offset: e.cookie, mode, name: e.name })) break;
    }
  }

  private async readdirplusImpl(_ctx: RequestContext, a: ReaddirArgs, out: DirFiller<DirEntryPlus>): Promise<void> {
    this.counters.readdirplusCalls += 1;
    const dir = this.dir(a.ino);
    for (const e of this.listing(dir, a.offset)) {
      const node = this.get(e.ino);
      const dot = e.cookie <= 2;
      const entry: Entry = {
        ino: node.ino, generation: node.generation, attr: this.attr(node),
        entryTimeoutMs: this.opts.entryTimeoutMs ?? 1000, attrTimeoutMs: this.opts.attrTimeoutMs ?? 1000,
      };
      if (!out.add({ entry, offset: e.cookie, name: e.name })) break;
      if (!dot) node.lookups += 1; // the kernel takes a reference for each accepted entry but . and ..
    }
  }

  async statfs(_ctx: RequestContext, _a: { ino: number }): Promise<StatFs> {
    return {
      blocks: 1_234_567, blocksFree: 1_000_000, blocksAvailable: 999_999, files: 65_536,
      filesFree: 65_536 - this.nodes.size, blockSizeBytes: 4096, nameLengthMax: 255, fragmentSizeBytes: 4096,
    };
  }

  async setxattr(_ctx: RequestContext, a: SetxattrArgs): Promise<void> {
    const node = this.get(a.ino);
    const exists = node.xattrs.has(a.name);
    if (a.flags & XATTR_CREATE && exists) throw new FsError('EEXIST', a.name);
    if (a.flags & XATTR_REPLACE && !exists) throw new FsError('ENODATA', a.name);
    node.xattrs.set(a.name, Buffer.from(a.value));
    node.ctimeNs = nowNs();
  }

  async getxattr(_ctx: RequestContext, a: XattrNameArgs): Promise<Buffer> {
    const value = this.get(a.ino).xattrs.get(a.name);
    if (!value) throw new FsError('ENODATA', a.name);
    return value;
  }

  async listxattr(_ctx: RequestContext, a: { ino: number }): Promise<string[]> {
    return [...this.get(a.ino).xattrs.keys()];
  }

  async removexattr(_ctx: RequestContext, a: XattrNameArgs): Promise<void> {
    const node = this.get(a.ino);
    if (!node.xattrs.delete(a.name)) throw new FsError('ENODATA', a.name);
    node.ctimeNs = nowNs();
  }

  // --- Locks: POSIX record locks per owner, flock locks per open file -------------------------

  private conflict(node: Node, a: LockArgs): LockRecord | undefined {
    const list = a.flock ? node.flockLocks : node.posixLocks;
    return list.find((l) => l.owner !== a.owner && overlaps(l, a.lock)
      && (l.type === LockType.WRLCK || a.lock.type === LockType.WRLCK));
  }

  private dropLocks(node: Node, kind: 'posix' | 'flock', owner: bigint, range?: { start: bigint; end: bigint }): void {
    const list = kind === 'flock' ? node.flockLocks : node.posixLocks;
    const kept: LockRecord[] = [];
    for (const l of list) {
      if (l.owner !== owner || (range && !overlaps(l, range))) {
        kept.push(l);
        continue;
      }
      if (range && l.start < range.start) kept.push({ ...l, end: range.start - 1n });
      if (range && l.end > range.end) kept.push({ ...l, start: range.end + 1n });
    }
    list.splice(0, list.length, ...kept);
    for (const wake of node.lockWaiters.splice(0)) wake();
  }

  async getlk(_ctx: RequestContext, a: LockArgs): Promise<FileLock> {
    this.counters.getlkRequests += 1;
    const c = this.conflict(this.get(a.ino), a);
    return c ? { start: c.start, end: c.end, type: c.type, pid: c.pid } : { ...a.lock, type: LockType.UNLCK, pid: 0 };
  }

  async setlk(ctx: RequestContext, a: SetLockArgs): Promise<void> {
    if (a.flock) this.counters.flockRequests += 1;
    else this.counters.posixLockRequests += 1;
    const node = this.get(a.ino);
    const kind = a.flock ? 'flock' : 'posix';
    if (a.lock.type === LockType.UNLCK) {
      this.dropLocks(node, kind, a.owner, a.flock ? undefined : a.lock);
      return;
    }
    const deadline = Date.now() + LOCK_WAIT_MS_MAX;
    while (this.conflict(node, a)) {
      if (!a.sleep) throw new FsError('EAGAIN', 'lock held');
      if (Date.now() > deadline) throw new FsError('EDEADLK', 'lock wait bound exceeded');
      try {
        await new Promise<void>((resolve, reject) => {
          const onAbort = (): void => reject(ctx.signal.reason);
          if (ctx.signal.aborted) onAbort();
          ctx.signal.addEventListener('abort', onAbort, { once: true });
          node.lockWaiters.push(() => {
            ctx.signal.removeEventListener('abort', onAbort);
            resolve();
          });
        });
      } catch (err) {
        this.counters.aborted.push(`setlkw:${a.ino}`);
        this.opts.onEvent?.('aborted', { op: 'setlkw', ino: a.ino });
        throw err;
      }
    }
    // Replace this owner's locks in the range (POSIX) or its one flock lock.
    this.dropLocks(node, kind, a.owner, a.flock ? undefined : a.lock);
    const list = a.flock ? node.flockLocks : node.posixLocks;
    list.push({ owner: a.owner, start: a.lock.start, end: a.lock.end, type: a.lock.type, pid: a.lock.pid });
  }

  async fallocate(_ctx: RequestContext, a: FallocateArgs): Promise<void> {
    if (a.mode !== 0) throw new FsError('EOPNOTSUPP', `fallocate mode ${a.mode}`);
    const node = this.get(a.ino);
    if (a.offsetBytes + a.lengthBytes > node.sizeBytes) this.resize(node, a.offsetBytes + a.lengthBytes);
  }

  async lseek(_ctx: RequestContext, a: LseekArgs): Promise<number> {
    const node = this.get(a.ino);
    if (a.offsetBytes >= node.sizeBytes) throw new FsError('ENXIO', 'past end');
    if (a.whence === SEEK_DATA) return a.offsetBytes;
    if (a.whence === SEEK_HOLE) return node.sizeBytes;
    throw new FsError('EINVAL', `whence ${a.whence}`);
  }

  async copyFileRange(_ctx: RequestContext, a: CopyFileRangeArgs): Promise<number> {
    const src = this.get(a.inoIn);
    const dst = this.get(a.inoOut);
    const n = Math.max(0, Math.min(a.lengthBytes, src.sizeBytes - a.offsetInBytes));
    const chunk = Buffer.from(src.data.subarray(a.offsetInBytes, a.offsetInBytes + n));
    if (a.offsetOutBytes + n > dst.sizeBytes) this.resize(dst, a.offsetOutBytes + n);
    chunk.copy(dst.data, a.offsetOutBytes);
    return n;
  }
}
