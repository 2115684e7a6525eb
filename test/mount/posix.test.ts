// POSIX behaviour of a real o2fs mount, driven from processes other than the one serving
// it: every operation and its error cases, as root and as an unprivileged user, then a
// clean unmount and a clean fsck.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsckClean, mountFresh, py, run, tempDir } from './harness';

const NOBODY = 65534;
const dir = tempDir(t, 'o2fs-posix-');

/** Python prelude: check(name, fn, errno_name) records what happened. */
const PRELUDE = `
import os, errno, json, stat, ctypes, mmap, fcntl, struct, sys
R = {}
def expect(name, fn, err):
    try:
        fn(); R[name] = 'no error'
    except OSError as e:
        R[name] = errno.errorcode.get(e.errno, str(e.errno))
    if R[name] != err: R[name] = R[name] + ' (expected ' + err + ')'
    else: R[name] = 'ok'
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    r = libc.renameat2(-100, a.encode(), -100, b.encode(), flags)
    if r != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
`;

t.test('operations and their errors', async (t) => {
  const m = await mountFresh(t, dir, { options: 'allow_other' });
  const r = py(PRELUDE + `
os.mkdir('a'); os.mkdir('a/b'); open('a/b/f', 'w').write('x' * 10000)
expect('rmdir non-empty', lambda: os.rmdir('a'), 'ENOTEMPTY')
expect('mkdir existing', lambda: os.mkdir('a'), 'EEXIST')
expect('create excl existing', lambda: os.open('a/b/f', os.O_CREAT | os.O_EXCL | os.O_WRONLY), 'EEXIST')
expect('rename into own subtree', lambda: os.rename('a', 'a/b/c'), 'EINVAL')
expect('unlink a directory', lambda: os.unlink('a'), 'EISDIR')
expect('rmdir a file', lambda: os.rmdir('a/b/f'), 'ENOTDIR')
expect('path through a file', lambda: os.stat('a/b/f/x'), 'ENOTDIR')
expect('name too long', lambda: open('x' * 256, 'w'), 'ENAMETOOLONG')
expect('missing', lambda: os.stat('nope'), 'ENOENT')
expect('rename missing', lambda: os.rename('nope', 'nope2'), 'ENOENT')
expect('readlink of a file', lambda: os.readlink('a/b/f'), 'EINVAL')
os.mkdir('dd'); open('ff', 'w').close()
expect('rename dir over file', lambda: os.rename('dd', 'ff'), 'ENOTDIR')
open('plain', 'w').close()
expect('rename file over dir', lambda: os.rename('plain', 'a'), 'EISDIR')
os.mkdir('e'); os.mkdir('full'); open('full/x', 'w').close()
expect('rename dir over non-empty dir', lambda: os.rename('e', 'full'), 'ENOTEMPTY')
os.rename('e', 'a/b/moved'); R['rename dir over'] = sorted(os.listdir('a/b'))
# renameat2
open('e1', 'w').write('1'); open('e2', 'w').write('2')
renameat2('e1', 'e2', 2); R['exchange'] = open('e1').read() + open('e2').read()
expect('noreplace', lambda: renameat2('e1', 'e2', 1), 'EEXIST')
expect('exchange missing', lambda: renameat2('e1', 'nope', 2), 'ENOENT')
# hard links, symlinks
os.link('e1', 'e1-link'); R['nlink'] = os.stat('e1').st_nlink
expect('link a directory', lambda: os.link('a', 'a-link'), 'EPERM')
os.symlink('a/b/f', 'sym'); R['readlink'] = os.readlink('sym'); R['through symlink'] = len(open('sym').read())
long_target = 'y/' * 1000 + 'z'; os.symlink(long_target, 'longsym'); R['long symlink'] = os.readlink('longsym') == long_target
# special files
os.mkfifo('fifo'); R['fifo'] = stat.S_ISFIFO(os.lstat('fifo').st_mode)
os.mknod('chr', stat.S_IFCHR | 0o600, os.makedev(1, 3)); st = os.lstat('chr'); R['chr'] = [stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
os.mknod('blk', stat.S_IFBLK | 0o600, os.makedev(8, 1)); R['blk'] = stat.S_ISBLK(os.lstat('blk').st_mode)
import socket; s = socket.socket(socket.AF_UNIX); s.bind('sock'); R['sock'] = stat.S_ISSOCK(os.lstat('sock').st_mode); s.close()
# times: utimensat with UTIME_OMIT keeps the other time; UTIME_NOW sets now
os.utime('plain', ns=(1_000_000_001, 2_000_000_002)); st = os.stat('plain'); R['utimes'] = [st.st_atime_ns, st.st_mtime_ns]
os.system('touch -m -d @3 plain'); st = os.stat('plain'); R['touch -m keeps atime'] = [st.st_atime_ns, st.st_mtime_ns]
before = os.stat('plain').st_ctime_ns; os.chmod('plain', 0o600); R['chmod moves ctime'] = os.stat('plain').st_ctime_ns > before
before = os.stat('a').st_mtime_ns; open('a/new', 'w').close(); R['create moves dir mtime'] = os.stat('a').st_mtime_ns > before
# sizes, sparse files and files beyond 4 GiB
fd = os.open('big', os.O_CREAT | os.O_RDWR); os.pwrite(fd, b'end', 5 * 1024**3)
st = os.fstat(fd); R['big'] = [st.st_size, st.st_blocks <= 16]
R['seek'] = [os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE)]
expect('seek data past end', lambda: os.lseek(fd, 6 * 1024**3, os.SEEK_DATA), 'ENXIO')
R['read at 5G'] = os.pread(fd, 3, 5 * 1024**3).decode(); R['hole reads zero'] = os.pread(fd, 4, 4096) == b'\\0' * 4
os.ftruncate(fd, 100); R['after shrink'] = os.fstat(fd).st_size
os.ftruncate(fd, 10000); R['regrown tail is zero'] = os.pread(fd, 100, 100) == b'\\0' * 100
os.close(fd)
# O_TRUNC and O_APPEND
open('t', 'w').write('hello world'); open('t', 'w').write('hi'); R['O_TRUNC'] = open('t').read()
with open('t', 'a') as f: f.write('!')
R['O_APPEND'] = open('t').read()
# fallocate: allocate, keep-size, punch hole, zero range
fd = os.open('fa', os.O_CREAT | os.O_RDWR); os.write(fd, b'A' * 65536)
os.posix_fallocate(fd, 0, 1 << 20); R['fallocate size'] = os.fstat(fd).st_size
R['fallocated reads zero'] = os.pread(fd, 8, 700000) == b'\\0' * 8 and os.pread(fd, 4, 0) == b'AAAA'
os.close(fd)
R['punch'] = os.system('fallocate -p -o 4096 -l 8192 fa') == 0
data = open('fa', 'rb').read(); R['punched'] = [data[4095:4097].decode('latin1'), data[4096:12288] == b'\\0' * 8192, data[12288:12290].decode('latin1')]
R['zero range'] = os.system('fallocate -z -o 100 -l 50 fa') == 0
data = open('fa', 'rb').read(); R['zeroed'] = [data[99:100].decode('latin1'), data[100:150] == b'\\0' * 50, data[150:151].decode('latin1')]
R['keep size'] = os.system('fallocate -n -o 0 -l 4194304 fa') == 0 and os.stat('fa').st_size == 1 << 20
# xattrs
os.setxattr('plain', 'user.k', b'v'); R['xattr'] = [os.getxattr('plain', 'user.k').decode(), os.listxattr('plain')]
expect('xattr missing', lambda: os.getxattr('plain', 'user.none'), 'ENODATA')
expect('xattr create existing', lambda: os.setxattr('plain', 'user.k', b'w', os.XATTR_CREATE), 'EEXIST')
expect('xattr replace missing', lambda: os.setxattr('plain', 'user.z', b'w', os.XATTR_REPLACE), 'ENODATA')
expect('xattr too big', lambda: os.setxattr('plain', 'user.huge', b'x' * 65537), 'E2BIG')
os.setxattr('plain', 'user.big', b'b' * 65536); R['xattr 64k'] = len(os.getxattr('plain', 'user.big'))
buf = ctypes.create_string_buffer(2)
n = libc.getxattr(b'plain', b'user.big', buf, 2); R['xattr ERANGE'] = [n, errno.errorcode.get(ctypes.get_errno())]
os.removexattr('plain', 'user.k'); expect('xattr removed', lambda: os.getxattr('plain', 'user.k'), 'ENODATA')
# an unlinked open file stays readable until the last close
open('gone', 'w').write('still here'); fd = os.open('gone', os.O_RDWR); os.unlink('gone')
os.pwrite(fd, b'!', 10); R['unlinked open file'] = os.pread(fd, 100, 0).decode(); os.close(fd)
open('victim', 'w').write('old'); fd = os.open('victim', os.O_RDONLY); open('new', 'w').write('new'); os.rename('new', 'victim')
R['renamed-over open file'] = [os.read(fd, 10).decode(), open('victim').read()]; os.close(fd)
# mmap shared and private
open('mm', 'wb').write(b'\\0' * 8192)
with open('mm', 'r+b') as f:
    mm = mmap.mmap(f.fileno(), 8192); mm[0:5] = b'hello'; mm.flush(); mm.close()
R['mmap shared'] = open('mm', 'rb').read(5).decode()
with open('mm', 'r+b') as f:
    mm = mmap.mmap(f.fileno(), 8192, flags=mmap.MAP_PRIVATE); mm[0:5] = b'xxxxx'; mm.close()
R['mmap private'] = open('mm', 'rb').read(5).decode()
# locks (node-local)
fd = os.open('plain', os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX)
R['fcntl held elsewhere'] = os.system('python3 -c "import fcntl,os,sys; fd=os.open(\\'plain\\',os.O_RDWR)\\ntry:\\n fcntl.lockf(fd, fcntl.LOCK_EX|fcntl.LOCK_NB); sys.exit(0)\\nexcept OSError: sys.exit(3)"') >> 8
fcntl.lockf(fd, fcntl.LOCK_UN); fcntl.flock(fd, fcntl.LOCK_EX)
R['flock held elsewhere'] = os.system('flock -n plain true') >> 8
os.close(fd)
sv = os.statvfs('.'); R['statfs'] = [sv.f_bsize, sv.f_blocks > 0, 0 < sv.f_bfree <= sv.f_blocks, sv.f_namemax]
print(json.dumps(R))
`, { cwd: m.mp }) as Record<string, unknown>;
  for (const [k, v] of Object.entries(r)) if (typeof v === 'string' && (v === 'ok' || v.includes('expected'))) t.equal(v, 'ok', k);
  t.same(r['rename dir over'], ['f', 'moved']);
  t.equal(r.exchange, '21');
  t.equal(r.nlink, 2);
  t.equal(r.readlink, 'a/b/f');
  t.equal(r['through symlink'], 10000);
  t.equal(r['long symlink'], true);
  t.equal(r.fifo, true);
  t.same(r.chr, [true, 1, 3]);
  t.equal(r.blk, true);
  t.equal(r.sock, true);
  t.same(r.utimes, [1000000001, 2000000002]);
  t.same(r['touch -m keeps atime'], [1000000001, 3000000000]);
  t.equal(r['chmod moves ctime'], true);
  t.equal(r['create moves dir mtime'], true);
  t.same(r.big, [5 * 1024 ** 3 + 3, true]);
  t.same(r.seek, [5 * 1024 ** 3, 0]);
  t.equal(r['read at 5G'], 'end');
  t.equal(r['hole reads zero'], true);
  t.equal(r['after shrink'], 100);
  t.equal(r['regrown tail is zero'], true);
  t.equal(r.O_TRUNC, 'hi');
  t.equal(r.O_APPEND, 'hi!');
  t.equal(r['fallocate size'], 1 << 20);
  t.equal(r['fallocated reads zero'], true);
  t.equal(r.punch, true);
  t.same(r.punched, ['A\u0000', true, 'AA'], 'punched range reads zeros, edges keep data');
  t.equal(r['zero range'], true);
  t.same(r.zeroed, ['A', true, 'A'], 'zeroed range reads zeros, edges keep data');
  t.equal(r['keep size'], true);
  t.same(r.xattr, ['v', ['user.k']]);
  t.equal(r['xattr 64k'], 65536);
  t.same(r['xattr ERANGE'], [-1, 'ERANGE']);
  t.equal(r['unlinked open file'], 'still here!');
  t.same(r['renamed-over open file'], ['old', 'new']);
  t.equal(r['mmap shared'], 'hello');
  t.equal(r['mmap private'], 'hello');
  t.equal(r['fcntl held elsewhere'], 3);
  t.equal(r['flock held elsewhere'], 1);
  t.match(r.statfs, [4096, true, true, 255]);
  const u = m.umount();
  t.equal(u.status, 0, u.err);
  const f = fsckClean(m.img);
  t.equal(f.status, 0, f.out);
});

t.test('permissions as an unprivileged user', async (t) => {
  const m = await mountFresh(t, dir, { options: 'allow_other' });
  py(PRELUDE + `
os.mkdir('private', 0o700); open('private/secret', 'w').write('s')
os.mkdir('sticky'); os.chmod('sticky', 0o1777); os.mkdir('shared'); os.chmod('shared', 0o777)
os.mkdir('sgid'); os.chown('sgid', 0, 4242); os.chmod('sgid', 0o2777)
open('root-file', 'w').write('r'); os.chmod('root-file', 0o644)
open('suid', 'w').write('x'); os.chmod('suid', 0o4777)
for n, mode in (('sgid-x', 0o2777), ('sgid-nox', 0o2767), ('suid-trunc', 0o4777), ('suid-cap', 0o4777), ('suid-root', 0o4777), ('suid-chown', 0o4755)):
    open(n, 'w').write('x'); os.chmod(n, mode)
os.setxattr('suid-cap', 'security.capability', bytes.fromhex('0000000200000000000000000000000000000000'))
with open('suid-root', 'a') as f: f.write('root writes keep the bit')
os.chown('suid-chown', 0, 4242)
open('sticky/roots', 'w').close(); os.chmod('sticky/roots', 0o666)
print('{}')`, { cwd: m.mp });
  const rootView = py(PRELUDE + `
R['root write keeps suid'] = bool(os.stat('suid-root').st_mode & stat.S_ISUID)
R['chown clears suid'] = bool(os.stat('suid-chown').st_mode & stat.S_ISUID)
print(json.dumps(R))`, { cwd: m.mp }) as Record<string, unknown>;
  t.equal(rootView['root write keeps suid'], true);
  t.equal(rootView['chown clears suid'], false);
  const r = py(PRELUDE + `
expect('read private dir', lambda: os.listdir('private'), 'EACCES')
expect('write root file', lambda: open('root-file', 'a'), 'EACCES')
expect('chmod root file', lambda: os.chmod('root-file', 0o777), 'EPERM')
expect('chown to root', lambda: os.chown('shared', 0, 0), 'EPERM')
expect('unlink in sticky dir', lambda: os.unlink('sticky/roots'), 'EPERM')
open('sticky/mine', 'w').close(); os.unlink('sticky/mine'); R['own file in sticky dir'] = 'removed'
open('sgid/f', 'w').close(); os.mkdir('sgid/d')
R['setgid dir'] = [os.stat('sgid/f').st_gid, os.stat('sgid/d').st_gid, bool(os.stat('sgid/d').st_mode & stat.S_ISGID)]
with open('suid', 'a') as f: f.write('y')
R['suid cleared on write'] = bool(os.stat('suid').st_mode & stat.S_ISUID)
for n in ('sgid-x', 'sgid-nox'):
    with open(n, 'a') as f: f.write('y')
R['sgid after write'] = [bool(os.stat(n).st_mode & stat.S_ISGID) for n in ('sgid-x', 'sgid-nox')]
os.truncate('suid-trunc', 0)
R['suid cleared on truncate'] = bool(os.stat('suid-trunc').st_mode & stat.S_ISUID)
with open('suid-cap', 'a') as f: f.write('y')
R['capability after write'] = 'security.capability' in os.listxattr('suid-cap')
open('shared/mine', 'w').write('m'); R['owner'] = [os.stat('shared/mine').st_uid, os.stat('shared/mine').st_gid]
print(json.dumps(R))`, { cwd: m.mp, as: NOBODY }) as Record<string, unknown>;
  for (const [k, v] of Object.entries(r)) if (typeof v === 'string' && (v === 'ok' || v.includes('expected'))) t.equal(v, 'ok', k);
  t.equal(r['own file in sticky dir'], 'removed');
  t.same(r['setgid dir'], [4242, 4242, true]);
  t.equal(r['suid cleared on write'], false);
  t.same(r['sgid after write'], [false, true], 'setgid goes only with group execute');
  t.equal(r['suid cleared on truncate'], false);
  t.equal(r['capability after write'], false);
  t.same(r.owner, [NOBODY, NOBODY]);
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});

t.test('a large directory: readdir complete and stable while it changes', async (t) => {
  const m = await mountFresh(t, dir);
  const r = py(`
import os, json
os.mkdir('d')
for i in range(5000): open('d/entry-%05d' % i, 'w').close()
seen = []; removed = set(); created = 0
with os.scandir('d') as it:
    for n, e in enumerate(it):
        seen.append(e.name)
        if n % 10 == 0:
            victim = 'entry-%05d' % (4999 - n // 10)
            if victim not in seen and victim not in removed:
                os.unlink('d/' + victim); removed.add(victim)
            open('d/new-%05d' % n, 'w').close(); created += 1
stayed = set('entry-%05d' % i for i in range(5000)) - removed
print(json.dumps({'dups': len(seen) - len(set(seen)), 'missing': len(stayed - set(seen)), 'removed': len(removed), 'created': created, 'final': len(os.listdir('d'))}))
`, { cwd: m.mp }) as Record<string, number>;
  t.equal(r.dups, 0, 'no entry listed twice');
  t.equal(r.missing, 0, 'no entry that stayed was skipped');
  t.ok(r.removed > 100);
  t.equal(r.final, 5000 - r.removed + r.created);
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});

t.test('ENOSPC leaves the volume consistent, and deletes return the space', async (t) => {
  const m = await mountFresh(t, dir, { sizeBytes: 96 << 20, mkfsArgs: ['-N', '1', '-J', '4M'] });
  const r = py(`
import os, json, errno, time
open('warm', 'w').write('w'); os.unlink('warm')  # the inode allocator's first group
free0 = os.statvfs('.').f_bfree
err = None; n = 0
try:
    while n < 10000:
        with open('fill-%d' % n, 'wb') as f: f.write(b'x' * (1 << 20))
        n += 1
except OSError as e:
    err = errno.errorcode[e.errno]
full = os.statvfs('.').f_bfree
for i in range(n + 1):
    try: os.unlink('fill-%d' % i)
    except FileNotFoundError: pass
# Unlinked inodes go when the kernel forgets them, a moment after the last close.
for _ in range(50):
    if os.statvfs('.').f_bfree == free0: break
    time.sleep(0.1)
print(json.dumps({'err': err, 'files': n, 'free0': free0, 'full': full, 'after': os.statvfs('.').f_bfree}))
`, { cwd: m.mp }) as Record<string, number | string>;
  t.equal(r.err, 'ENOSPC');
  t.ok((r.files as number) > 50, `${r.files} MiB written before ENOSPC`);
  t.ok((r.full as number) < 300, 'the volume was full');
  t.equal(r.after, r.free0, 'every cluster came back after the deletes');
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});

t.test('read-only mount: EROFS on every change', async (t) => {
  const m0 = await mountFresh(t, dir);
  await fsp.writeFile(path.join(m0.mp, 'f'), 'data');
  t.equal(m0.umount().status, 0);
  const { mountExisting } = await import('./harness');
  const m = await mountExisting(t, m0.img, m0.mp + '-ro', 'ro');
  const r = py(PRELUDE + `
R['read'] = open('f').read()
expect('create', lambda: open('g', 'w'), 'EROFS')
expect('write', lambda: open('f', 'a'), 'EROFS')
expect('mkdir', lambda: os.mkdir('d'), 'EROFS')
expect('unlink', lambda: os.unlink('f'), 'EROFS')
expect('chmod', lambda: os.chmod('f', 0o600), 'EROFS')
expect('setxattr', lambda: os.setxattr('f', 'user.a', b'1'), 'EROFS')
print(json.dumps(R))`, { cwd: m.mp }) as Record<string, string>;
  t.equal(r.read, 'data');
  for (const k of ['create', 'write', 'mkdir', 'unlink', 'chmod', 'setxattr']) t.equal(r[k], 'ok', k);
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
  void run;
});
