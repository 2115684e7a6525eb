// On-disk constants of o2fs. fs/FORMAT.md is the prose spec; the numbers live here only.

export const FORMAT_MAJOR = 1;
export const FORMAT_MINOR = 0;

/**
 * Locking protocol the filesystem speaks to its cluster stack (stackglue negotiates; one
 * major per domain). 2: inode (M) locks carry a value block (fs/inode-lvb.ts), which a
 * node of major 1 would leave stale when it gives up EX.
 */
export const LOCK_PROTO_MAJOR = 2;
export const LOCK_PROTO_MINOR = 0;

export const BLOCK_SIZES = [512, 1024, 2048, 4096] as const;
export const DEFAULT_BLOCK_SIZE = 4096;
export const MIN_CLUSTER_SIZE = 4096;
export const MAX_CLUSTER_SIZE = 1 << 20;
export const SUPERBLOCK_BLKNO = 2;
export const MAX_SLOTS = 255;
/** Node numbers 0..254; the heartbeat area has one block per node number. */
export const MAX_NODES = 255;
export const MAX_NAME_BYTES = 255;
export const MAX_LINKS = 0x7fffffff;
export const MIN_JOURNAL_BYTES = 4 << 20;
/** Backup superblocks: the first MAX_BACKUP_SUPERS of these byte offsets inside the volume. */
export const BACKUP_SUPER_OFFSETS = [64 << 20, 256 << 20, 2 ** 30, 2 ** 32, 2 ** 34, 2 ** 36, 2 ** 38, 2 ** 40];
export const MAX_BACKUP_SUPERS = 6;
/** Suballocator (inode/extent) groups are about this big, capped by one group bitmap. */
export const SUBALLOC_GROUP_BYTES = 4 << 20;
/** A leaf extent record counts at most this many clusters (u16 field). */
export const MAX_LEAF_CLUSTERS = 0xffff;
/** Slot number of the global inode allocator in suballoc_slot fields. */
export const GLOBAL_SLOT = 0xffff;
export const NO_SLOT = 0xffff;

/** 8-byte ASCII signatures at offset 0 of every metadata block. */
export const SIG = {
  super: 'O2FSSUPR',
  inode: 'O2INODE1',
  extentBlock: 'O2EXTBLK',
  group: 'O2GROUP1',
  dirLeaf: 'O2DIRLF1',
  xattrBlock: 'O2XATTR1',
  slotMap: 'O2SLOTMP',
  heartbeat: 'O2HBEAT1',
  journalSuper: 'O2JRNLSB',
  journalDescriptor: 'O2JDESC1',
  journalCommit: 'O2JCOMMT',
  journalRevoke: 'O2JREVOK',
} as const;
export type Signature = (typeof SIG)[keyof typeof SIG];

export const FEATURE_COMPAT = {
  backupSuper: 0x1,
} as const;
export const FEATURE_INCOMPAT = {
  sparse: 0x10,
  inlineData: 0x40,
  xattr: 0x200,
  indexedDirs: 0x400,
  clusterInfo: 0x4000,
} as const;
export const FEATURE_RO_COMPAT = {
  unwritten: 0x1,
} as const;
export const SUPPORTED_COMPAT = FEATURE_COMPAT.backupSuper;
export const SUPPORTED_INCOMPAT =
  FEATURE_INCOMPAT.sparse | FEATURE_INCOMPAT.inlineData | FEATURE_INCOMPAT.xattr | FEATURE_INCOMPAT.indexedDirs | FEATURE_INCOMPAT.clusterInfo;
export const SUPPORTED_RO_COMPAT = FEATURE_RO_COMPAT.unwritten;

/** Superblock state bits. */
export const SB_STATE = {
  errorsSeen: 0x1,
} as const;

export const ERRORS_POLICY = ['remount-ro', 'continue', 'panic'] as const;
export type ErrorsPolicy = (typeof ERRORS_POLICY)[number];

export const STACKS = ['local', 'o2cb', 'user'] as const;
export type StackLabel = (typeof STACKS)[number];

/** Inode i_flags. */
export const INODE_FL = {
  valid: 0x1,
  orphaned: 0x4,
  system: 0x10,
  localAlloc: 0x40,
  bitmap: 0x80,
  journal: 0x100,
  heartbeat: 0x200,
  chain: 0x400,
  dealloc: 0x800,
  slotMap: 0x1000,
} as const;

/** Inode i_dyn_features. */
export const DYN = {
  inlineData: 0x1,
  hasXattr: 0x2,
  inlineXattr: 0x4,
  indexedDir: 0x8,
} as const;

/** Journal inode id1 flags. */
export const JOURNAL_FL = {
  dirty: 0x1,
} as const;

/** Leaf extent record flags. */
export const EXTENT_FL = {
  unwritten: 0x1,
} as const;

/** Directory entry file types (as in ext2/OCFS2 and the d_type values of readdir). */
export const FT = {
  unknown: 0,
  reg: 1,
  dir: 2,
  chr: 3,
  blk: 4,
  fifo: 5,
  sock: 6,
  lnk: 7,
} as const;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export function fileTypeOfMode(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFREG: return FT.reg;
    case S_IFDIR: return FT.dir;
    case S_IFCHR: return FT.chr;
    case S_IFBLK: return FT.blk;
    case S_IFIFO: return FT.fifo;
    case S_IFSOCK: return FT.sock;
    case S_IFLNK: return FT.lnk;
    default: return FT.unknown;
  }
}

/** System file names; per-slot ones take a ":NNNN" suffix (slotFileName). */
export const SYSFILE = {
  globalBitmap: 'global_bitmap',
  globalInodeAlloc: 'global_inode_alloc',
  slotMap: 'slot_map',
  heartbeat: 'heartbeat',
  inodeAlloc: 'inode_alloc',
  extentAlloc: 'extent_alloc',
  localAlloc: 'local_alloc',
  truncateLog: 'truncate_log',
  journal: 'journal',
  orphanDir: 'orphan_dir',
} as const;
/** An orphan's entry name in its slot's orphan directory: its block number, 16 hex digits. */
export function orphanName(blkno: number): Buffer {
  return Buffer.from(blkno.toString(16).padStart(16, '0'));
}

export const PER_SLOT_FILES = [SYSFILE.inodeAlloc, SYSFILE.extentAlloc, SYSFILE.localAlloc, SYSFILE.truncateLog, SYSFILE.journal, SYSFILE.orphanDir] as const;
export type PerSlotFile = (typeof PER_SLOT_FILES)[number];

/** Kinds of system file, as stored in the inode's system_file_id (kind << 16 | slot). */
export const SYSFILE_KINDS = [
  'systemDir', SYSFILE.globalBitmap, SYSFILE.globalInodeAlloc, SYSFILE.slotMap, SYSFILE.heartbeat,
  SYSFILE.inodeAlloc, SYSFILE.extentAlloc, SYSFILE.localAlloc, SYSFILE.truncateLog, SYSFILE.journal, SYSFILE.orphanDir,
] as const;

export function sysFileId(kind: (typeof SYSFILE_KINDS)[number], slot: number = NO_SLOT): number {
  return ((SYSFILE_KINDS.indexOf(kind) + 1) << 16) | slot;
}

/** The system-dir name of a system file from its id, or null for an unknown id. */
export function sysFileNameOfId(id: number): string | null {
  const kind = SYSFILE_KINDS[(id >>> 16) - 1];
  const slot = id & 0xffff;
  if (!kind || kind === 'systemDir') return null;
  if ((PER_SLOT_FILES as readonly string[]).includes(kind)) return slot === NO_SLOT ? null : slotFileName(kind as PerSlotFile, slot);
  return slot === NO_SLOT ? kind : null;
}

export function slotFileName(name: PerSlotFile, slot: number): string {
  return `${name}:${String(slot).padStart(4, '0')}`;
}

export const LOST_AND_FOUND = 'lost+found';
