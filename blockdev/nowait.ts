// Loader for the nowait native addon (blockdev/native/nowait.c): reads and writes with
// RWF_NOWAIT on the calling thread, done only if they need no waiting. Built by
// scripts/setup.sh (node-gyp); when it is missing or fails to load, every I/O goes to the
// threadpool as before (nowaitError() says why).
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface NoWait {
  /** Bytes read (short: the rest is not cached), or -errno (-EAGAIN: it would block). */
  pread(fd: number, buf: Buffer, offsetBytes: number): number;
  /** Bytes written (may be short), or -errno (-EAGAIN: it would block). */
  pwrite(fd: number, buf: Buffer, offsetBytes: number): number;
}

let loaded: NoWait | null | undefined;
let loadError = '';

function addonPath(): string {
  // dist/blockdev -> repository root, or blockdev when run from the sources.
  for (let dir = __dirname, i = 0; i < 4; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'blockdev/native/build/Release/nowait.node');
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error('blockdev/native/build/Release/nowait.node not built (run scripts/setup.sh)');
}

/** The addon, or null (see nowaitError()) when it is not available or O2FS_NO_NOWAIT=1. */
export function nowait(): NoWait | null {
  if (loaded !== undefined) return loaded;
  if (process.env.O2FS_NO_NOWAIT === '1') {
    loadError = 'disabled by O2FS_NO_NOWAIT=1';
    return (loaded = null);
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require(addonPath()) as NoWait;
  } catch (err) {
    loadError = (err as Error).message;
    loaded = null;
  }
  return loaded;
}

export function nowaitError(): string {
  return loadError;
}
