// Recognises what a device already holds, so mkfs.o2fs refuses to overwrite it without -F:
// an o2fs volume (valid or damaged), or another filesystem or container by its magic
// number. Only the first PROBE_BYTES of the device are read.
import type { BlockDevice } from '../blockdev/types';
import { BLOCK_SIZES, SIG, SUPERBLOCK_BLKNO } from '../fs/format/constants';
import { findPrimarySuper } from '../fs/volume';
import { errorText } from './cli';
import { uuidHex } from './describe';

/** Enough to see btrfs's superblock magic at 65600. */
const PROBE_BYTES = 17 * 4096;

export interface FoundFilesystem {
  /** Short name: "o2fs", "ext4", "xfs", "btrfs", "ocfs2", "swap", "luks". */
  type: string;
  /** For messages: "an ext4 filesystem (label "data")". */
  description: string;
}

function ascii(buf: Buffer, off: number, len: number): string {
  if (off + len > buf.length) return '';
  return buf.toString('latin1', off, off + len);
}

function cString(buf: Buffer, off: number, len: number): string {
  if (off + len > buf.length) return '';
  const raw = buf.subarray(off, off + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? len : end).toString('utf8').trim();
}

function withLabel(what: string, label: string): string {
  return label ? `${what} (label ${JSON.stringify(label)})` : what;
}

/** The first recognisable filesystem on the device, or null when it looks unused. */
export async function probeFilesystem(dev: BlockDevice): Promise<FoundFilesystem | null> {
  const want = Math.ceil(PROBE_BYTES / dev.sectorSize) * dev.sectorSize;
  const len = Math.min(want, Math.floor(dev.sizeBytes / dev.sectorSize) * dev.sectorSize);
  if (len <= 0) return null;
  const buf = await dev.read(0, len);

  for (const bs of BLOCK_SIZES) {
    if (ascii(buf, SUPERBLOCK_BLKNO * bs, 8) !== SIG.super) continue;
    try {
      const { sb } = await findPrimarySuper(dev);
      return { type: 'o2fs', description: `an o2fs volume (label ${JSON.stringify(sb.label)}, UUID ${uuidHex(sb.uuid)}, ${sb.maxSlots} slots)` };
    } catch (err) {
      return { type: 'o2fs', description: `a damaged o2fs volume (${errorText(err)})` };
    }
  }
  if (ascii(buf, 0, 6) === 'LUKS\xba\xbe') return { type: 'luks', description: 'a LUKS encrypted container' };
  if (ascii(buf, 0, 4) === 'XFSB') return { type: 'xfs', description: withLabel('an XFS filesystem', cString(buf, 108, 12)) };
  if (buf.length >= 1082 && buf.readUInt16LE(1080) === 0xef53) {
    const sbOff = 1024;
    const compat = buf.readUInt32LE(sbOff + 0x5c);
    const incompat = buf.readUInt32LE(sbOff + 0x60);
    // extents, 64bit or flex_bg make it ext4; a journal without them, ext3.
    const type = incompat & (0x40 | 0x80 | 0x200) ? 'ext4' : compat & 0x4 ? 'ext3' : 'ext2';
    return { type, description: withLabel(`an ${type} filesystem`, cString(buf, sbOff + 0x78, 16)) };
  }
  if (ascii(buf, 65600, 8) === '_BHRfS_M') return { type: 'btrfs', description: withLabel('a btrfs filesystem', cString(buf, 65536 + 0x12b, 256)) };
  for (const bs of BLOCK_SIZES) {
    if (ascii(buf, 2 * bs, 6) === 'OCFSV2') return { type: 'ocfs2', description: 'an OCFS2 volume' };
  }
  for (const pageSize of [4096, 8192, 16384, 65536]) {
    const magic = ascii(buf, pageSize - 10, 10);
    if (magic === 'SWAPSPACE2' || magic === 'SWAP-SPACE') return { type: 'swap', description: 'a swap area' };
  }
  return null;
}
