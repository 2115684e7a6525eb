// Real FUSE: kernel cache coherence. With long cache timeouts and FOPEN_KEEP_CACHE the kernel
// keeps serving old data and names after MemFs changes behind its back, until the session
// sends FUSE_NOTIFY_INVAL_INODE / FUSE_NOTIFY_INVAL_ENTRY. With noKernelCache the change is
// visible at once (and plain READDIR is used when the fs has no readdirplus).
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { startMemfsServer } from './harness';
import type { MemFsStats } from './memfs';
import { InitFlag } from '../../fs/fuse/protocol';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

t.test('cached data and names stay stale until the session notifies the kernel', async (t) => {
  const server = await startMemfsServer(t, { entryTimeoutMs: 60_000, attrTimeoutMs: 60_000, keepCache: true });
  const mp = server.mountpoint;
  const file = path.join(mp, 'cached.txt');
  const ino = await server.call<number>({ cmd: 'writeFileBehind', path: 'cached.txt', dataBase64: b64('old-content-AAAA') });
  t.equal(await fsp.readFile(file, 'utf8'), 'old-content-AAAA', 'first read fills the page cache');

  await server.call({ cmd: 'writeFileBehind', path: 'cached.txt', dataBase64: b64('new-content-BBBB') });
  t.equal(await fsp.readFile(file, 'utf8'), 'old-content-AAAA', 'same size, cached pages: the kernel does not ask');
  t.equal(await server.call({ cmd: 'invalInode', ino, offsetBytes: 0, lengthBytes: 0 }), true, 'kernel knew the inode');
  t.equal(await fsp.readFile(file, 'utf8'), 'new-content-BBBB', 'after INVAL_INODE the new content is read');

  await server.call({ cmd: 'writeFileBehind', path: 'gone.txt', dataBase64: b64('x') });
  t.equal((await fsp.stat(path.join(mp, 'gone.txt'))).size, 1);
  await server.call({ cmd: 'unlinkBehind', path: 'gone.txt' });
  t.equal((await fsp.stat(path.join(mp, 'gone.txt'))).size, 1, 'cached dentry still resolves the removed name');
  t.equal(await server.call({ cmd: 'invalEntry', parent: 1, name: 'gone.txt' }), true);
  await t.rejects(fsp.stat(path.join(mp, 'gone.txt')), { code: 'ENOENT' }, 'after INVAL_ENTRY the name is gone');

  t.equal(await server.call({ cmd: 'invalInode', ino: 987_654, offsetBytes: 0, lengthBytes: 0 }), false,
    'an inode the kernel never saw: false (ENOENT from the kernel)');
});

t.test('the non-blocking notifications a cluster downconvert uses: attributes now, every name at once', async (t) => {
  const server = await startMemfsServer(t, { entryTimeoutMs: 60_000, attrTimeoutMs: 60_000, keepCache: true });
  const mp = server.mountpoint;
  const file = path.join(mp, 'attrs.txt');
  const ino = await server.call<number>({ cmd: 'writeFileBehind', path: 'attrs.txt', dataBase64: b64('four') });
  t.equal((await fsp.stat(file)).size, 4, 'size cached');
  await server.call({ cmd: 'writeFileBehind', path: 'attrs.txt', dataBase64: b64('ten bytes!') });
  t.equal((await fsp.stat(file)).size, 4, 'cached attributes: the kernel does not ask');
  t.equal(await server.call({ cmd: 'invalAttrsNow', ino }), true, 'kernel knew the inode');
  t.equal((await fsp.stat(file)).size, 10, 'after INVAL_INODE (attributes only) the new size is read');
  t.equal(await server.call({ cmd: 'invalAttrsNow', ino: 987_654 }), false, 'an inode the kernel never saw: false');

  await server.call({ cmd: 'writeFileBehind', path: 'name.txt', dataBase64: b64('x') });
  await server.call({ cmd: 'writeFileBehind', path: 'other.txt', dataBase64: b64('y') });
  t.equal((await fsp.stat(path.join(mp, 'name.txt'))).size, 1);
  t.equal((await fsp.stat(path.join(mp, 'other.txt'))).size, 1);
  await server.call({ cmd: 'unlinkBehind', path: 'name.txt' });
  t.equal((await fsp.stat(path.join(mp, 'name.txt'))).size, 1, 'cached dentry still resolves the removed name');
  const r = await server.call<{ supported: boolean; done: boolean }>({ cmd: 'expireAllNames' });
  if (server.init.protocolMinor < 44) {
    t.same(r, { supported: false, done: false }, `kernel protocol 7.${server.init.protocolMinor} has no FUSE_NOTIFY_INC_EPOCH: reported unsupported`);
    return;
  }
  t.same(r, { supported: true, done: true }, 'FUSE_NOTIFY_INC_EPOCH accepted');
  await t.rejects(fsp.stat(path.join(mp, 'name.txt')), { code: 'ENOENT' }, 'after INC_EPOCH the removed name is looked up again: gone');
  t.equal((await fsp.stat(path.join(mp, 'other.txt'))).size, 1, 'a name that still exists resolves again');
});

t.test('noKernelCache: changes behind the kernel are visible at once; plain READDIR without readdirplus', async (t) => {
  const server = await startMemfsServer(t, { noKernelCache: true, readdirplus: false, entryTimeoutMs: 60_000, attrTimeoutMs: 60_000, keepCache: true });
  const mp = server.mountpoint;
  const flags = BigInt(server.init.flags);
  t.equal(flags & InitFlag.DO_READDIRPLUS, 0n, 'no readdirplus method: DO_READDIRPLUS not negotiated');
  const file = path.join(mp, 'live.txt');
  await server.call({ cmd: 'writeFileBehind', path: 'live.txt', dataBase64: b64('one-1111') });
  t.equal(await fsp.readFile(file, 'utf8'), 'one-1111');
  await server.call({ cmd: 'writeFileBehind', path: 'live.txt', dataBase64: b64('two-2222') });
  t.equal(await fsp.readFile(file, 'utf8'), 'two-2222', 'direct I/O: no stale pages');
  await server.call({ cmd: 'unlinkBehind', path: 'live.txt' });
  await t.rejects(fsp.stat(file), { code: 'ENOENT' }, 'zero entry timeout: no stale name');

  await fsp.mkdir(path.join(mp, 'dir'));
  const names = Array.from({ length: 300 }, (_, i) => `n${i}`);
  await Promise.all(names.map((n) => fsp.writeFile(path.join(mp, 'dir', n), n)));
  const listed = await fsp.readdir(path.join(mp, 'dir'));
  t.same([...listed].sort(), [...names].sort());
  const s = (await server.call<{ memfs: MemFsStats }>({ cmd: 'stats' })).memfs;
  t.ok(s.readdirCalls >= 2, `listed with ${s.readdirCalls} READDIR requests`);
  t.equal(s.readdirplusCalls, 0, 'no READDIRPLUS');
});
