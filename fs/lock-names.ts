// Cluster lock names, as OCFS2 forms them (reference/ocfs2.md §2.1): a type character,
// "000000", the block number in 16 hex digits and a generation in 8 hex digits.
//
// Lock types and the order they are taken in (DESIGN.md §4), outermost first:
//   S superblock (slot map: mount, unmount, recovery)
//   R rename (cross-directory directory renames only)
//   J a slot's journal (held EX by the mounted owner; recovery takes a dead slot's)
//   M per inode, in ascending block number whatever their role (parents, children,
//     allocators, orphan directories): an operation takes them as it reads inodes, waits
//     only for one above all it holds, and only tries the others (fs/inode-locks.ts)
//   E extent (range) locks of one inode's data, in ascending range order (fs/inode-locks.ts)
//   W reserved, not taken: OCFS2's rw lock keeps a write(2) whole against other nodes'
//     writes and truncates; here every WRITE request runs under M at EX, or M at PR with
//     its ranges' E at EX, and truncate, fallocate and punch under M at EX, which gives
//     the same exclusion per request. A write(2) bigger than one request (1 MiB) is not
//     whole against another node's: the kernel sends its pieces with nothing marking them
//     as one call, so no lock taken here could span them.
//   O open locks
// Transactions run inside the M scope; they commit before it lets go.
// P (orphan scan) and F (flock) stand apart: taken holding nothing. fs/dlmglue.ts asserts it.
export const LOCK_TYPE = {
  super: 'S',
  meta: 'M',
  rw: 'W',
  open: 'O',
  rename: 'R',
  orphanScan: 'P',
  flock: 'F',
  journal: 'J',
  extent: 'E',
} as const;
export type LockType = (typeof LOCK_TYPE)[keyof typeof LOCK_TYPE];

export function lockName(type: LockType, blkno: number, generation = 0): string {
  if (!Number.isSafeInteger(blkno) || blkno < 0) throw new RangeError(`bad block number ${blkno}`);
  return `${type}000000${blkno.toString(16).padStart(16, '0')}${(generation >>> 0).toString(16).padStart(8, '0')}`;
}

/**
 * An extent lock: range `chunk` (of EXTENT_CHUNK_BYTES) of the inode's data. The chunk
 * takes the six pad digits, so ranges of one inode sort in file order.
 */
export function extentLockName(blkno: number, generation: number, chunk: number): string {
  if (!Number.isSafeInteger(chunk) || chunk < 0 || chunk > 0xffffff) throw new RangeError(`bad extent chunk ${chunk}`);
  return `${LOCK_TYPE.extent}${chunk.toString(16).padStart(6, '0')}${lockName(LOCK_TYPE.extent, blkno, generation).slice(7)}`;
}

export function parseLockName(name: string): { type: string; blkno: number; generation: number; chunk: number } | null {
  const m = /^([A-Z])([0-9a-f]{6})([0-9a-f]{16})([0-9a-f]{8})$/.exec(name);
  if (!m) return null;
  const chunk = parseInt(m[2], 16);
  if (chunk !== 0 && m[1] !== LOCK_TYPE.extent) return null;
  return { type: m[1], blkno: parseInt(m[3], 16), generation: parseInt(m[4], 16), chunk };
}
