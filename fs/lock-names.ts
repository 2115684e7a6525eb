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
//   W (not used yet: M covers file data too)
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
} as const;
export type LockType = (typeof LOCK_TYPE)[keyof typeof LOCK_TYPE];

export function lockName(type: LockType, blkno: number, generation = 0): string {
  if (!Number.isSafeInteger(blkno) || blkno < 0) throw new RangeError(`bad block number ${blkno}`);
  return `${type}000000${blkno.toString(16).padStart(16, '0')}${(generation >>> 0).toString(16).padStart(8, '0')}`;
}

export function parseLockName(name: string): { type: string; blkno: number; generation: number } | null {
  const m = /^([A-Z])000000([0-9a-f]{16})([0-9a-f]{8})$/.exec(name);
  if (!m) return null;
  return { type: m[1], blkno: parseInt(m[2], 16), generation: parseInt(m[3], 16) };
}
