// Extent block codec: an interior or leaf node of an extent tree below the inode's root.
//
//   0x00 header (O2EXTBLK) + suballoc triple
//   0x30 owner_blkno u64 (the inode whose tree this is)
//   0x38 reserved u64
//   0x40 extent list (extent-list.ts) filling the rest of the block
import { SIG } from './constants';
import { ExtentList, cloneExtentList, decodeExtentList, encodeExtentList, extentListCapacity } from './extent-list';
import { Suballoc, readOwnedHeader, sealBlock, writeOwnedHeader } from './header';

const LIST_OFFSET = 0x40;

export interface ExtentBlock {
  blkno: number;
  fsGeneration: number;
  suballoc: Suballoc;
  ownerBlkno: number;
  list: ExtentList;
}

export function extentBlockCapacity(bs: number): number {
  return extentListCapacity(bs - LIST_OFFSET);
}

export function encodeExtentBlock(eb: ExtentBlock, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeOwnedHeader(buf, SIG.extentBlock, eb);
  encodeExtentList(buf, LIST_OFFSET, eb.list);
  return sealBlock(buf);
}

export function decodeExtentBlock(buf: Buffer): ExtentBlock {
  const owned = readOwnedHeader(buf);
  const blkno = owned.blkno;
  return {
    ...owned,
    list: decodeExtentList(buf, LIST_OFFSET, buf.length - LIST_OFFSET, blkno),
  };
}

/** A deep copy: equal to decodeExtentBlock(encodeExtentBlock(eb)), without the encode. */
export function cloneExtentBlock(eb: ExtentBlock): ExtentBlock {
  return { blkno: eb.blkno, fsGeneration: eb.fsGeneration, suballoc: { ...eb.suballoc }, ownerBlkno: eb.ownerBlkno, list: cloneExtentList(eb.list) };
}
