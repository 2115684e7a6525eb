// Group descriptor codec: one group of a chain allocator (the global cluster bitmap or an
// inode/extent suballocator), with its bitmap.
//
//   0x00 header (O2GROUP1; generation = allocator inode generation)
//   0x20 bits u32 (bits in this group), 0x24 free u32
//   0x28 chain u16 (index in the allocator's chain list), reserved u16, reserved u32
//   0x30 next_group_blkno u64 (0 = end of chain)
//   0x38 parent_blkno u64 (the allocator inode)
//   0x40 bitmap, (block size - 0x40) bytes; bit i is bit (i & 7) of byte (i >> 3)
//
// Suballocator groups are contiguous blocks starting at the descriptor, bit i = block
// (descriptor + i), and bit 0 (the descriptor itself) is always set. Global-bitmap group g
// covers clusters [g * cpg, ...); its descriptor sits in the group's first cluster, except
// group 0's, which sits at superblock.first_group_blkno.
import { CorruptionError } from '../errors';
import { SIG } from './constants';
import { readU64, sealBlock, writeHeader, writeU64 } from './header';

export const GROUP_BITMAP_OFFSET = 0x40;

export interface GroupDesc {
  blkno: number;
  fsGeneration: number;
  generation: number;
  bits: number;
  free: number;
  chain: number;
  nextGroupBlkno: number;
  parentBlkno: number;
  bitmap: Buffer;
}

export function groupBitmapCapacityBits(bs: number): number {
  return (bs - GROUP_BITMAP_OFFSET) * 8;
}

export function encodeGroup(g: GroupDesc, bs: number): Buffer {
  if (g.bits > groupBitmapCapacityBits(bs) || g.bitmap.length !== bs - GROUP_BITMAP_OFFSET) throw new RangeError('group bitmap does not fit');
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.group, fsGeneration: g.fsGeneration, blkno: g.blkno, generation: g.generation });
  buf.writeUInt32LE(g.bits, 0x20);
  buf.writeUInt32LE(g.free, 0x24);
  buf.writeUInt16LE(g.chain, 0x28);
  writeU64(buf, 0x30, g.nextGroupBlkno);
  writeU64(buf, 0x38, g.parentBlkno);
  g.bitmap.copy(buf, GROUP_BITMAP_OFFSET);
  return sealBlock(buf);
}

/** The allocator inode of a group image (fixed when the group is made), without decoding the rest. */
export function groupParentOf(buf: Buffer): number {
  return readU64(buf, 0x38);
}

export function decodeGroup(buf: Buffer): GroupDesc {
  const blkno = readU64(buf, 0x10);
  const g: GroupDesc = {
    blkno,
    fsGeneration: buf.readUInt32LE(0x0c),
    generation: buf.readUInt32LE(0x18),
    bits: buf.readUInt32LE(0x20),
    free: buf.readUInt32LE(0x24),
    chain: buf.readUInt16LE(0x28),
    nextGroupBlkno: readU64(buf, 0x30),
    parentBlkno: groupParentOf(buf),
    bitmap: Buffer.from(buf.subarray(GROUP_BITMAP_OFFSET)),
  };
  if (g.bits === 0 || g.bits > groupBitmapCapacityBits(buf.length)) throw new CorruptionError(blkno, `group has ${g.bits} bits`);
  if (g.free > g.bits) throw new CorruptionError(blkno, `group claims ${g.free} free of ${g.bits} bits`);
  return g;
}

/** A deep copy (the bitmap too): equal to decodeGroup(encodeGroup(g)), without the encode. */
export function cloneGroup(g: GroupDesc): GroupDesc {
  return { ...g, bitmap: Buffer.from(g.bitmap) };
}

/** Points the bitmap of `g` at the bitmap in `image`, its own encoding (see viewInodeOverImage). */
export function viewGroupOverImage(g: GroupDesc, image: Buffer): GroupDesc {
  g.bitmap = image.subarray(GROUP_BITMAP_OFFSET);
  return g;
}

export function testBit(bitmap: Buffer, i: number): boolean {
  return (bitmap[i >> 3] & (1 << (i & 7))) !== 0;
}

export function setBit(bitmap: Buffer, i: number): void {
  bitmap[i >> 3] |= 1 << (i & 7);
}

export function clearBit(bitmap: Buffer, i: number): void {
  bitmap[i >> 3] &= ~(1 << (i & 7));
}

/** Number of set bits among the first `bits` bits. */
export function countSetBits(bitmap: Buffer, bits: number): number {
  let n = 0;
  const full = bits >> 3;
  for (let i = 0; i < full; i++) n += POPCOUNT[bitmap[i]];
  for (let i = full * 8; i < bits; i++) if (testBit(bitmap, i)) n++;
  return n;
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
});
