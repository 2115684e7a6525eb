// The BlockDevice interface: the one seam between o2fs and its storage (DESIGN.md §2).
// Implementations: file.ts (regular file or block-device path), later iscsi and mirror.
//
// Contract every implementation keeps (and test/blockdev/suite.ts checks):
// - offsets and lengths are byte counts, multiples of `sectorSize`, inside [0, sizeBytes);
//   anything else rejects with BlockDeviceError code 'EINVAL' (misaligned) or 'ERANGE'.
// - read resolves with a Buffer of exactly `length` bytes: `into` when the caller passes one
//   (exactly `length` bytes long; the data lands there, nothing else is allocated), else a
//   new one; write resolves once the device has the data (not necessarily durable) and holds
//   no reference to the caller's buffer after that; flush resolves once every write that
//   resolved before flush was called is durable.
// - concurrent requests are allowed; their order is the caller's business.
// - a read-only device rejects write with code 'EROFS' (flush and read still work).
// - after close every call rejects with code 'ECLOSED'.

// EEXIST: create asked for a path that already exists. EROFS: write to a read-only device.
export type BlockDeviceErrorCode = 'EINVAL' | 'ERANGE' | 'EIO' | 'ECLOSED' | 'ENOENT' | 'EACCES' | 'EBUSY' | 'EEXIST' | 'EROFS';

export class BlockDeviceError extends Error {
  readonly code: BlockDeviceErrorCode;
  /** `options.cause` keeps the underlying error (e.g. a Node fs error) for diagnosis. */
  constructor(code: BlockDeviceErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'BlockDeviceError';
    this.code = code;
  }
}

export interface BlockDevice {
  /** Human-readable identity: a path or URL. */
  readonly name: string;
  readonly sizeBytes: number;
  /** Smallest unit of I/O: offsets and lengths must be multiples of it. */
  readonly sectorSize: number;
  readonly readOnly: boolean;
  read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer>;
  write(offsetBytes: number, data: Buffer): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The buffer a read fills: the caller's `into` (checked against the length) or a new one. */
export function readTarget(lengthBytes: number, into: Buffer | undefined): Buffer {
  if (into === undefined) return Buffer.allocUnsafe(lengthBytes);
  if (into.length !== lengthBytes) throw new BlockDeviceError('EINVAL', `read into a ${into.length}-byte buffer of ${lengthBytes} bytes`);
  return into;
}

/** Checks an I/O request against the device's geometry; throws BlockDeviceError. */
export function checkRange(dev: BlockDevice, offsetBytes: number, lengthBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0) {
    throw new BlockDeviceError('EINVAL', `${dev.name}: bad I/O range offset=${offsetBytes} length=${lengthBytes}`);
  }
  if (offsetBytes % dev.sectorSize !== 0 || lengthBytes % dev.sectorSize !== 0) {
    throw new BlockDeviceError('EINVAL', `${dev.name}: I/O not aligned to ${dev.sectorSize}-byte sectors (offset=${offsetBytes} length=${lengthBytes})`);
  }
  if (offsetBytes + lengthBytes > dev.sizeBytes) {
    throw new BlockDeviceError('ERANGE', `${dev.name}: I/O beyond end of device (offset=${offsetBytes} length=${lengthBytes} size=${dev.sizeBytes})`);
  }
}
