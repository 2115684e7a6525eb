// Real FUSE: POSIX record locks (fcntl) and BSD flock locks taken by two processes go to the
// filesystem (POSIX_LOCKS / FLOCK_LOCKS negotiated), conflict, block and wake, and die with
// close/exit. The lock table is MemFs's; what this proves is the session's lock plumbing.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { runTool, sleep, startHelper, startMemfsServer, type MemfsServer } from './harness';
import type { MemFsStats } from './memfs';

const PY_POSIX_HOLDER = `
import fcntl, os, sys
f = open(sys.argv[1], 'r+b')
fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)
print('locked', os.getpid(), flush=True)
sys.stdin.readline()
fcntl.lockf(f, fcntl.LOCK_UN, 100, 0)
print('unlocked', flush=True)
sys.stdin.readline()
`;

const PY_POSIX_PROBE = `
import fcntl, os, sys, struct, errno, json
f = open(sys.argv[1], 'r+b')
out = {}
def attempt(length, start):
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        fcntl.lockf(f, fcntl.LOCK_UN, length, start)
        return 'got'
    except OSError as e:
        return errno.errorcode[e.errno]
out['overlap'] = attempt(10, 50)
out['disjoint'] = attempt(100, 200)
res = fcntl.fcntl(f, fcntl.F_GETLK, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 100, 0))
t, w, s, l, pid = struct.unpack('hhqqi4x', res)
out['getlk'] = {'type': t, 'start': s, 'len': l, 'pid': pid}
print(json.dumps(out))
`;

const PY_POSIX_WAITER = `
import fcntl, sys
f = open(sys.argv[1], 'r+b')
print('waiting', flush=True)
fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)
print('got', flush=True)
`;

const PY_FLOCK_HOLDER = `
import fcntl, sys
f = open(sys.argv[1], 'rb')
fcntl.flock(f, fcntl.LOCK_SH if sys.argv[2] == 'sh' else fcntl.LOCK_EX)
print('locked', flush=True)
sys.stdin.readline()
`;

const PY_FLOCK_PROBE = `
import fcntl, sys, errno
f = open(sys.argv[1], 'rb')
try:
    fcntl.flock(f, (fcntl.LOCK_SH if sys.argv[2] == 'sh' else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    print('got')
except OSError as e:
    print(errno.errorcode[e.errno])
`;

function memfsStats(server: MemfsServer): Promise<MemFsStats> {
  return server.call<{ memfs: MemFsStats }>({ cmd: 'stats' }).then((s) => s.memfs);
}

t.test('fcntl and flock locks between processes go through the filesystem', async (t) => {
  const server = await startMemfsServer(t);
  const file = path.join(server.mountpoint, 'locked.dat');
  await fsp.writeFile(file, Buffer.alloc(4096));

  await t.test('POSIX: conflict, disjoint ranges, F_GETLK owner pid, blocking wait and wake-up', async (t) => {
    const holder = startHelper(t, 'python3', ['-c', PY_POSIX_HOLDER, file]);
    const locked = await holder.waitLine('locked', 5000);
    const holderPid = Number(locked.split(' ')[1]);

    const probe = await runTool('python3', ['-c', PY_POSIX_PROBE, file]);
    t.equal(probe.code, 0, probe.stderr);
    const out = JSON.parse(probe.stdout) as { overlap: string; disjoint: string; getlk: { type: number; start: number; len: number; pid: number } };
    t.ok(out.overlap === 'EAGAIN' || out.overlap === 'EACCES', `overlapping lock refused (${out.overlap})`);
    t.equal(out.disjoint, 'got', 'disjoint range granted');
    t.same(out.getlk, { type: 1, start: 0, len: 100, pid: holderPid }, 'F_GETLK names the holder and its range');

    const waiter = startHelper(t, 'python3', ['-c', PY_POSIX_WAITER, file]);
    await waiter.waitLine('waiting', 5000);
    await sleep(300);
    t.notOk(waiter.lines.includes('got'), 'SETLKW waits while the lock is held');
    holder.child.stdin?.write('\n');
    await holder.waitLine('unlocked', 5000);
    t.equal(await waiter.waitLine('got', 5000), 'got', 'SETLKW granted once the holder unlocked');
    t.same(await waiter.exited, { code: 0, signal: null });
    holder.child.stdin?.end();
    await holder.exited;
  });

  await t.test('POSIX locks die when the owner is killed (FLUSH carries the lock owner)', async (t) => {
    const holder = startHelper(t, 'python3', ['-c', PY_POSIX_HOLDER, file]);
    await holder.waitLine('locked', 5000);
    const busy = JSON.parse((await runTool('python3', ['-c', PY_POSIX_PROBE, file])).stdout) as { overlap: string };
    t.not(busy.overlap, 'got', 'held');
    holder.child.kill('SIGKILL');
    await holder.exited;
    const free = JSON.parse((await runTool('python3', ['-c', PY_POSIX_PROBE, file])).stdout) as { overlap: string; getlk: { type: number } };
    t.equal(free.overlap, 'got', 'free after the holder died');
    t.equal(free.getlk.type, 2, 'F_GETLK reports F_UNLCK');
  });

  await t.test('flock: exclusive conflicts, shared coexist, released on close', async (t) => {
    const ex = startHelper(t, 'python3', ['-c', PY_FLOCK_HOLDER, file, 'ex']);
    await ex.waitLine('locked', 5000);
    t.equal((await runTool('python3', ['-c', PY_FLOCK_PROBE, file, 'ex'])).stdout.trim(), 'EAGAIN', 'second LOCK_EX refused');
    t.equal((await runTool('python3', ['-c', PY_FLOCK_PROBE, file, 'sh'])).stdout.trim(), 'EAGAIN', 'LOCK_SH refused under LOCK_EX');
    ex.child.stdin?.end();
    await ex.exited;
    t.equal((await runTool('python3', ['-c', PY_FLOCK_PROBE, file, 'ex'])).stdout.trim(), 'got', 'free after the holder closed');

    const sh = startHelper(t, 'python3', ['-c', PY_FLOCK_HOLDER, file, 'sh']);
    await sh.waitLine('locked', 5000);
    t.equal((await runTool('python3', ['-c', PY_FLOCK_PROBE, file, 'sh'])).stdout.trim(), 'got', 'shared locks coexist');
    t.equal((await runTool('python3', ['-c', PY_FLOCK_PROBE, file, 'ex'])).stdout.trim(), 'EAGAIN', 'LOCK_EX refused under LOCK_SH');
    sh.child.stdin?.end();
    await sh.exited;
    const cli = await runTool('flock', ['-n', '-x', file, 'true']);
    t.equal(cli.code, 0, 'flock(1) gets the lock once everyone is gone');
  });

  await t.test('the filesystem saw every kind of lock request', async (t) => {
    const s = await memfsStats(server);
    t.ok(s.posixLockRequests >= 4, `POSIX SETLK/SETLKW requests: ${s.posixLockRequests}`);
    t.ok(s.getlkRequests >= 2, `GETLK requests: ${s.getlkRequests}`);
    t.ok(s.flockRequests >= 4, `flock requests: ${s.flockRequests}`);
  });
});
