// The inode-based interface a filesystem implements to be served by FuseSession (modelled on
// Rust fuser's `Filesystem` trait and libfuse's lowlevel ops). Every method receives the
// request context and one typed argument object decoded from the kernel's request, and
// returns a typed result (or nothing). Errors are thrown as FsError (fs/errors.ts); the
// session maps them to an errno in one place. Any other exception becomes EIO plus a log line.
//
// Numbers: inode numbers, file handles, generations, file offsets and sizes are JS numbers and
// must be safe integers (the session asserts this; o2fs never needs more than 2^53). Lock owners
// and lock ranges are bigint: the kernel fills all 64 bits (owner hashes, OFFSET_MAX).
//
// Optional methods: when the filesystem lacks one, the session answers ENOSYS (which the kernel
// remembers and handles itself: no FLUSH/FSYNC/ACCESS/xattr/COPY_FILE_RANGE/LSEEK requests are
// sent again), or, for OPEN/OPENDIR/RELEASE/RELEASEDIR, succeeds with fh 0. Lock methods and
// readdirplus also decide which INIT flags are negotiated (POSIX_LOCKS/FLOCK_LOCKS,
// DO_READDIRPLUS), so a filesystem without them gets the kernel's local locking / plain READDIR.
//
// Lookup counting (the filesystem's job, as in libfuse): every successful reply that carries
// an Entry -- lookup, mknod, mkdir, symlink, link, create, and each readdirplus entry that the
// filler accepted except "." and ".." and entries with ino 0 -- adds one to the kernel's lookup
// count of that inode. FORGET/BATCH_FORGET (forget below) subtract nlookup. An inode may be
// freed (and its number reused) only once its count is 0 and it has no links; until then the
// kernel may still send requests for it (e.g. an open-unlinked file). The root (ino 1) is never
// forgotten. After the session ends, all counts are implicitly 0.

/** Who asked, and whether they still care. */
export interface RequestContext {
  /** The kernel's request id (unique among in-flight requests). */
  readonly unique: bigint;
  readonly uid: number;
  readonly gid: number;
  /** Thread-group id of the caller; 0 for requests the kernel makes on its own. */
  readonly pid: number;
  /**
   * Aborted when the kernel sends INTERRUPT for this request (the caller got a signal) or the
   * session ends. The filesystem may then give up and throw FsError('EINTR'); `signal.reason`
   * is such an error. Work that already changed state should still complete and reply.
   */
  readonly signal: AbortSignal;
}

/** struct stat, as the kernel caches it. Times are nanoseconds since the epoch. */
export interface Attr {
  ino: number;
  sizeBytes: number;
  /** st_blocks: allocated space in 512-byte units. */
  blocks512: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** File type and permission bits (S_IFREG | 0o644, ...). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Device number for S_IFCHR/S_IFBLK (kernel new_encode_dev format). */
  rdev: number;
  /** Preferred I/O size reported as st_blksize; the session uses 4096 when absent. */
  blksizeBytes?: number;
}

/** Result of a lookup or a create-type call: a name now refers to this inode. */
export interface Entry {
  /** 0 means "no such name" cached for entryTimeoutMs (a negative entry; lookup only). */
  ino: number;
  /** ino:generation must be unique over the filesystem's lifetime (reuse bumps it). */
  generation: number;
  attr: Attr;
  /** How long the kernel may trust the name -> inode mapping without asking again. */
  entryTimeoutMs: number;
  /** How long the kernel may trust `attr`. */
  attrTimeoutMs: number;
}

export interface AttrReply {
  attr: Attr;
  attrTimeoutMs: number;
}

/** Result of open/opendir/create: the handle and how the kernel should cache the file. */
export interface OpenReply {
  /** Opaque to the kernel; passed back with every request on this open file. */
  fh: number;
  /** Bypass the page cache for this open (FOPEN_DIRECT_IO). Forced on by noKernelCache. */
  directIo?: boolean;
  /** Do not drop cached pages on this open (FOPEN_KEEP_CACHE). Forced off by noKernelCache. */
  keepCache?: boolean;
  nonSeekable?: boolean;
  /** opendir only: let the kernel cache the directory listing (FOPEN_CACHE_DIR). */
  cacheDir?: boolean;
  /** Allow concurrent direct-I/O writes to this inode (FOPEN_PARALLEL_DIRECT_WRITES). */
  parallelDirectWrites?: boolean;
  /** Do not send FLUSH on close (FOPEN_NOFLUSH). */
  noFlush?: boolean;
}

export interface CreateReply {
  entry: Entry;
  open: OpenReply;
}

/** One READDIR record. */
export interface DirEntry {
  ino: number;
  /**
   * This entry's cookie: the value the kernel passes back as ReaddirArgs.offset to continue
   * the listing right after this entry. Chosen by the filesystem, > 0, stable while the
   * directory is open (a position or a hash; never reused for a different place).
   */
  offset: number;
  /** File type bits (mode & S_IFMT is used; permission bits are ignored). */
  mode: number;
  name: Buffer | string;
}

/** One READDIRPLUS record: a DirEntry plus the lookup result for it. */
export interface DirEntryPlus {
  /** ino 0 = send the name without lookup data (no lookup count taken). */
  entry: Entry;
  offset: number;
  name: Buffer | string;
}

/**
 * Collects directory entries into the kernel's reply buffer. `add` returns false (and adds
 * nothing) once the buffer is full: stop there, and count lookups only for entries accepted.
 */
export interface DirFiller<T> {
  /** Adds an entry; false when the reply is full. */
  add(entry: T): boolean;
  /** Forgets every entry added so far (the operation starts over, as a cluster mount's may). */
  reset(): void;
}

export interface StatFs {
  blocks: number;
  blocksFree: number;
  blocksAvailable: number;
  files: number;
  filesFree: number;
  blockSizeBytes: number;
  nameLengthMax: number;
  fragmentSizeBytes: number;
}

/** A byte-range lock as the kernel describes it (struct fuse_file_lock). */
export interface FileLock {
  start: bigint;
  /** Inclusive end; LOCK_END_MAX (OFFSET_MAX) = to the end of the file. */
  end: bigint;
  /** LockType.RDLCK / WRLCK / UNLCK */
  type: number;
  /** Owning process (tgid) for GETLK replies; informational in requests. */
  pid: number;
}

// --- Request arguments -----------------------------------------------------------------------

export interface NameArgs {
  parent: number;
  name: Buffer;
}

export interface SetAttrArgs {
  ino: number;
  /** Present when the caller used an open file (ftruncate, fchmod, ...). */
  fh?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  sizeBytes?: number;
  /** 'now' = set to the current time (utimensat UTIME_NOW); absent = leave it (UTIME_OMIT). */
  atimeNs?: bigint | 'now';
  mtimeNs?: bigint | 'now';
  ctimeNs?: bigint;
  lockOwner?: bigint;
  /** Clear setuid/setgid as a write by an unprivileged caller would (HANDLE_KILLPRIV_V2 only). */
  killSuidgid: boolean;
}

export interface MknodArgs extends NameArgs {
  mode: number;
  rdev: number;
  /** The caller's umask; the kernel has already applied it to `mode`. */
  umask: number;
}

export interface MkdirArgs extends NameArgs {
  mode: number;
  umask: number;
}

export interface SymlinkArgs extends NameArgs {
  target: Buffer;
}

export interface RenameArgs extends NameArgs {
  newParent: number;
  newName: Buffer;
  /** renameat2 flags: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2, RENAME_WHITEOUT 4 (0 for RENAME). */
  flags: number;
}

export interface LinkArgs {
  ino: number;
  newParent: number;
  newName: Buffer;
}

export interface OpenArgs {
  ino: number;
  /** open(2) flags (O_ACCMODE, O_TRUNC with ATOMIC_O_TRUNC: truncate here, O_APPEND, ...). */
  flags: number;
  /** FUSE_OPEN_KILL_SUIDGID */
  openFlags: number;
}

export interface CreateArgs extends NameArgs {
  mode: number;
  umask: number;
  flags: number;
  openFlags: number;
}

export interface ReadArgs {
  ino: number;
  fh: number;
  offsetBytes: number;
  sizeBytes: number;
  /** open(2) flags of the file. */
  flags: number;
  lockOwner?: bigint;
}

export interface WriteArgs {
  ino: number;
  fh: number;
  offsetBytes: number;
  /**
   * The bytes to write; a view into the request buffer, valid until the returned promise
   * settles, and after that until every promise handed to `hold` has settled.
   */
  data: Buffer;
  flags: number;
  /** WRITE_CACHE: a delayed write from the page cache (fh may be any open handle of the inode). */
  writeFlags: number;
  lockOwner?: bigint;
  /** Keeps `data` valid until `done` settles (a write answered before it reached the disk). */
  hold?: (done: Promise<void>) => void;
}

export interface FlushArgs {
  ino: number;
  fh: number;
  lockOwner: bigint;
}

export interface ReleaseArgs {
  ino: number;
  fh: number;
  flags: number;
  /** RELEASE_FLUSH: flush before releasing. */
  flush: boolean;
  /** RELEASE_FLOCK_UNLOCK: drop the flock held through this open file (owner = lockOwner). */
  flockUnlock: boolean;
  lockOwner: bigint;
}

export interface FsyncArgs {
  ino: number;
  fh: number;
  dataOnly: boolean;
}

export interface ReaddirArgs {
  ino: number;
  fh: number;
  /** 0 = from the start; otherwise a DirEntry.offset this filesystem handed out. */
  offset: number;
  /** Size of the kernel's buffer; the filler enforces it. */
  sizeBytes: number;
}

export interface ReleasedirArgs {
  ino: number;
  fh: number;
  flags: number;
}

export interface SetxattrArgs {
  ino: number;
  name: string;
  value: Buffer;
  /** XATTR_CREATE 1, XATTR_REPLACE 2 */
  flags: number;
}

export interface XattrNameArgs {
  ino: number;
  name: string;
}

export interface LockArgs {
  ino: number;
  fh: number;
  owner: bigint;
  lock: FileLock;
  /** BSD flock(2) lock (whole file, owner = open file) rather than a POSIX record lock. */
  flock: boolean;
}

export interface SetLockArgs extends LockArgs {
  /** SETLKW: wait for a conflicting lock to go away (watch ctx.signal); else EAGAIN at once. */
  sleep: boolean;
}

export interface FallocateArgs {
  ino: number;
  fh: number;
  offsetBytes: number;
  lengthBytes: number;
  /** FALLOC_FL_* */
  mode: number;
}

export interface LseekArgs {
  ino: number;
  fh: number;
  offsetBytes: number;
  /** SEEK_DATA 3 / SEEK_HOLE 4 (the kernel handles SET/CUR/END itself). */
  whence: number;
}

export interface CopyFileRangeArgs {
  inoIn: number;
  fhIn: number;
  offsetInBytes: number;
  inoOut: number;
  fhOut: number;
  offsetOutBytes: number;
  lengthBytes: number;
  flags: number;
}

/** What INIT negotiated; given to FuseOps.init before the reply goes out. */
export interface InitInfo {
  protocolMinor: number;
  /** Flags the kernel offered. */
  kernelFlags: bigint;
  /** Flags both sides agreed on. */
  flags: bigint;
  maxWriteBytes: number;
  maxReadaheadBytes: number;
  maxPages: number;
}

type Awaitable<T> = T | Promise<T>;

/**
 * The filesystem. Required: lookup and getattr. Everything else is optional; see the header
 * comment for what the session does when a method is absent.
 */
export interface FuseOps {
  /**
   * True when the filesystem clears setuid/setgid (and security.capability) itself on write,
   * truncate and chown, as FUSE_HANDLE_KILLPRIV_V2 asks: WriteArgs.writeFlags carries
   * WRITE_KILL_SUIDGID, SetAttrArgs.killSuidgid and OpenArgs.openFlags OPEN_KILL_SUIDGID say
   * when. The kernel then stops asking for security.capability before every write.
   */
  readonly handlesKillPrivV2?: boolean;
  /** INIT: the connection is up. Throwing fails the mount's INIT (the kernel gives up). */
  init?(info: InitInfo): Awaitable<void>;
  /** DESTROY, or the connection ended (unmount/abort). Called at most once. */
  destroy?(): Awaitable<void>;

  lookup(ctx: RequestContext, args: NameArgs): Promise<Entry>;
  /** Drop nlookup references (see lookup counting above). No reply; errors are logged. */
  forget?(ino: number, nlookup: number): Awaitable<void>;
  getattr(ctx: RequestContext, args: { ino: number; fh?: number }): Promise<AttrReply>;
  setattr?(ctx: RequestContext, args: SetAttrArgs): Promise<AttrReply>;
  readlink?(ctx: RequestContext, args: { ino: number }): Promise<Buffer>;
  mknod?(ctx: RequestContext, args: MknodArgs): Promise<Entry>;
  mkdir?(ctx: RequestContext, args: MkdirArgs): Promise<Entry>;
  unlink?(ctx: RequestContext, args: NameArgs): Promise<void>;
  rmdir?(ctx: RequestContext, args: NameArgs): Promise<void>;
  symlink?(ctx: RequestContext, args: SymlinkArgs): Promise<Entry>;
  rename?(ctx: RequestContext, args: RenameArgs): Promise<void>;
  link?(ctx: RequestContext, args: LinkArgs): Promise<Entry>;

  open?(ctx: RequestContext, args: OpenArgs): Promise<OpenReply>;
  /** Returns at most sizeBytes bytes; fewer only at end of file (or for direct-I/O files). */
  read?(ctx: RequestContext, args: ReadArgs): Promise<Buffer>;
  /** Returns the number of bytes written (all of them, unless direct I/O short-writes). */
  write?(ctx: RequestContext, args: WriteArgs): Promise<number>;
  /** close(2) of one descriptor; also where POSIX locks of lockOwner die (the kernel sends SETLK unlock too). */
  flush?(ctx: RequestContext, args: FlushArgs): Promise<void>;
  release?(ctx: RequestContext, args: ReleaseArgs): Promise<void>;
  fsync?(ctx: RequestContext, args: FsyncArgs): Promise<void>;

  opendir?(ctx: RequestContext, args: OpenArgs): Promise<OpenReply>;
  readdir?(ctx: RequestContext, args: ReaddirArgs, out: DirFiller<DirEntry>): Promise<void>;
  /** Presence turns on FUSE_DO_READDIRPLUS: the kernel then lists directories with this. */
  readdirplus?(ctx: RequestContext, args: ReaddirArgs, out: DirFiller<DirEntryPlus>): Promise<void>;
  releasedir?(ctx: RequestContext, args: ReleasedirArgs): Promise<void>;
  fsyncdir?(ctx: RequestContext, args: FsyncArgs): Promise<void>;

  statfs?(ctx: RequestContext, args: { ino: number }): Promise<StatFs>;
  setxattr?(ctx: RequestContext, args: SetxattrArgs): Promise<void>;
  /** The whole value; the session answers size probes and ERANGE. Missing name: FsError('ENODATA'). */
  getxattr?(ctx: RequestContext, args: XattrNameArgs): Promise<Buffer>;
  listxattr?(ctx: RequestContext, args: { ino: number }): Promise<string[]>;
  removexattr?(ctx: RequestContext, args: XattrNameArgs): Promise<void>;
  /** access(2) check; only asked without the default_permissions mount option. */
  access?(ctx: RequestContext, args: { ino: number; mask: number }): Promise<void>;
  /** Atomic create+open. Without it the kernel uses mknod then open. */
  create?(ctx: RequestContext, args: CreateArgs): Promise<CreateReply>;

  /** POSIX F_GETLK: the first conflicting lock, or the request's range with type UNLCK. */
  getlk?(ctx: RequestContext, args: LockArgs): Promise<FileLock>;
  /** F_SETLK/F_SETLKW and flock(2); conflict without sleep: throw FsError('EAGAIN'). With
   * getlk, turns on POSIX_LOCKS; alone it turns on FLOCK_LOCKS. */
  setlk?(ctx: RequestContext, args: SetLockArgs): Promise<void>;

  fallocate?(ctx: RequestContext, args: FallocateArgs): Promise<void>;
  /** SEEK_DATA / SEEK_HOLE: the resulting offset; ENXIO past the end. */
  lseek?(ctx: RequestContext, args: LseekArgs): Promise<number>;
  /** Returns bytes copied. */
  copyFileRange?(ctx: RequestContext, args: CopyFileRangeArgs): Promise<number>;
}
