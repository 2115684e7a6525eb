// Loader for the devpoll native addon (fs/fuse/native/devpoll.c): the event loop's own wait
// for /dev/fuse. Built by scripts/setup.sh (node-gyp); when it is missing or fails to load,
// callers fall back to threadpool reads and say so once in the log.
import { loadNativeAddon, type LoadedAddon } from '../native-addon';

export interface DevPoll {
  setNonBlocking(fd: number): void;
  /** Bytes read, or -errno (-EAGAIN: nothing queued). */
  read(fd: number, buf: Buffer): number;
  watch(fd: number, onReadable: (status: number) => void): object;
  pause(watcher: object): void;
  resume(watcher: object): void;
  unwatch(watcher: object): void;
}

let loaded: LoadedAddon<DevPoll> | undefined;

/** The addon, or null (see devPollError()) when it is not available (or O2FS_NO_DEVPOLL=1). */
export function devPoll(): DevPoll | null {
  loaded ??= loadNativeAddon<DevPoll>(__dirname, 'fs/fuse/native', 'devpoll', 'O2FS_NO_DEVPOLL');
  return loaded.addon;
}

export function devPollError(): string {
  return loaded?.error ?? '';
}
