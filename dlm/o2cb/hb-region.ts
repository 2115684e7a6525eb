// Where a volume's disk-heartbeat region lives. OCFS2's tools hand the kernel a region as
// (device, start, block size, 255 blocks, name = volume UUID); we read the same facts from
// the superblock and the "heartbeat" system file, read-only, through the fs library.
// The heartbeat worker (o2hb-worker.ts) then does raw I/O on exactly those bytes and never
// looks at any other part of the volume.
import { fileURLToPath } from 'node:url';
import { openDevice } from '../../blockdev/open';
import { INODE_FL, MAX_NODES, SYSFILE } from '../../fs/format/constants';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';
import { O2HbError } from './o2hb-errors';

export const HB_REGION_BLOCKS = MAX_NODES;

export interface HbRegion {
  /** A plain path to the file or block device (file:// URLs are turned into paths). */
  devicePath: string;
  /** The volume UUID as 32 upper-case hex digits: the region's name, as in OCFS2. */
  uuid: string;
  /** Byte offset of the block that belongs to node 0. Node n's block is n blocks further. */
  firstBlockOffsetBytes: number;
  /** The volume's block size: every heartbeat block is one filesystem block. */
  blockSizeBytes: number;
  blocks: typeof HB_REGION_BLOCKS;
  /** The volume identity every heartbeat block header carries. */
  fsGeneration: number;
}

function plainPath(spec: string): string {
  if (/^file:\/\//i.test(spec)) return fileURLToPath(spec);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) {
    // The worker does synchronous pread/pwrite on a descriptor of its own; a network device
    // would need its own heartbeat transport.
    throw new O2HbError('EINVAL', `${spec}: disk heartbeat needs a file or block-device path`);
  }
  return spec;
}

/**
 * Reads the heartbeat region of the o2fs volume on `devicePath` (read-only). Rejects with
 * O2HbError('EINVAL') when the heartbeat file is not one contiguous run of 255 blocks.
 */
export async function heartbeatRegionOf(devicePath: string): Promise<HbRegion> {
  const path = plainPath(devicePath);
  const dev = await openDevice(path, { readOnly: true });
  try {
    const vol = await Volume.open(dev, { readOnly: true });
    const bs = vol.geo.blockSize;
    const ino = await new Transaction(vol).getInode(await vol.systemInode(SYSFILE.heartbeat));
    if ((ino.flags & INODE_FL.heartbeat) === 0) {
      throw new O2HbError('EINVAL', `${devicePath}: system file ${SYSFILE.heartbeat} (inode ${ino.blkno}) lacks the heartbeat flag`);
    }
    if (ino.body.kind !== 'extents' || ino.body.list.depth !== 0 || ino.body.list.records.length === 0) {
      throw new O2HbError('EINVAL', `${devicePath}: heartbeat file has no extent list of its own`);
    }
    // mkfs makes one extent; accept several only if they are physically back to back, since
    // the worker reads the whole region with one pread.
    const recs = [...ino.body.list.records].sort((a, b) => a.cpos - b.cpos);
    const first = recs[0].blkno;
    let nextBlkno = first;
    for (const r of recs) {
      if (r.blkno !== nextBlkno) {
        throw new O2HbError('EINVAL', `${devicePath}: heartbeat file is not contiguous (extent at block ${r.blkno}, expected ${nextBlkno})`);
      }
      nextBlkno += r.clusters * vol.geo.blocksPerCluster;
    }
    if (recs[0].cpos !== 0 || nextBlkno - first < HB_REGION_BLOCKS) {
      throw new O2HbError('EINVAL', `${devicePath}: heartbeat file holds ${nextBlkno - first} blocks from offset ${recs[0].cpos}, needs ${HB_REGION_BLOCKS}`);
    }
    const region: HbRegion = {
      devicePath: path,
      uuid: vol.sb.uuid.toString('hex').toUpperCase(),
      firstBlockOffsetBytes: vol.blockOffset(first),
      blockSizeBytes: bs,
      blocks: HB_REGION_BLOCKS,
      fsGeneration: vol.fsGeneration,
    };
    vol.blockOffset(first + HB_REGION_BLOCKS - 1); // asserts the region lies inside the volume
    return region;
  } finally {
    await dev.close();
  }
}
