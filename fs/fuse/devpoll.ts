// Loader for the devpoll native addon (fs/fuse/native/devpoll.c): the event loop's own wait
// for /dev/fuse. Built by scripts/setup.sh (node-gyp); when it is missing or fails to load,
// callers fall back to threadpool reads and say so once in the log.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface DevPoll {
  setNonBlocking(fd: number): void;
  /** Bytes read, or -errno (-EAGAIN: nothing queued). */
  read(fd: number, buf: Buffer): number;
  watch(fd: number, onReadable: (status: number) => void): object;
  pause(watcher: object): void;
  resume(watcher: object): void;
  unwatch(watcher: object): void;
}

let loaded: DevPoll | null | undefined;
let loadError = '';

function addonPath(): string {
  // dist/fs/fuse -> repository root, or fs/fuse when run from the sources.
  for (let dir = __dirname, i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'fs/fuse/native/build/Release/devpoll.node');
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error('fs/fuse/native/build/Release/devpoll.node not built (run scripts/setup.sh)');
}

/** The addon, or null (see devPollError()) when it is not available. */
export function devPoll(): DevPoll | null {
  if (loaded !== undefined) return loaded;
  if (process.env.O2FS_NO_DEVPOLL === '1') {
    loadError = 'disabled by O2FS_NO_DEVPOLL=1';
    return (loaded = null);
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require(addonPath()) as DevPoll;
  } catch (err) {
    loadError = (err as Error).message;
    loaded = null;
  }
  return loaded;
}

export function devPollError(): string {
  return loadError;
}
