// Extent block codec: an interior or leaf node of an extent tree below the inode's root.
//
//   0x00 header (O2EXTBLK) + suballoc triple
//   0x30 owner_blkno u64 (the inode whose tree this is)
//   0x38 reserved u64
//   0x40 extent list (extent-list.ts) filling the rest of the block
import { SIG } from './constants';
import { ExtentList, decodeExtentList, encodeExtentList, extentListCapacity } from './extent-list';
import { Suballoc, readSuballoc, readU64, sealBlock, writeHeader, writeSuballoc, writeU64 } from './header';

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
  writeHeader(buf, { signature: SIG.extentBlock, fsGeneration: eb.fsGeneration, blkno: eb.blkno, generation: 0 });
  writeSuballoc(buf, eb.suballoc);
  writeU64(buf, 0x30, eb.ownerBlkno);
  encodeExtentList(buf, LIST_OFFSET, eb.list);
  return sealBlock(buf);
}

export function decodeExtentBlock(buf: Buffer): ExtentBlock {
  const blkno = readU64(buf, 0x10);
  return {
    blkno,
    fsGeneration: buf.readUInt32LE(0x0c),
    suballoc: readSuballoc(buf),
    ownerBlkno: readU64(buf, 0x30),
    list: decodeExtentList(buf, LIST_OFFSET, buf.length - LIST_OFFSET, blkno),
  };
}
