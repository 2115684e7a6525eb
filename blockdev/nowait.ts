// Loader for the nowait native addon (blockdev/native/nowait.c): reads and writes with
// RWF_NOWAIT on the calling thread, done only if they need no waiting. When it is missing
// or fails to load (or O2FS_NO_NOWAIT=1), every I/O goes to the threadpool as before
// (nowaitError() says why).
import { loadNativeAddon, type LoadedAddon } from '../fs/native-addon';

export interface NoWait {
  /** Bytes read (short: the rest is not cached), or -errno (-EAGAIN: it would block). */
  pread(fd: number, buf: Buffer, offsetBytes: number): number;
  /** Bytes written (may be short), or -errno (-EAGAIN: it would block). */
  pwrite(fd: number, buf: Buffer, offsetBytes: number): number;
}

let loaded: LoadedAddon<NoWait> | undefined;

/** The addon, or null (see nowaitError()) when it is not available. */
export function nowait(): NoWait | null {
  loaded ??= loadNativeAddon<NoWait>(__dirname, 'blockdev/native', 'nowait', 'O2FS_NO_NOWAIT');
  return loaded.addon;
}

export function nowaitError(): string {
  return loaded?.error ?? '';
}
