// The Linux kernel FUSE protocol (include/uapi/linux/fuse.h), as o2fs speaks it: opcodes,
// flag bits and the byte layout of every structure we read or write. Offsets are byte offsets
// inside the structure; all integers are little-endian (x86_64/arm64 hosts). The codecs that
// read and write these layouts live in codec.ts.
//
// Version: this module describes protocol 7.45 (kernel 6.18 offers 7.45). The session answers
// the kernel with min(kernel minor, PROTOCOL_MINOR_MAX) and refuses minors below
// PROTOCOL_MINOR_MIN (7.12 added umask to MKNOD/MKDIR/CREATE; everything older is long gone).
//
// Message framing on /dev/fuse:
//   request  = fuse_in_header (40 bytes) | op-specific struct | names / data | extensions
//              (in_header.len = total bytes; total_extlen*8 bytes of extensions at the end,
//              only sent when SECURITY_CTX / CREATE_SUPP_GROUP are negotiated: we never do)
//   reply    = fuse_out_header (16 bytes) | op-specific payload; one write(2) per reply
//   notify   = fuse_out_header with unique 0 and error = notify code | payload

export const FUSE_KERNEL_VERSION = 7;
/** The newest minor this code implements (include/uapi/linux/fuse.h of Linux 6.18). */
export const PROTOCOL_MINOR_MAX = 45;
/** The oldest kernel minor we accept: 7.12 gives MKNOD/MKDIR/CREATE their umask field. */
export const PROTOCOL_MINOR_MIN = 12;
export const FUSE_ROOT_ID = 1;
/** The kernel rejects a read(2) of /dev/fuse with a buffer smaller than this. */
export const FUSE_MIN_READ_BUFFER_BYTES = 8192;
/**
 * Room in a read buffer beyond the largest payload (max_write, or a 64 KiB xattr value) for
 * the headers and names around it: fuse_in_header + fuse_write_in is 80 bytes, SETXATTR adds
 * at most 8 + 256. The kernel fails requests that do not fit (E2BIG for SETXATTR).
 */
export const REQUEST_HEADER_ROOM_BYTES = 4096;
/** Replies must carry -errno with 0 < errno < 512 (the kernel refuses -ERESTARTSYS and below). */
export const ERRNO_REPLY_MAX = 511;

export const Opcode = {
  LOOKUP: 1,
  FORGET: 2, // no reply
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36, // no reply (except EAGAIN: "not seen yet, send again")
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41, // no reply
  BATCH_FORGET: 42, // no reply
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
  COPY_FILE_RANGE_64: 53, // 7.45: like COPY_FILE_RANGE, reply fuse_copy_file_range_out (u64)
} as const;
export type OpcodeName = keyof typeof Opcode;

const opcodeNames = new Map<number, OpcodeName>(
  (Object.entries(Opcode) as [OpcodeName, number][]).map(([name, code]) => [code, name]),
);
/** 'LOOKUP' for 1, ... ; 'OP_<n>' for opcodes this module does not know. */
export function opcodeName(opcode: number): string {
  return opcodeNames.get(opcode) ?? `OP_${opcode}`;
}

export const NotifyCode = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
  RESEND: 7,
  INC_EPOCH: 8,
  PRUNE: 9,
} as const;

/**
 * INIT flags (fuse_init_in.flags / fuse_init_out.flags; bits 32..63 travel in flags2 when
 * FUSE_INIT_EXT is set). Kept as bigint so the 64-bit set is one value.
 */
export const InitFlag = {
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  INIT_RESERVED: 1n << 31n,
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  PASSTHROUGH: 1n << 37n,
  NO_EXPORT_SUPPORT: 1n << 38n,
  HAS_RESEND: 1n << 39n,
  ALLOW_IDMAP: 1n << 40n,
  OVER_IO_URING: 1n << 41n,
  REQUEST_TIMEOUT: 1n << 42n,
} as const;

/** Names of the bits set in an INIT flag word, for logs and tests. */
export function initFlagNames(flags: bigint): string[] {
  return (Object.entries(InitFlag) as [string, bigint][])
    .filter(([, bit]) => (flags & bit) !== 0n)
    .map(([name]) => name);
}

/** fuse_open_out.open_flags */
export const OpenOutFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  PASSTHROUGH: 1 << 7,
} as const;

/** fuse_setattr_in.valid */
export const SetattrValid = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const;

export const GETATTR_FH = 1 << 0; // fuse_getattr_in.getattr_flags: fh is valid
export const RELEASE_FLUSH = 1 << 0; // fuse_release_in.release_flags
export const RELEASE_FLOCK_UNLOCK = 1 << 1;
export const LK_FLOCK = 1 << 0; // fuse_lk_in.lk_flags: BSD flock, not POSIX
export const WRITE_CACHE = 1 << 0; // fuse_write_in.write_flags: delayed write from page cache
export const WRITE_LOCKOWNER = 1 << 1;
export const WRITE_KILL_SUIDGID = 1 << 2;
export const READ_LOCKOWNER = 1 << 1; // fuse_read_in.read_flags
export const FSYNC_FDATASYNC = 1 << 0;
export const OPEN_KILL_SUIDGID = 1 << 0; // fuse_open_in.open_flags
export const EXPIRE_ONLY = 1 << 0; // fuse_notify_inval_entry_out.flags
/** Low bit of an INTERRUPT's unique: the reply to an interrupt carries it. */
export const INT_REQ_BIT = 1n;

/** struct fuse_file_lock l_type values (Linux asm-generic/fcntl.h). */
export const LockType = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;
/** OFFSET_MAX: the end of a lock that runs to the end of the file. */
export const LOCK_END_MAX = 0x7fff_ffff_ffff_ffffn;

// --- Structure layouts: { size, field offsets } -------------------------------------------
// `size` is the structure's length in bytes; a field that is itself called size is `size_`.

/** struct fuse_in_header */
export const InHeader = {
  size: 40,
  len: 0, // u32 total request length in bytes
  opcode: 4, // u32
  unique: 8, // u64 request id (0 never used by requests)
  nodeid: 16, // u64 inode the request is about
  uid: 24, // u32 caller fsuid
  gid: 28, // u32 caller fsgid
  pid: 32, // u32 caller tgid (0 for kernel-originated requests)
  totalExtlen: 36, // u16 length of extensions in 8-byte units
  padding: 38, // u16
} as const;

/** struct fuse_out_header */
export const OutHeader = {
  size: 16,
  len: 0, // u32 total reply length
  error: 4, // s32 0 or -errno; for notifications the notify code
  unique: 8, // u64 the request's unique (0 for notifications)
} as const;

/** struct fuse_attr */
export const AttrLayout = {
  size: 88,
  ino: 0, size_: 8, blocks: 16, atime: 24, mtime: 32, ctime: 40, // u64 each
  atimensec: 48, mtimensec: 52, ctimensec: 56, // u32 each
  mode: 60, nlink: 64, uid: 68, gid: 72, rdev: 76, blksize: 80, flags: 84, // u32 each
} as const;

/** struct fuse_entry_out: reply to LOOKUP MKNOD MKDIR SYMLINK LINK (and CREATE's first part) */
export const EntryOut = {
  size: 40 + AttrLayout.size, // 128
  nodeid: 0, generation: 8, entryValid: 16, attrValid: 24, // u64 (valid = seconds)
  entryValidNsec: 32, attrValidNsec: 36, // u32
  attr: 40, // struct fuse_attr
} as const;

/** struct fuse_attr_out: reply to GETATTR SETATTR */
export const AttrOut = {
  size: 16 + AttrLayout.size, // 104
  attrValid: 0, // u64 seconds
  attrValidNsec: 8, // u32
  dummy: 12,
  attr: 16,
} as const;

export const ForgetIn = { size: 8, nlookup: 0 } as const;
export const BatchForgetIn = { size: 8, count: 0, dummy: 4 } as const;
export const ForgetOne = { size: 16, nodeid: 0, nlookup: 8 } as const;
export const GetattrIn = { size: 16, getattrFlags: 0, dummy: 4, fh: 8 } as const;

/** struct fuse_setattr_in */
export const SetattrIn = {
  size: 88,
  valid: 0, padding: 4, fh: 8, size_: 16, lockOwner: 24,
  atime: 32, mtime: 40, ctime: 48, // s64 seconds
  atimensec: 56, mtimensec: 60, ctimensec: 64,
  mode: 68, unused4: 72, uid: 76, gid: 80, unused5: 84,
} as const;

export const MknodIn = { size: 16, mode: 0, rdev: 4, umask: 8, padding: 12 } as const; // + name\0
export const MkdirIn = { size: 8, mode: 0, umask: 4 } as const; // + name\0
export const RenameIn = { size: 8, newdir: 0 } as const; // + oldname\0 newname\0
export const Rename2In = { size: 16, newdir: 0, flags: 8, padding: 12 } as const; // + names
export const LinkIn = { size: 8, oldnodeid: 0 } as const; // + newname\0
export const OpenIn = { size: 8, flags: 0, openFlags: 4 } as const;
export const CreateIn = { size: 16, flags: 0, mode: 4, umask: 8, openFlags: 12 } as const; // + name\0
export const OpenOut = { size: 16, fh: 0, openFlags: 8, backingId: 12 } as const;
export const ReleaseIn = { size: 24, fh: 0, flags: 8, releaseFlags: 12, lockOwner: 16 } as const;
export const FlushIn = { size: 24, fh: 0, unused: 8, padding: 12, lockOwner: 16 } as const;
/** struct fuse_read_in: READ READDIR READDIRPLUS */
export const ReadIn = {
  size: 40, fh: 0, offset: 8, size_: 16, readFlags: 20, lockOwner: 24, flags: 32, padding: 36,
} as const;
/** struct fuse_write_in, followed by `size` bytes of data */
export const WriteIn = {
  size: 40, fh: 0, offset: 8, size_: 16, writeFlags: 20, lockOwner: 24, flags: 32, padding: 36,
} as const;
export const WriteOut = { size: 8, size_: 0, padding: 4 } as const;

/** struct fuse_kstatfs (= fuse_statfs_out) */
export const StatfsOut = {
  size: 80,
  blocks: 0, bfree: 8, bavail: 16, files: 24, ffree: 32, // u64
  bsize: 40, namelen: 44, frsize: 48, padding: 52, spare: 56, // u32, spare[6]
} as const;

export const FsyncIn = { size: 16, fh: 0, fsyncFlags: 8, padding: 12 } as const;
/** fuse_setxattr_in is 8 bytes unless FUSE_SETXATTR_EXT is negotiated (we do not). + name\0 value */
export const SetxattrIn = { size: 8, sizeExt: 16, size_: 0, flags: 4, setxattrFlags: 8 } as const;
export const GetxattrIn = { size: 8, size_: 0, padding: 4 } as const; // + name\0 (GETXATTR)
export const GetxattrOut = { size: 8, size_: 0, padding: 4 } as const;

/** struct fuse_file_lock */
export const FileLockLayout = { size: 24, start: 0, end: 8, type: 16, pid: 20 } as const;
/** struct fuse_lk_in */
export const LkIn = { size: 48, fh: 0, owner: 8, lk: 16, lkFlags: 40, padding: 44 } as const;
export const LkOut = { size: 24, lk: 0 } as const;
export const AccessIn = { size: 8, mask: 0, padding: 4 } as const;

/** struct fuse_init_in (7.36+: 64 bytes; older kernels send the first 16) */
export const InitIn = {
  size: 64, sizeCompat: 16,
  major: 0, minor: 4, maxReadahead: 8, flags: 12, flags2: 16, // unused[11] follows
} as const;

/** struct fuse_init_out (64 bytes; 24 bytes for minor < 23) */
export const InitOut = {
  size: 64, sizeCompat22: 24,
  major: 0, minor: 4, maxReadahead: 8, flags: 12,
  maxBackground: 16, congestionThreshold: 18, // u16
  maxWrite: 20, timeGran: 24, // u32
  maxPages: 28, mapAlignment: 30, // u16
  flags2: 32, maxStackDepth: 36, // u32
  requestTimeout: 40, // u16 seconds (7.43), then unused u16[11]
} as const;

export const InterruptIn = { size: 8, unique: 0 } as const;
export const FallocateIn = { size: 32, fh: 0, offset: 8, length: 16, mode: 24, padding: 28 } as const;
export const LseekIn = { size: 24, fh: 0, offset: 8, whence: 16, padding: 20 } as const;
export const LseekOut = { size: 8, offset: 0 } as const;
/** struct fuse_copy_file_range_in (nodeid of the source is in the header) */
export const CopyFileRangeIn = {
  size: 56, fhIn: 0, offIn: 8, nodeidOut: 16, fhOut: 24, offOut: 32, len: 40, flags: 48,
} as const;
export const CopyFileRangeOut = { size: 8, bytesCopied: 0 } as const; // COPY_FILE_RANGE_64 reply

/** struct fuse_dirent: one READDIR record, name follows, record padded to 8 bytes */
export const Dirent = { size: 24, ino: 0, off: 8, namelen: 16, type: 20 } as const;
/** struct fuse_direntplus: fuse_entry_out then fuse_dirent */
export const DirentPlus = { size: EntryOut.size + Dirent.size, entryOut: 0, dirent: EntryOut.size } as const;

export const NotifyInvalInodeOut = { size: 24, ino: 0, off: 8, len: 16 } as const; // off/len s64
export const NotifyInvalEntryOut = { size: 16, parent: 0, namelen: 8, flags: 12 } as const; // + name\0
export const NotifyDeleteOut = { size: 24, parent: 0, child: 8, namelen: 16, padding: 20 } as const;

/** Round a record length up to the 8-byte alignment READDIR records use (FUSE_REC_ALIGN). */
export function recAlign(lengthBytes: number): number {
  return (lengthBytes + 7) & ~7;
}

/** Longest name the kernel will pass or accept (NAME_MAX); xattr values up to 64 KiB. */
export const NAME_MAX_BYTES = 255;
export const XATTR_NAME_MAX_BYTES = 255;
export const XATTR_SIZE_MAX_BYTES = 65536;
