// FileBlockDevice: a BlockDevice over a regular file or a block-device node.
//
// Regular files use ordinary buffered I/O (pread/pwrite through a FileHandle); flush is
// fdatasync. Block devices are opened with O_DIRECT: another host writes the same device, so
// our page cache must never serve a stale block. O_DIRECT needs file offsets and lengths
// aligned to the device's logical block size (our sectorSize is a multiple of it) and memory
// aligned too, so direct I/O goes through page-aligned bounce buffers (aligned-buffers.ts).
// `direct: true` forces the same path on a regular file (ext4 and xfs support it), which is
// how the tests cover it without a shared disk. flush on a block device is fdatasync too: the
// kernel turns it into a cache flush for the device's volatile write cache.
//
// Options and their semantics:
// - readOnly: open O_RDONLY; write rejects with 'EROFS'.
// - create: {sizeBytes}: create a new sparse regular file of that size; an existing path
//   rejects with 'EEXIST'. {sizeBytes, resize: true}: create it, or if a regular file already
//   exists there, set its length to sizeBytes (growing is sparse; shrinking discards the tail).
// - sectorSize: power of two in [512, 65536]; default 512 for buffered files, and for direct
//   I/O the logical block size of the device (or of the disk under the file's filesystem).
//   A size that is not a multiple of sectorSize rounds down.
// - exclusive: on a block device, O_EXCL: the kernel refuses ('EBUSY') if the device is
//   mounted or held exclusively by anyone else on this host. On a regular file it does
//   nothing: Node has no flock/fcntl locks, so nothing stops a second opener. The device's
//   `exclusiveEnforced` says which case applies.
import assert from 'node:assert/strict';
import { InFlight } from './in-flight';
import { constants as fsConstants, promises as fsp, type BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { AlignedBufferPool } from './aligned-buffers';
import { nowait, type NoWait } from './nowait';
import { decodeDevT, readBlockGeometry } from './sysfs';
import { BlockDevice, BlockDeviceError, checkRange, readTarget } from './types';

export interface FileDeviceOptions {
  readOnly?: boolean;
  create?: { sizeBytes: number; resize?: boolean };
  sectorSize?: number;
  /** Bypass the page cache (O_DIRECT). Default: true for block devices, false for files. */
  direct?: boolean;
  exclusive?: boolean;
  /** How long close() waits for in-flight I/O before rejecting with 'EIO'. Default 30 s. */
  closeTimeoutMs?: number;
  /** RWF_NOWAIT I/O on the calling thread (tests pass a fake, or null for none). Default: the addon, if built. */
  noWait?: NoWait | null;
}

const SECTOR_SIZE_MIN = 512;
const SECTOR_SIZE_MAX = 65536;
const DEFAULT_SECTOR_SIZE = 512;
const DEFAULT_CLOSE_TIMEOUT_MS = 30_000;
const CREATE_MODE = 0o644;
/**
 * Largest read or write tried with RWF_NOWAIT on the event loop: a page-cache copy of this
 * much costs less than the two thread wake-ups of the threadpool (tens of microseconds on a
 * VM); bigger copies stay off the event loop.
 */
const NOWAIT_BYTES_MAX = 64 * 1024;
const ERRNO = osConstants.errno;

// Direct I/O bounce buffers per device: 8 x 1 MiB, so at most 8 direct I/O pieces in flight.
const DIRECT_SLOT_BYTES = 1 << 20;
const DIRECT_SLOT_COUNT = 8;

type NodeError = Error & { code?: string };

function errCode(err: unknown): string | undefined {
  return (err as NodeError | null)?.code;
}

/** Maps an error from opening `path` to the BlockDeviceError a caller can act on. */
function openError(path: string, err: unknown, direct: boolean): BlockDeviceError {
  const code = errCode(err);
  const why = (err as Error | null)?.message ?? String(err);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new BlockDeviceError('ENOENT', `${path}: no such file or block device`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new BlockDeviceError('EACCES', `${path}: permission denied`, { cause: err });
    case 'EBUSY':
      return new BlockDeviceError('EBUSY', `${path}: device is in use (mounted or opened exclusively)`, { cause: err });
    case 'EEXIST':
      return new BlockDeviceError('EEXIST', `${path}: already exists (create makes only new files; pass resize: true to reuse it)`, { cause: err });
    case 'EROFS':
      return new BlockDeviceError('EROFS', `${path}: read-only file system or device (open it readOnly)`, { cause: err });
    case 'EISDIR':
      return new BlockDeviceError('EINVAL', `${path}: is a directory, not a file or block device`, { cause: err });
    case 'EINVAL':
      return new BlockDeviceError('EINVAL', direct
        ? `${path}: open with O_DIRECT refused (the filesystem may not support direct I/O): ${why}`
        : `${path}: open refused: ${why}`, { cause: err });
    default:
      return new BlockDeviceError('EIO', `${path}: open failed: ${why}`, { cause: err });
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export class FileBlockDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly sectorSize: number;
  readonly readOnly: boolean;
  readonly kind: 'file' | 'block';
  readonly direct: boolean;
  readonly exclusiveEnforced: boolean;

  private readonly fh: FileHandle;
  private readonly pool: AlignedBufferPool | null;
  private readonly closeTimeoutMs: number;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly inFlight = new InFlight();
  /** RWF_NOWAIT reads and writes on this thread (nowait.ts); null for direct I/O. */
  private readonly noWait: NoWait | null;
  /** The RWF_NOWAIT calls this file refused (EOPNOTSUPP/EINVAL): not tried again. */
  private readonly noWaitRefused = new Set<'pread' | 'pwrite'>();

  /** Use openFileDevice(); the constructor only assembles checked parts. */
  constructor(args: {
    name: string; fh: FileHandle; sizeBytes: number; sectorSize: number; readOnly: boolean;
    kind: 'file' | 'block'; direct: boolean; exclusiveEnforced: boolean; closeTimeoutMs: number; noWait: NoWait | null;
  }) {
    assert(isPowerOfTwo(args.sectorSize) && args.sectorSize >= SECTOR_SIZE_MIN && args.sectorSize <= SECTOR_SIZE_MAX);
    assert(Number.isSafeInteger(args.sizeBytes) && args.sizeBytes >= 0 && args.sizeBytes % args.sectorSize === 0);
    this.name = args.name;
    this.fh = args.fh;
    this.sizeBytes = args.sizeBytes;
    this.sectorSize = args.sectorSize;
    this.readOnly = args.readOnly;
    this.kind = args.kind;
    this.direct = args.direct;
    this.exclusiveEnforced = args.exclusiveEnforced;
    this.closeTimeoutMs = args.closeTimeoutMs;
    this.pool = args.direct ? new AlignedBufferPool(Math.max(DIRECT_SLOT_BYTES, args.sectorSize), DIRECT_SLOT_COUNT) : null;
    // Direct I/O always waits for the device: no page cache to hit.
    this.noWait = args.direct ? null : args.noWait;
  }

  async read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.checkOpen();
    checkRange(this, offsetBytes, lengthBytes);
    const out = readTarget(lengthBytes, into);
    if (lengthBytes === 0) return out;
    await this.inFlight.track(async () => {
      try {
        if (this.pool) await this.readDirect(this.pool, offsetBytes, out);
        else {
          const done = this.tryNoWait('pread', out, offsetBytes);
          if (done < lengthBytes) await this.preadFully(out, done, lengthBytes - done, offsetBytes + done);
        }
      } catch (err) {
        throw this.ioError('read', offsetBytes, lengthBytes, err);
      }
    });
    return out;
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.checkOpen();
    assert(Buffer.isBuffer(data), 'write data must be a Buffer');
    if (this.readOnly) throw new BlockDeviceError('EROFS', `${this.name}: device is open read-only`);
    checkRange(this, offsetBytes, data.length);
    if (data.length === 0) return;
    await this.inFlight.track(async () => {
      try {
        if (this.pool) await this.writeDirect(this.pool, offsetBytes, data);
        else await this.writeBuffered(offsetBytes, data);
      } catch (err) {
        throw this.ioError('write', offsetBytes, data.length, err);
      }
    });
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    await this.inFlight.track(async () => {
      try {
        await this.fh.datasync();
      } catch (err) {
        throw this.ioError('flush', 0, 0, err);
      }
    });
  }

  /**
   * Stops new calls at once ('ECLOSED'), waits for in-flight I/O (at most closeTimeoutMs),
   * then closes the descriptor. Does not flush: call flush() first for durability. Calling
   * it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      const drained = await this.inFlight.drained(this.closeTimeoutMs);
      if (!drained) {
        // The descriptor must outlive the stuck I/O; close it whenever that finishes.
        void this.inFlight.drained().then(() => this.fh.close()).catch(() => undefined);
        throw new BlockDeviceError('EIO', `${this.name}: ${this.inFlight.size} I/O(s) still in flight after ${this.closeTimeoutMs} ms; descriptor will close when they finish`);
      }
      try {
        await this.fh.close();
      } catch (err) {
        throw new BlockDeviceError('EIO', `${this.name}: close failed: ${(err as Error).message}`, { cause: err });
      }
    })();
    return this.closing;
  }

  private checkOpen(): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', `${this.name}: device is closed`);
  }

  private ioError(op: string, offsetBytes: number, lengthBytes: number, err: unknown): BlockDeviceError {
    if (err instanceof BlockDeviceError) return err;
    const code = errCode(err) ?? 'unknown';
    return new BlockDeviceError('EIO', `${this.name}: ${op} at offset ${offsetBytes} length ${lengthBytes} failed: ${code}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }

  // Short transfers are legal for pread/pwrite; loop until done. Each pass moves at least one
  // byte or fails, so the loop is bounded by the length.
  private async preadFully(buf: Buffer, bufOffset: number, lengthBytes: number, positionBytes: number): Promise<void> {
    let done = 0;
    while (done < lengthBytes) {
      const { bytesRead } = await this.fh.read(buf, bufOffset + done, lengthBytes - done, positionBytes + done);
      if (bytesRead === 0) {
        throw new BlockDeviceError('EIO', `${this.name}: unexpected end of data at offset ${positionBytes + done} (was the file truncated underneath?)`);
      }
      done += bytesRead;
    }
  }

  private async pwriteFully(buf: Buffer, bufOffset: number, lengthBytes: number, positionBytes: number): Promise<void> {
    let done = 0;
    while (done < lengthBytes) {
      const { bytesWritten } = await this.fh.write(buf, bufOffset + done, lengthBytes - done, positionBytes + done);
      if (bytesWritten === 0) throw new BlockDeviceError('EIO', `${this.name}: write made no progress at offset ${positionBytes + done}`);
      done += bytesWritten;
    }
  }

  private async writeBuffered(offsetBytes: number, data: Buffer): Promise<void> {
    const done = this.tryNoWait('pwrite', data, offsetBytes);
    if (done < data.length) await this.pwriteFully(data, done, data.length - done, offsetBytes + done);
  }

  /**
   * Does as much of a small read or write as needs no waiting (pages cached, no writeback in
   * the way) at once, on this thread; a bigger copy is better done off the event loop.
   * Returns the bytes done, 0 when the threadpool must do it all.
   */
  private tryNoWait(op: 'pread' | 'pwrite', buf: Buffer, offsetBytes: number): number {
    if (!this.noWait || buf.length > NOWAIT_BYTES_MAX || this.noWaitRefused.has(op)) return 0;
    const n = this.noWait[op](this.fh.fd, buf, offsetBytes);
    if (n === -ERRNO.EOPNOTSUPP || n === -ERRNO.EINVAL) this.noWaitRefused.add(op);
    return Math.max(0, n);
  }

  // Direct I/O: slot-sized pieces, one after another, each through an aligned slot. Piece
  // lengths are multiples of sectorSize because the slot size is.
  private async readDirect(pool: AlignedBufferPool, offsetBytes: number, out: Buffer): Promise<void> {
    for (let done = 0; done < out.length;) {
      const pieceBytes = Math.min(pool.slotBytes, out.length - done);
      const slot = await pool.acquire();
      try {
        await this.preadFully(slot, 0, pieceBytes, offsetBytes + done);
        slot.copy(out, done, 0, pieceBytes);
      } finally {
        pool.release(slot);
      }
      done += pieceBytes;
    }
  }

  private async writeDirect(pool: AlignedBufferPool, offsetBytes: number, data: Buffer): Promise<void> {
    for (let done = 0; done < data.length;) {
      const pieceBytes = Math.min(pool.slotBytes, data.length - done);
      const slot = await pool.acquire();
      try {
        data.copy(slot, 0, done, done + pieceBytes);
        await this.pwriteFully(slot, 0, pieceBytes, offsetBytes + done);
      } finally {
        pool.release(slot);
      }
      done += pieceBytes;
    }
  }
}

async function statOrNull(path: string): Promise<BigIntStats | null> {
  try {
    return await fsp.stat(path, { bigint: true });
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw openError(path, err, false);
  }
}

/** Logical block size of the disk under a regular file's filesystem; 512 when unknown. */
async function backingLogicalBlockSize(st: BigIntStats): Promise<number> {
  try {
    return (await readBlockGeometry(decodeDevT(st.dev))).logicalBlockSizeBytes;
  } catch {
    // tmpfs, overlayfs, btrfs subvolumes ... have no sysfs disk; 512 is the common case and
    // the probe read at open catches it if not.
    return DEFAULT_SECTOR_SIZE;
  }
}

/** Opens (or creates) a file or block device as a BlockDevice. See the options at the top. */
export async function openFileDevice(path: string, opts: FileDeviceOptions = {}): Promise<FileBlockDevice> {
  const readOnly = opts.readOnly ?? false;
  const closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  if (typeof path !== 'string' || path.length === 0) throw new BlockDeviceError('EINVAL', `device path must be a non-empty string`);
  if (opts.sectorSize !== undefined && !(isPowerOfTwo(opts.sectorSize) && opts.sectorSize >= SECTOR_SIZE_MIN && opts.sectorSize <= SECTOR_SIZE_MAX)) {
    throw new BlockDeviceError('EINVAL', `${path}: sectorSize must be a power of two in [${SECTOR_SIZE_MIN}, ${SECTOR_SIZE_MAX}], got ${opts.sectorSize}`);
  }
  if (!(Number.isFinite(closeTimeoutMs) && closeTimeoutMs >= 0)) throw new BlockDeviceError('EINVAL', `${path}: bad closeTimeoutMs ${closeTimeoutMs}`);
  const create = opts.create;
  if (create) {
    if (readOnly) throw new BlockDeviceError('EINVAL', `${path}: create and readOnly exclude each other`);
    const unit = opts.sectorSize ?? DEFAULT_SECTOR_SIZE;
    if (!Number.isSafeInteger(create.sizeBytes) || create.sizeBytes <= 0 || create.sizeBytes % unit !== 0) {
      throw new BlockDeviceError('EINVAL', `${path}: create.sizeBytes must be a positive multiple of ${unit}, got ${create.sizeBytes}`);
    }
  }

  const before = await statOrNull(path);
  if (before === null && !create) throw new BlockDeviceError('ENOENT', `${path}: no such file or block device`);
  if (before !== null && create && !create.resize) {
    throw new BlockDeviceError('EEXIST', `${path}: already exists (create makes only new files; pass resize: true to reuse it)`);
  }
  if (before !== null && !before.isFile() && !before.isBlockDevice()) {
    throw new BlockDeviceError('EINVAL', `${path}: not a regular file or block device`);
  }
  if (before !== null && create && !before.isFile()) {
    throw new BlockDeviceError('EINVAL', `${path}: create/resize applies to regular files only, this is a block device`);
  }
  const isBlock = before !== null && before.isBlockDevice();
  const direct = opts.direct ?? isBlock;
  const creatingNew = before === null;

  let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
  if (direct) flags |= fsConstants.O_DIRECT;
  if (opts.exclusive && isBlock) flags |= fsConstants.O_EXCL;
  if (creatingNew) flags |= fsConstants.O_CREAT | fsConstants.O_EXCL;

  let fh: FileHandle;
  try {
    fh = await fsp.open(path, flags, CREATE_MODE);
  } catch (err) {
    throw openError(path, err, direct);
  }

  // From here on, any failure must close the descriptor (and remove a file we created).
  try {
    const st = await fh.stat({ bigint: true });
    // The path may have been replaced between stat and open; trust only the open descriptor.
    if (st.isBlockDevice() !== isBlock || (!st.isBlockDevice() && !st.isFile())) {
      throw new BlockDeviceError('EINVAL', `${path}: changed type while being opened`);
    }
    let rawSizeBytes: number;
    let logicalBlockBytes: number;
    if (isBlock) {
      let geometry;
      try {
        geometry = await readBlockGeometry(decodeDevT(st.rdev));
      } catch (err) {
        throw new BlockDeviceError('EIO', `${path}: cannot read block device geometry from sysfs: ${(err as Error).message}`, { cause: err });
      }
      // The kernel lets a read-only device be opened for writing and fails the writes later;
      // refuse up front so the caller learns it at open.
      if (geometry.readOnly && !readOnly) {
        throw new BlockDeviceError('EROFS', `${path}: block device is read-only (open it readOnly)`);
      }
      rawSizeBytes = geometry.sizeBytes;
      logicalBlockBytes = geometry.logicalBlockSizeBytes;
    } else {
      if (create) {
        try {
          await fh.truncate(create.sizeBytes);
        } catch (err) {
          throw new BlockDeviceError('EIO', `${path}: cannot set file size to ${create.sizeBytes}: ${(err as Error).message}`, { cause: err });
        }
        rawSizeBytes = create.sizeBytes;
      } else {
        rawSizeBytes = Number(st.size);
      }
      logicalBlockBytes = direct ? await backingLogicalBlockSize(st) : DEFAULT_SECTOR_SIZE;
    }
    const sectorSize = opts.sectorSize ?? Math.max(DEFAULT_SECTOR_SIZE, logicalBlockBytes);
    if (direct && sectorSize % logicalBlockBytes !== 0) {
      throw new BlockDeviceError('EINVAL', `${path}: sectorSize ${sectorSize} is not a multiple of the device's logical block size ${logicalBlockBytes}, required for direct I/O`);
    }
    const sizeBytes = Math.floor(rawSizeBytes / sectorSize) * sectorSize;
    const dev = new FileBlockDevice({
      name: path, fh, sizeBytes, sectorSize, readOnly, kind: isBlock ? 'block' : 'file', direct,
      exclusiveEnforced: Boolean(opts.exclusive) && isBlock, closeTimeoutMs,
      noWait: opts.noWait === undefined ? nowait() : opts.noWait,
    });
    if (direct && sizeBytes >= sectorSize) {
      // Probe now so a filesystem that accepts O_DIRECT at open but rejects our alignment
      // fails here with a clear message, not at the first metadata read.
      try {
        await dev.read(0, sectorSize);
      } catch (err) {
        await dev.close().catch(() => undefined);
        throw new BlockDeviceError(errCode((err as BlockDeviceError).cause) === 'EINVAL' ? 'EINVAL' : 'EIO',
          `${path}: direct I/O probe read with sectorSize ${sectorSize} failed: ${(err as Error).message}`, { cause: err });
      }
    }
    return dev;
  } catch (err) {
    await fh.close().catch(() => undefined);
    if (creatingNew) await fsp.unlink(path).catch(() => undefined);
    throw err instanceof BlockDeviceError ? err : openError(path, err, direct);
  }
}
