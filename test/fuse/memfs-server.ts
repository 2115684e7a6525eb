// Test fixture: a child process that mounts MemFs through real FUSE and serves it. The test
// process forks this (IPC channel), then touches the mount itself -- never from this process,
// whose event loop must stay free to answer the kernel. Commands arrive over IPC.
//
//   argv[2] = JSON ServerConfig
//   -> {type:'ready', init}                     once INIT is answered
//   -> {type:'event', name, detail}             MemFs events (blocked-open, aborted)
//   -> {type:'reply', id, ok, result | error}   answers to {id, cmd, args}
//   -> {type:'closed', reason}                  the session ended; the process exits 0
import { mountFuse } from '../../fs/fuse/mount';
import { FuseSession } from '../../fs/fuse/session';
import { MemFs } from './memfs';

export interface ServerConfig {
  mountpoint: string;
  noKernelCache?: boolean;
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
  keepCache?: boolean;
  readdirplus?: boolean;
  defaultPermissions?: boolean;
  readers?: number;
  readOnly?: boolean;
  pollAfterReplyUs?: number;
}

export type ServerCommand =
  | { cmd: 'stats' }
  | { cmd: 'writeFileBehind'; path: string; dataBase64: string; blockOnOpen?: boolean }
  | { cmd: 'unlinkBehind'; path: string }
  | { cmd: 'invalAttrsNow'; ino: number }
  | { cmd: 'expireAllNames' }
  | { cmd: 'ino'; path: string }
  | { cmd: 'invalInode'; ino: number; offsetBytes?: number; lengthBytes?: number }
  | { cmd: 'invalEntry'; parent: number; name: string };

function send(message: unknown): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as ServerConfig;
  const memfs = new MemFs({
    ...(config.entryTimeoutMs !== undefined ? { entryTimeoutMs: config.entryTimeoutMs } : {}),
    ...(config.attrTimeoutMs !== undefined ? { attrTimeoutMs: config.attrTimeoutMs } : {}),
    ...(config.keepCache !== undefined ? { keepCache: config.keepCache } : {}),
    ...(config.readdirplus !== undefined ? { readdirplus: config.readdirplus } : {}),
    onEvent: (name, detail) => send({ type: 'event', name, detail }),
  });
  const fd = await mountFuse(config.mountpoint, {
    fsName: 'memfs-test', subtype: 'o2fs',
    ...(config.defaultPermissions ? { defaultPermissions: true } : {}),
    ...(config.readOnly ? { readOnly: true } : {}),
  });
  const session = new FuseSession(fd, memfs, {
    noKernelCache: config.noKernelCache ?? false, ...(config.readers !== undefined ? { readers: config.readers } : {}),
    ...(config.pollAfterReplyUs !== undefined ? { pollAfterReplyUs: config.pollAfterReplyUs } : {}),
  });
  session.start();

  process.on('message', (raw: { id: number } & ServerCommand) => {
    const run = async (): Promise<unknown> => {
      switch (raw.cmd) {
        case 'stats':
          return { memfs: memfs.stats(), session: session.stats, init: { ...session.init, flags: String(session.init?.flags), kernelFlags: String(session.init?.kernelFlags) } };
        case 'writeFileBehind':
          return memfs.writeFileBehind(raw.path, Buffer.from(raw.dataBase64, 'base64'), { blockOnOpen: raw.blockOnOpen ?? false });
        case 'unlinkBehind':
          memfs.unlinkBehind(raw.path);
          return null;
        case 'ino':
          return memfs.resolve(raw.path).ino;
        case 'invalInode':
          return session.notifyInvalInode(raw.ino, raw.offsetBytes ?? 0, raw.lengthBytes ?? 0);
        case 'invalEntry':
          return session.notifyInvalEntry(raw.parent, raw.name);
        case 'invalAttrsNow':
          return session.invalidateAttrsNow(raw.ino);
        case 'expireAllNames':
          return { supported: session.canExpireAllNames, done: session.expireAllNamesNow() };
      }
    };
    run().then(
      (result) => send({ type: 'reply', id: raw.id, ok: true, result }),
      (err: Error) => send({ type: 'reply', id: raw.id, ok: false, error: err.message }),
    );
  });

  const init = await session.ready;
  send({ type: 'ready', init: { protocolMinor: init.protocolMinor, flags: init.flags.toString(), maxWriteBytes: init.maxWriteBytes } });
  await session.closed;
  send({ type: 'closed', reason: session.endReason });
  process.disconnect?.();
}

main().catch((err: Error) => {
  process.stderr.write(`memfs-server: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
  process.disconnect?.();
});
