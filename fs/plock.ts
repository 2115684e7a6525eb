// POSIX (fcntl) record locks for cluster mounts (issue 6 item 5: OCFS2 keeps them node-local
// on o2cb; o2fs makes them cluster-wide). The table of one inode's record locks lives ON THE
// INODE, in the hidden xattr `trusted.o2fs.plocks`, and is read and changed under the inode's
// M lock like any metadata: every node sees the same table, and a change is one journaled
// transaction. Local mounts leave record locks to the kernel (no table is ever written).
//
// An entry belongs to one lock owner of one mount: (slot, the slot's mount generation, the
// kernel's lock owner). Entries of a mount that is gone (its slot free or reused with another
// generation: the node unmounted or died) are dead: they conflict with nothing and are dropped
// at the next change of that table. A process's locks go when it closes any descriptor of
// the file (the kernel's FLUSH carries its lock owner), as POSIX says.
//
// Value layout (little-endian): u8 version (1), u8 reserved, u16 count, then `count` entries
// of 40 bytes: u16 slot, u8 type (0 read, 1 write), u8 reserved, u32 mount generation,
// u64 owner, u64 start, u64 end (inclusive; 2^63-1 = to the end of any file), u32 pid,
// u32 reserved.
import { FsError } from './errors';

export const PLOCK_XATTR = 'trusted.o2fs.plocks';

const VERSION = 1;
const HEADER_BYTES = 4;
const ENTRY_BYTES = 40;
/** Keeps the value well inside one xattr block. */
export const PLOCKS_MAX = 64;

export type PlockType = 'read' | 'write';

/** Who holds a lock: one lock owner of one mount. */
export interface PlockOwner {
  slot: number;
  generation: number;
  owner: bigint;
}

export interface Plock extends PlockOwner {
  type: PlockType;
  start: bigint;
  /** Inclusive. */
  end: bigint;
  pid: number;
}

export function sameOwner(a: PlockOwner, b: PlockOwner): boolean {
  return a.slot === b.slot && a.generation === b.generation && a.owner === b.owner;
}

function overlaps(a: { start: bigint; end: bigint }, b: { start: bigint; end: bigint }): boolean {
  return a.start <= b.end && b.start <= a.end;
}

export function decodePlocks(buf: Buffer): Plock[] {
  if (buf.length < HEADER_BYTES || buf[0] !== VERSION) throw new FsError('EIO', `record-lock table: bad header (${buf.length} bytes, version ${buf[0]})`);
  const count = buf.readUInt16LE(2);
  if (buf.length !== HEADER_BYTES + count * ENTRY_BYTES || count > PLOCKS_MAX) throw new FsError('EIO', `record-lock table: ${buf.length} bytes for ${count} entries`);
  const out: Plock[] = [];
  for (let i = 0; i < count; i++) {
    const p = HEADER_BYTES + i * ENTRY_BYTES;
    const type = buf[p + 2];
    if (type > 1) throw new FsError('EIO', `record-lock table: entry ${i} has type ${type}`);
    const start = buf.readBigUInt64LE(p + 16);
    const end = buf.readBigUInt64LE(p + 24);
    if (start > end) throw new FsError('EIO', `record-lock table: entry ${i} ends before it starts`);
    out.push({
      slot: buf.readUInt16LE(p), type: type === 1 ? 'write' : 'read', generation: buf.readUInt32LE(p + 4),
      owner: buf.readBigUInt64LE(p + 8), start, end, pid: buf.readUInt32LE(p + 32),
    });
  }
  return out;
}

export function encodePlocks(list: readonly Plock[]): Buffer {
  if (list.length > PLOCKS_MAX) throw new FsError('ENOLCK', `more than ${PLOCKS_MAX} record locks on one file`);
  const buf = Buffer.alloc(HEADER_BYTES + list.length * ENTRY_BYTES);
  buf[0] = VERSION;
  buf.writeUInt16LE(list.length, 2);
  list.forEach((l, i) => {
    const p = HEADER_BYTES + i * ENTRY_BYTES;
    buf.writeUInt16LE(l.slot, p);
    buf[p + 2] = l.type === 'write' ? 1 : 0;
    buf.writeUInt32LE(l.generation, p + 4);
    buf.writeBigUInt64LE(l.owner, p + 8);
    buf.writeBigUInt64LE(l.start, p + 16);
    buf.writeBigUInt64LE(l.end, p + 24);
    buf.writeUInt32LE(l.pid >>> 0, p + 32);
  });
  return buf;
}

/**
 * The first live lock of another owner that a `type` lock on [start, end] by `me` would
 * conflict with (two read locks never do), or null.
 */
export function findConflict(list: readonly Plock[], me: PlockOwner, want: { type: PlockType; start: bigint; end: bigint }, live: (o: PlockOwner) => boolean): Plock | null {
  for (const l of list) {
    if (sameOwner(l, me) || !overlaps(l, want) || (l.type === 'read' && want.type === 'read')) continue;
    if (live(l)) return l;
  }
  return null;
}

/**
 * `me`'s locks after F_SETLK of `type` (or unlock, null) on [start, end], POSIX-style: what
 * `me` held in the range is replaced (split at its edges), and touching or overlapping
 * ranges of the same type merge. Other owners' entries are kept as they are, except dead
 * ones, which go.
 */
export function applyPlock(list: readonly Plock[], me: PlockOwner, type: PlockType | null, start: bigint, end: bigint, pid: number, live: (o: PlockOwner) => boolean): Plock[] {
  if (start > end) throw new Error('assertion: lock range ends before it starts');
  const others = list.filter((l) => !sameOwner(l, me) && live(l));
  const mine: Plock[] = [];
  for (const l of list) {
    if (!sameOwner(l, me)) continue;
    if (!overlaps(l, { start, end })) {
      mine.push(l);
      continue;
    }
    if (l.start < start) mine.push({ ...l, end: start - 1n });
    if (l.end > end) mine.push({ ...l, start: end + 1n });
  }
  if (type !== null) mine.push({ ...me, type, start, end, pid });
  // Merge my ranges of one type that overlap or touch.
  mine.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const merged: Plock[] = [];
  for (const l of mine) {
    const last = merged[merged.length - 1];
    if (last && last.type === l.type && l.start <= last.end + 1n) {
      if (l.end > last.end) last.end = l.end;
      if (l.type === type && l.start <= end && l.end >= start) last.pid = pid;
    } else merged.push({ ...l });
  }
  return [...others, ...merged];
}
