// The inode lock's value block: the attributes of an inode as the last node to hold its
// M lock at EX left them, so a node taking the lock at PR can answer a stat without reading
// the inode block (reference/ocfs2.md §2.3; OCFS2's is the same idea in its own layout).
//
// Layout (64 bytes, little-endian like the on-disk format):
//   0x00 version u8 (INODE_LVB_VERSION; 0 = nothing to trust: read the inode block)
//   0x01 reserved u8, 0x02 reserved u16 (zero)
//   0x04 generation u32 (the inode's, as in the lock's name)
//   0x08 size u64
//   0x10 clusters u32
//   0x14 mode u32, 0x18 uid u32, 0x1C gid u32, 0x20 links u32
//   0x24 rdev u32 (device numbers above 32 bits are not carried: version 0 then)
//   0x28 atime u64, 0x30 ctime u64, 0x38 mtime u64: seconds << 30 | nanoseconds
//        (seconds in [0, 2^34): a time outside that range is not carried either)
//
// Who writes it and when (fs/inode-locks.ts): the node leaving EX, from the inode image it
// holds (the one its changes went into), version 0 when it has none at hand or the inode
// is gone. o2dlm zeroes the value of a resource a dead node held at EX (its journal may
// hold a newer inode), and a zeroed value is version 0. Readers trust it only from the
// grant that gave them the level until they change the inode themselves.
import type { Inode, Timespec } from './format/inode';
import { LVB_BYTES } from '../stackglue/types';

export const INODE_LVB_VERSION = 1;

/** What a value block carries: the fields of a stat. */
export type InodeLvb = Pick<Inode, 'generation' | 'size' | 'clusters' | 'mode' | 'uid' | 'gid' | 'links' | 'rdev' | 'atime' | 'ctime' | 'mtime'>;

const SEC_LIMIT = 2 ** 34;
const NSEC_SHIFT = 30n;

function carries(t: Timespec): boolean {
  return Number.isInteger(t.sec) && t.sec >= 0 && t.sec < SEC_LIMIT && Number.isInteger(t.nsec) && t.nsec >= 0 && t.nsec < 1e9;
}

function packTime(t: Timespec): bigint {
  return (BigInt(t.sec) << NSEC_SHIFT) | BigInt(t.nsec);
}

function unpackTime(v: bigint): Timespec {
  return { sec: Number(v >> NSEC_SHIFT), nsec: Number(v & ((1n << NSEC_SHIFT) - 1n)) };
}

/**
 * Writes `ino`'s attributes into `lvb`; with null (or attributes the layout cannot carry)
 * writes version 0, which makes every reader go to the inode block.
 */
export function encodeInodeLvb(lvb: Buffer, ino: InodeLvb | null): void {
  if (lvb.length !== LVB_BYTES) throw new RangeError(`a lock value block is ${LVB_BYTES} bytes, not ${lvb.length}`);
  lvb.fill(0);
  if (!ino || !fitsLvb(ino)) return;
  lvb.writeUInt8(INODE_LVB_VERSION, 0x00);
  lvb.writeUInt32LE(ino.generation, 0x04);
  lvb.writeBigUInt64LE(BigInt(ino.size), 0x08);
  lvb.writeUInt32LE(ino.clusters, 0x10);
  lvb.writeUInt32LE(ino.mode, 0x14);
  lvb.writeUInt32LE(ino.uid, 0x18);
  lvb.writeUInt32LE(ino.gid, 0x1c);
  lvb.writeUInt32LE(ino.links, 0x20);
  lvb.writeUInt32LE(ino.rdev, 0x24);
  lvb.writeBigUInt64LE(packTime(ino.atime), 0x28);
  lvb.writeBigUInt64LE(packTime(ino.ctime), 0x30);
  lvb.writeBigUInt64LE(packTime(ino.mtime), 0x38);
}

function fitsLvb(ino: InodeLvb): boolean {
  const u32 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  return u32(ino.generation) && Number.isSafeInteger(ino.size) && ino.size >= 0 && u32(ino.clusters) && u32(ino.mode) && u32(ino.uid) && u32(ino.gid) &&
    u32(ino.links) && u32(ino.rdev) && carries(ino.atime) && carries(ino.ctime) && carries(ino.mtime);
}

/** The attributes in `lvb`, or null when it carries none (version 0, or a version we do not know). */
export function decodeInodeLvb(lvb: Buffer): InodeLvb | null {
  if (lvb.length !== LVB_BYTES || lvb.readUInt8(0x00) !== INODE_LVB_VERSION) return null;
  const size = lvb.readBigUInt64LE(0x08);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const atime = unpackTime(lvb.readBigUInt64LE(0x28));
  const ctime = unpackTime(lvb.readBigUInt64LE(0x30));
  const mtime = unpackTime(lvb.readBigUInt64LE(0x38));
  if (![atime, ctime, mtime].every(carries)) return null;
  return {
    generation: lvb.readUInt32LE(0x04),
    size: Number(size),
    clusters: lvb.readUInt32LE(0x10),
    mode: lvb.readUInt32LE(0x14),
    uid: lvb.readUInt32LE(0x18),
    gid: lvb.readUInt32LE(0x1c),
    links: lvb.readUInt32LE(0x20),
    rdev: lvb.readUInt32LE(0x24),
    atime,
    ctime,
    mtime,
  };
}
