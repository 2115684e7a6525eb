// Superblock codec (block SUPERBLOCK_BLKNO, and backups at BACKUP_SUPER_OFFSETS).
//
//   0x00 header (signature O2FSSUPR, generation = 0)
//   0x20 rev_major u16, rev_minor u16
//   0x24 blocksize_bits u8, clustersize_bits u8, reserved u16
//   0x28 total_blocks u64
//   0x30 total_clusters u32
//   0x34 max_slots u16, reserved u16
//   0x38 feature_compat u32, 0x3C feature_incompat u32, 0x40 feature_ro_compat u32
//   0x44 state u32 (SB_STATE)
//   0x48 root_blkno u64
//   0x50 system_dir_blkno u64
//   0x58 first_group_blkno u64 (descriptor of global-bitmap group 0)
//   0x60 uuid[16]
//   0x70 label[64] (UTF-8, NUL padded)
//   0xB0 stack[8] ("local" | "o2cb" | "user", NUL padded)
//   0xB8 cluster_name[16] (NUL padded)
//   0xC8 lock_proto_major u8, lock_proto_minor u8, errors_policy u8, reserved u8
//   0xCC dir_hash_seed u32
//   0xD0 mkfs_time u64, 0xD8 last_mount_time u64, 0xE0 last_check_time u64 (seconds)
//   0xE8 mount_count u32
//   0xEC xattr_inline_bytes u16, backup_count u16
//   0xF0 ... zero
import { CorruptionError } from '../errors';
import {
  ERRORS_POLICY, ErrorsPolicy, FORMAT_MAJOR, SIG, STACKS, StackLabel, BLOCK_SIZES,
  MIN_CLUSTER_SIZE, MAX_CLUSTER_SIZE, MAX_SLOTS, SUPPORTED_INCOMPAT,
} from './constants';
import { readU64, sealBlock, verifyBlock, writeHeader, writeU64 } from './header';

export interface Superblock {
  fsGeneration: number;
  revMajor: number;
  revMinor: number;
  blockSizeBits: number;
  clusterSizeBits: number;
  totalBlocks: number;
  totalClusters: number;
  maxSlots: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  state: number;
  rootBlkno: number;
  systemDirBlkno: number;
  firstGroupBlkno: number;
  uuid: Buffer;
  label: string;
  stack: StackLabel;
  clusterName: string;
  lockProtoMajor: number;
  lockProtoMinor: number;
  errorsPolicy: ErrorsPolicy;
  dirHashSeed: number;
  mkfsTimeSec: number;
  lastMountTimeSec: number;
  lastCheckTimeSec: number;
  mountCount: number;
  xattrInlineBytes: number;
  backupCount: number;
}

export function encodeSuperblock(sb: Superblock, blkno: number): Buffer {
  const bs = 1 << sb.blockSizeBits;
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.super, fsGeneration: sb.fsGeneration, blkno, generation: 0 });
  buf.writeUInt16LE(sb.revMajor, 0x20);
  buf.writeUInt16LE(sb.revMinor, 0x22);
  buf.writeUInt8(sb.blockSizeBits, 0x24);
  buf.writeUInt8(sb.clusterSizeBits, 0x25);
  writeU64(buf, 0x28, sb.totalBlocks);
  buf.writeUInt32LE(sb.totalClusters, 0x30);
  buf.writeUInt16LE(sb.maxSlots, 0x34);
  buf.writeUInt32LE(sb.featureCompat, 0x38);
  buf.writeUInt32LE(sb.featureIncompat, 0x3c);
  buf.writeUInt32LE(sb.featureRoCompat, 0x40);
  buf.writeUInt32LE(sb.state, 0x44);
  writeU64(buf, 0x48, sb.rootBlkno);
  writeU64(buf, 0x50, sb.systemDirBlkno);
  writeU64(buf, 0x58, sb.firstGroupBlkno);
  if (sb.uuid.length !== 16) throw new RangeError('uuid must be 16 bytes');
  sb.uuid.copy(buf, 0x60);
  writeFixedString(buf, 0x70, 64, sb.label, 'label');
  writeFixedString(buf, 0xb0, 8, sb.stack, 'stack');
  writeFixedString(buf, 0xb8, 16, sb.clusterName, 'cluster name');
  buf.writeUInt8(sb.lockProtoMajor, 0xc8);
  buf.writeUInt8(sb.lockProtoMinor, 0xc9);
  buf.writeUInt8(ERRORS_POLICY.indexOf(sb.errorsPolicy), 0xca);
  buf.writeUInt32LE(sb.dirHashSeed >>> 0, 0xcc);
  writeU64(buf, 0xd0, sb.mkfsTimeSec);
  writeU64(buf, 0xd8, sb.lastMountTimeSec);
  writeU64(buf, 0xe0, sb.lastCheckTimeSec);
  buf.writeUInt32LE(sb.mountCount >>> 0, 0xe8);
  buf.writeUInt16LE(sb.xattrInlineBytes, 0xec);
  buf.writeUInt16LE(sb.backupCount, 0xee);
  return sealBlock(buf);
}

/** Decodes without verification (see readSuperblockBuffer for the checked path). */
export function decodeSuperblock(buf: Buffer): Superblock {
  const stackRaw = readFixedString(buf, 0xb0, 8);
  const errIdx = buf.readUInt8(0xca);
  return {
    fsGeneration: buf.readUInt32LE(0x0c),
    revMajor: buf.readUInt16LE(0x20),
    revMinor: buf.readUInt16LE(0x22),
    blockSizeBits: buf.readUInt8(0x24),
    clusterSizeBits: buf.readUInt8(0x25),
    totalBlocks: readU64(buf, 0x28),
    totalClusters: buf.readUInt32LE(0x30),
    maxSlots: buf.readUInt16LE(0x34),
    featureCompat: buf.readUInt32LE(0x38),
    featureIncompat: buf.readUInt32LE(0x3c),
    featureRoCompat: buf.readUInt32LE(0x40),
    state: buf.readUInt32LE(0x44),
    rootBlkno: readU64(buf, 0x48),
    systemDirBlkno: readU64(buf, 0x50),
    firstGroupBlkno: readU64(buf, 0x58),
    uuid: Buffer.from(buf.subarray(0x60, 0x70)),
    label: readFixedString(buf, 0x70, 64),
    stack: stackRaw as StackLabel,
    clusterName: readFixedString(buf, 0xb8, 16),
    lockProtoMajor: buf.readUInt8(0xc8),
    lockProtoMinor: buf.readUInt8(0xc9),
    errorsPolicy: ERRORS_POLICY[errIdx] ?? ('invalid' as ErrorsPolicy),
    dirHashSeed: buf.readUInt32LE(0xcc),
    mkfsTimeSec: readU64(buf, 0xd0),
    lastMountTimeSec: readU64(buf, 0xd8),
    lastCheckTimeSec: readU64(buf, 0xe0),
    mountCount: buf.readUInt32LE(0xe8),
    xattrInlineBytes: buf.readUInt16LE(0xec),
    backupCount: buf.readUInt16LE(0xee),
  };
}

/**
 * Verifies a superblock image found at `blkno` (block size `bs`) and checks that its
 * geometry is self-consistent and within this implementation's limits.
 */
export function checkSuperblock(buf: Buffer, blkno: number, bs: number): Superblock {
  const fsGen = buf.readUInt32LE(0x0c);
  verifyBlock(buf, blkno, SIG.super, fsGen);
  const sb = decodeSuperblock(buf);
  const fail = (why: string): never => {
    throw new CorruptionError(blkno, `superblock: ${why}`);
  };
  if (1 << sb.blockSizeBits !== bs || !(BLOCK_SIZES as readonly number[]).includes(bs)) fail(`block size bits ${sb.blockSizeBits} do not match ${bs}`);
  const cs = 2 ** sb.clusterSizeBits;
  if (cs < MIN_CLUSTER_SIZE || cs > MAX_CLUSTER_SIZE || cs < bs) fail(`bad cluster size 2^${sb.clusterSizeBits}`);
  if (sb.revMajor !== FORMAT_MAJOR) fail(`format revision ${sb.revMajor}.${sb.revMinor} is not supported (this o2fs reads ${FORMAT_MAJOR}.x)`);
  if (sb.maxSlots < 1 || sb.maxSlots > MAX_SLOTS) fail(`slot count ${sb.maxSlots} out of range 1..${MAX_SLOTS}`);
  if (sb.totalClusters * (cs / bs) !== sb.totalBlocks) fail(`total blocks ${sb.totalBlocks} != clusters ${sb.totalClusters} x ${cs / bs}`);
  for (const [name, b] of [['root', sb.rootBlkno], ['system dir', sb.systemDirBlkno], ['first group', sb.firstGroupBlkno]] as const) {
    if (b <= blkno && blkno === 2) fail(`${name} block ${b} inside the reserved area`);
    if (b >= sb.totalBlocks) fail(`${name} block ${b} beyond the volume (${sb.totalBlocks} blocks)`);
  }
  if (!(STACKS as readonly string[]).includes(sb.stack)) fail(`unknown cluster stack ${JSON.stringify(sb.stack)}`);
  if (!(ERRORS_POLICY as readonly string[]).includes(sb.errorsPolicy)) fail('bad errors policy');
  if (sb.xattrInlineBytes >= bs / 2) fail(`inline xattr area ${sb.xattrInlineBytes} too large`);
  return sb;
}

/** Unsupported incompat features, as a hex mask (0 = all supported). */
export function unsupportedIncompat(sb: Superblock): number {
  return sb.featureIncompat & ~SUPPORTED_INCOMPAT;
}

function writeFixedString(buf: Buffer, off: number, size: number, s: string, what: string): void {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > size) throw new RangeError(`${what} is longer than ${size} bytes`);
  bytes.copy(buf, off);
}

function readFixedString(buf: Buffer, off: number, size: number): string {
  const raw = buf.subarray(off, off + size);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? size : end).toString('utf8');
}
