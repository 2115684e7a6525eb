// Typed filesystem errors. Every layer throws FsError with a POSIX errno name; the FUSE
// session maps it to a negative errno in exactly one place (fs/fuse/session.ts).
import { constants } from 'node:os';

export type Errno = keyof typeof constants.errno;

/**
 * FsErrors are answers (ENOENT for a lookup, EEXIST for O_EXCL), thrown on hot paths, so
 * they skip the stack trace, which cost more than the rest of a negative lookup. Set
 * O2FS_ERROR_STACKS=1 to get traces back when debugging.
 */
const FS_ERROR_STACKS = process.env.O2FS_ERROR_STACKS === '1';

export class FsError extends Error {
  readonly errno: Errno;
  constructor(errno: Errno, message?: string) {
    const limit = Error.stackTraceLimit;
    if (!FS_ERROR_STACKS) Error.stackTraceLimit = 0;
    super(message ? `${errno}: ${message}` : errno);
    Error.stackTraceLimit = limit;
    this.name = 'FsError';
    this.errno = errno;
  }
  /** The positive errno number, e.g. 2 for ENOENT. */
  get code(): number {
    return constants.errno[this.errno];
  }
}

/** Metadata that failed its checks on read (signature, block number, checksum, ranges). */
export class CorruptionError extends FsError {
  readonly blkno: number;
  constructor(blkno: number, message: string) {
    super('EIO', `corrupt metadata at block ${blkno}: ${message}`);
    this.name = 'CorruptionError';
    this.blkno = blkno;
  }
}

export function errnoOf(err: unknown): number {
  if (err instanceof FsError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in constants.errno) return constants.errno[code as Errno];
  return constants.errno.EIO;
}
