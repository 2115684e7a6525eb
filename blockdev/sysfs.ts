// Block-device geometry from sysfs. Node has no ioctl (BLKGETSIZE64, BLKSSZGET) and fstat
// reports size 0 for block devices, so we read what the kernel publishes under
// /sys/dev/block/<major>:<minor>: `size` (always in 512-byte units, whatever the device's
// sector size), `ro`, and `queue/logical_block_size` (a partition has no queue/ of its own:
// it lives in the parent disk's directory).
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export interface DevNumber {
  major: number;
  minor: number;
}

/** Splits a Linux dev_t (stat's `rdev` for a device node, `dev` for a file's filesystem). */
export function decodeDevT(devt: bigint): DevNumber {
  // glibc's gnu_dev_major/minor: the 64-bit encoding keeps the old 8+8-bit layout in the low bits.
  const major = ((devt >> 8n) & 0xfffn) | ((devt >> 32n) & ~0xfffn);
  const minor = (devt & 0xffn) | ((devt >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

export interface BlockGeometry {
  /** The device's directory in sysfs (symlinks resolved). */
  sysfsPath: string;
  sizeBytes: number;
  logicalBlockSizeBytes: number;
  readOnly: boolean;
}

const SYSFS_SECTOR_BYTES = 512;

async function readInteger(file: string): Promise<number> {
  const text = (await fsp.readFile(file, 'utf8')).trim();
  if (!/^\d+$/.test(text)) throw new Error(`${file}: expected an integer, found ${JSON.stringify(text)}`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new Error(`${file}: ${text} is too large`);
  return value;
}

/**
 * Reads the geometry of block device major:minor. Rejects with a plain Error (the caller
 * wraps it in its own BlockDeviceError with the device's path) when sysfs lacks it.
 * `sysfsRoot` exists for tests that build a fake tree.
 */
export async function readBlockGeometry(dev: DevNumber, sysfsRoot = '/sys'): Promise<BlockGeometry> {
  const sysfsPath = await fsp.realpath(path.join(sysfsRoot, 'dev', 'block', `${dev.major}:${dev.minor}`));
  const sectors = await readInteger(path.join(sysfsPath, 'size'));
  let logicalBlockSizeBytes: number;
  try {
    logicalBlockSizeBytes = await readInteger(path.join(sysfsPath, 'queue', 'logical_block_size'));
  } catch {
    logicalBlockSizeBytes = await readInteger(path.join(sysfsPath, '..', 'queue', 'logical_block_size'));
  }
  if (logicalBlockSizeBytes < 512 || (logicalBlockSizeBytes & (logicalBlockSizeBytes - 1)) !== 0) {
    throw new Error(`${sysfsPath}: implausible logical block size ${logicalBlockSizeBytes}`);
  }
  let readOnly = false;
  try {
    readOnly = (await readInteger(path.join(sysfsPath, 'ro'))) !== 0;
  } catch {
    // Older kernels and some virtual devices have no `ro`; opening read-write then tells us.
  }
  const sizeBytes = sectors * SYSFS_SECTOR_BYTES;
  if (!Number.isSafeInteger(sizeBytes)) throw new Error(`${sysfsPath}: size ${sectors} sectors is too large`);
  return { sysfsPath, sizeBytes, logicalBlockSizeBytes, readOnly };
}
