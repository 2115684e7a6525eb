// Real FUSE: MemFs mounted by a child server (harness.ts), exercised from this process with
// async fs calls and from spawned tools. Covers data I/O with 1 MiB requests, big
// directories, namespace operations, attributes and times, xattrs, statfs and the less
// common file operations (fallocate, SEEK_DATA, copy_file_range).
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { runTool, sleep, startMemfsServer, withTimeout, type MemfsServer } from './harness';
import type { MemFsStats } from './memfs';

const MIB = 1024 * 1024;
const OP_TIMEOUT_MS = 10_000;

function stats(server: MemfsServer): Promise<{ memfs: MemFsStats; session: { byOpcode: Record<string, number>; requestBytesMax: number } }> {
  return server.call({ cmd: 'stats' });
}

t.test('real FUSE mount: data, directories, names, attributes, xattrs, statfs', async (t) => {
  const server = await startMemfsServer(t);
  const mp = server.mountpoint;
  const p = (...parts: string[]): string => path.join(mp, ...parts);
  t.equal(server.init.protocolMinor, 45, 'negotiated protocol 7.45 with this kernel');

  await t.test('1 MiB writes arrive as one WRITE; 3 MiB + tail round-trips', async (t) => {
    const data = randomBytes(3 * MIB + 12345);
    const fh = await fsp.open(p('big.bin'), 'w');
    try {
      // One write(2) of the whole buffer at an aligned offset: the kernel splits it only at max_write.
      const { bytesWritten } = await withTimeout(fh.write(data, 0, data.length, 0), OP_TIMEOUT_MS, 'write');
      t.equal(bytesWritten, data.length);
    } finally {
      await fh.close();
    }
    const s = await stats(server);
    t.equal(s.memfs.writeSizeBytesMax, MIB, 'largest WRITE request carried exactly 1 MiB');
    t.ok(s.memfs.writes <= 5, `3 MiB + tail took ${s.memfs.writes} WRITE requests (<= 4 expected + slack)`);
    const back = await withTimeout(fsp.readFile(p('big.bin')), OP_TIMEOUT_MS, 'read');
    t.equal(back.length, data.length);
    t.ok(back.equals(data), 'content identical');
    t.equal((await fsp.stat(p('big.bin'))).size, data.length);
    // Overwrite in the middle and truncate (SETATTR size).
    await fsp.writeFile(p('small.txt'), 'hello world');
    const h = await fsp.open(p('small.txt'), 'r+');
    await h.write(Buffer.from('HELLO'), 0, 5, 0);
    await h.truncate(8);
    await h.close();
    t.equal(await fsp.readFile(p('small.txt'), 'utf8'), 'HELLO wo');
  });

  await t.test('mkdir and readdir of 1000 entries', async (t) => {
    await fsp.mkdir(p('many'));
    const names = Array.from({ length: 1000 }, (_, i) => `file-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`);
    for (let i = 0; i < names.length; i += 50) {
      await withTimeout(Promise.all(names.slice(i, i + 50).map((n) => fsp.writeFile(p('many', n), n))), OP_TIMEOUT_MS, 'create batch');
    }
    const before = (await stats(server)).memfs.readdirplusCalls;
    const listed = await withTimeout(fsp.readdir(p('many')), OP_TIMEOUT_MS, 'readdir');
    t.equal(listed.length, 1000, 'all 1000 listed');
    t.same([...listed].sort(), [...names].sort(), 'exactly the names created, each once');
    const calls = (await stats(server)).memfs.readdirplusCalls - before;
    t.ok(calls > 2, `listing took ${calls} READDIRPLUS requests: offsets/cookies continue correctly`);
    t.equal(await fsp.readFile(p('many', names[777] ?? ''), 'utf8'), names[777]);
  });

  await t.test('rename, unlink, hard link, open-unlinked file', async (t) => {
    await fsp.mkdir(p('d1'));
    await fsp.mkdir(p('d2'));
    await fsp.writeFile(p('d1', 'a'), 'content-a');
    await fsp.rename(p('d1', 'a'), p('d2', 'b'));
    await t.rejects(fsp.stat(p('d1', 'a')), { code: 'ENOENT' }, 'old name gone');
    t.equal(await fsp.readFile(p('d2', 'b'), 'utf8'), 'content-a', 'new name has the content');
    t.same(await fsp.readdir(p('d1')), []);
    await fsp.writeFile(p('d2', 'c'), 'content-c');
    await fsp.rename(p('d2', 'c'), p('d2', 'b'));
    t.equal(await fsp.readFile(p('d2', 'b'), 'utf8'), 'content-c', 'rename over an existing name replaces it');
    await fsp.link(p('d2', 'b'), p('d1', 'hard'));
    t.equal((await fsp.stat(p('d1', 'hard'))).nlink, 2, 'hard link: nlink 2');
    const fh = await fsp.open(p('d1', 'hard'), 'r');
    await fsp.unlink(p('d1', 'hard'));
    await fsp.unlink(p('d2', 'b'));
    await t.rejects(fsp.stat(p('d2', 'b')), { code: 'ENOENT' });
    const buf = Buffer.alloc(64);
    const { bytesRead } = await fh.read(buf, 0, 64, 0);
    t.equal(buf.subarray(0, bytesRead).toString(), 'content-c', 'an open-unlinked file stays readable');
    await fh.close();
    // The unlinked inode leaves the kernel's cache: its FORGET reaches the filesystem.
    let forgets = 0;
    for (let i = 0; i < 40 && forgets === 0; i++) {
      forgets = (await stats(server)).memfs.forgets;
      if (forgets === 0) await sleep(50);
    }
    t.ok(forgets >= 1, `FORGET/BATCH_FORGET passed to the filesystem (${forgets} forgets)`);
    await t.rejects(fsp.rmdir(p('many')), { code: 'ENOTEMPTY' });
    await fsp.rmdir(p('d1'));
    await t.rejects(fsp.stat(p('d1')), { code: 'ENOENT' });
  });

  await t.test('symlink and readlink', async (t) => {
    await fsp.symlink('../some/where/target.txt', p('lnk'));
    t.equal(await fsp.readlink(p('lnk')), '../some/where/target.txt');
    const st = await fsp.lstat(p('lnk'));
    t.ok(st.isSymbolicLink());
    t.equal(st.size, '../some/where/target.txt'.length);
    await fsp.writeFile(p('real.txt'), 'via link');
    await fsp.symlink('real.txt', p('lnk2'));
    t.equal(await fsp.readFile(p('lnk2'), 'utf8'), 'via link', 'following a symlink');
  });

  await t.test('chmod, and utimes with UTIME_OMIT keeps the other time (ns precision)', async (t) => {
    await fsp.writeFile(p('times.txt'), 'x');
    await fsp.chmod(p('times.txt'), 0o640);
    t.equal((await fsp.stat(p('times.txt'))).mode & 0o7777, 0o640);
    const r1 = await runTool('touch', ['-a', '-d', '@1100000000.5', p('times.txt')]);
    t.equal(r1.code, 0, r1.stderr);
    const r2 = await runTool('touch', ['-m', '-d', '@1000000000.123456789', p('times.txt')]);
    t.equal(r2.code, 0, r2.stderr);
    const st = await fsp.stat(p('times.txt'), { bigint: true });
    t.equal(st.mtimeNs, 1_000_000_000_123_456_789n, 'touch -m set mtime to the nanosecond');
    t.equal(st.atimeNs, 1_100_000_000_500_000_000n, 'touch -m left atime alone (UTIME_OMIT)');
    const r3 = await runTool('touch', ['-a', '-d', '@1200000000', p('times.txt')]);
    t.equal(r3.code, 0, r3.stderr);
    const st2 = await fsp.stat(p('times.txt'), { bigint: true });
    t.equal(st2.atimeNs, 1_200_000_000_000_000_000n, 'touch -a set atime');
    t.equal(st2.mtimeNs, 1_000_000_000_123_456_789n, 'touch -a left mtime alone');
  });

  await t.test('xattrs: set, get (probe and ERANGE paths), list, create flag, remove', async (t) => {
    await fsp.writeFile(p('x.txt'), 'x');
    const script = `
import os, sys, json, errno
p = sys.argv[1]
out = {}
big = bytes(range(256)) * 4
os.setxattr(p, 'user.small', b'v1')
os.setxattr(p, 'user.big', big)
out['small'] = os.getxattr(p, 'user.small').decode()
out['big_ok'] = os.getxattr(p, 'user.big') == big
out['list'] = sorted(os.listxattr(p))
try:
    os.setxattr(p, 'user.small', b'again', os.XATTR_CREATE); out['create'] = 'ok'
except OSError as e:
    out['create'] = errno.errorcode[e.errno]
os.removexattr(p, 'user.small')
try:
    os.getxattr(p, 'user.small'); out['after_remove'] = 'present'
except OSError as e:
    out['after_remove'] = errno.errorcode[e.errno]
print(json.dumps(out))
`;
    const r = await runTool('python3', ['-c', script, p('x.txt')]);
    t.equal(r.code, 0, r.stderr);
    t.same(JSON.parse(r.stdout), {
      small: 'v1', big_ok: true, list: ['user.big', 'user.small'], create: 'EEXIST', after_remove: 'ENODATA',
    });
    const g = await runTool('getfattr', ['--absolute-names', '-n', 'user.big', '-e', 'hex', p('x.txt')]);
    t.equal(g.code, 0, g.stderr);
    t.match(g.stdout, /user\.big=0x000102/, 'getfattr (size probe first) reads the 1 KiB value');
  });

  await t.test('statfs reports what the filesystem says', async (t) => {
    const st = await fsp.statfs(mp);
    t.equal(st.bsize, 4096);
    t.equal(st.blocks, 1_234_567);
    t.equal(st.bfree, 1_000_000);
    t.equal(st.bavail, 999_999);
    t.equal(st.files, 65_536);
  });

  await t.test('fallocate, SEEK_DATA/SEEK_HOLE and copy_file_range reach the filesystem', async (t) => {
    await fsp.writeFile(p('src.bin'), 'abcdefghij');
    await fsp.writeFile(p('dst.bin'), '');
    const script = `
import os, sys, json
d = sys.argv[1]
out = {}
fd = os.open(os.path.join(d, 'alloc.bin'), os.O_CREAT | os.O_RDWR)
os.posix_fallocate(fd, 0, 8192)
out['alloc_size'] = os.fstat(fd).st_size
os.close(fd)
fd = os.open(os.path.join(d, 'src.bin'), os.O_RDONLY)
out['seek_data'] = os.lseek(fd, 3, os.SEEK_DATA)
out['seek_hole'] = os.lseek(fd, 3, os.SEEK_HOLE)
dst = os.open(os.path.join(d, 'dst.bin'), os.O_WRONLY)
out['copied'] = os.copy_file_range(fd, dst, 6, 2, 0)
os.close(fd); os.close(dst)
print(json.dumps(out))
`;
    const r = await runTool('python3', ['-c', script, mp]);
    t.equal(r.code, 0, r.stderr);
    t.same(JSON.parse(r.stdout), { alloc_size: 8192, seek_data: 3, seek_hole: 10, copied: 6 });
    t.equal(await fsp.readFile(p('dst.bin'), 'utf8'), 'cdefgh');
    const s = await stats(server);
    t.ok((s.session.byOpcode.FALLOCATE ?? 0) >= 1, 'FALLOCATE sent');
    t.ok((s.session.byOpcode.LSEEK ?? 0) >= 1, 'LSEEK sent');
    t.ok((s.session.byOpcode.COPY_FILE_RANGE_64 ?? 0) + (s.session.byOpcode.COPY_FILE_RANGE ?? 0) >= 1, 'COPY_FILE_RANGE(_64) sent');
  });

  await t.test('unmount ends the session cleanly: closed resolves and the server exits 0', async (t) => {
    const r = await runTool('umount', ['-i', mp]);
    t.equal(r.code, 0, r.stderr);
    const code = await withTimeout(server.exited, 5000, 'server exit');
    t.equal(code, 0, 'server exited 0');
    t.equal(server.closedReason(), 'unmounted', 'ENODEV on read ended the session');
  });
});

t.test('real FUSE mount: a client asking back to back finds the session polling after its replies', async (t) => {
  for (const pollAfterReplyUs of [undefined, 0]) {
    const server = await startMemfsServer(t, pollAfterReplyUs === undefined ? {} : { pollAfterReplyUs });
    // A client in a tight loop (another process: synchronous lstat of names that do not
    // exist, so every one is a LOOKUP the kernel cannot answer from its cache).
    const loop = `let n = 0; for (let i = 0; i < 2000; i++) { try { require('fs').lstatSync(${JSON.stringify(server.mountpoint)} + '/absent-' + i); } catch (e) { if (e.code === 'ENOENT') n++; } } process.stdout.write(String(n));`;
    const run = await runTool(process.execPath, ['-e', loop], { timeoutMs: OP_TIMEOUT_MS });
    t.equal(run.stdout, '2000', 'every lstat answered ENOENT');
    const s = await server.call<{ session: { pollsFound: number; pollsMissed: number } }>({ cmd: 'stats' });
    if (pollAfterReplyUs === 0) {
      t.same(s.session, { ...s.session, pollsFound: 0, pollsMissed: 0 }, 'replypoll 0: no polling at all');
    } else {
      t.ok(s.session.pollsFound >= 10, `polls found ${s.session.pollsFound} of 2000 back-to-back LOOKUPs (missed ${s.session.pollsMissed})`);
    }
  }
});
