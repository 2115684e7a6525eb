// Real FUSE: a request the filesystem blocks on is INTERRUPTed when its caller is killed,
// the filesystem sees its AbortSignal fire, and the mount keeps working. Then abortFuse()
// frees a mount whose server is frozen (SIGSTOP), and the server ends cleanly once thawed.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { abortFuse, isFuseMounted, readMountInfo } from '../../fs/fuse/mount';
import { sleep, startHelper, startMemfsServer, withTimeout } from './harness';

t.test('killing a blocked caller interrupts its request; the fs observes the abort', async (t) => {
  const server = await startMemfsServer(t);
  const blockerIno = await server.call<number>({
    cmd: 'writeFileBehind', path: 'blocker', dataBase64: Buffer.from('never read').toString('base64'), blockOnOpen: true,
  });
  const reader = startHelper(t, 'cat', [path.join(server.mountpoint, 'blocker')]);
  const blocked = await server.waitEvent('blocked-open', 5000);
  t.equal(blocked.detail.ino, blockerIno, 'OPEN of the blocker is parked in the filesystem');
  t.equal(blocked.detail.pid, reader.child.pid, 'the request context carries the caller pid');
  // Other requests are served while that one is parked: requests run concurrently.
  const side = path.join(server.mountpoint, 'side.txt');
  await withTimeout(fsp.writeFile(side, 'served meanwhile'), 5000, 'write while blocked');
  t.equal(await withTimeout(fsp.readFile(side, 'utf8'), 5000, 'read while blocked'), 'served meanwhile',
    'the session keeps serving while a handler is blocked');
  t.equal(reader.child.exitCode, null, 'cat is still stuck in open(2)');
  reader.child.kill('SIGKILL');
  const aborted = await server.waitEvent('aborted', 5000);
  t.same(aborted.detail, { op: 'open', ino: blockerIno }, 'the AbortSignal fired for that request');
  const exit = await withTimeout(reader.exited, 5000, 'cat exit');
  t.equal(exit.signal, 'SIGKILL', 'the caller died of its signal, not of a hang');
  const s = await server.call<{ session: { interrupts: number; inFlight: number } }>({ cmd: 'stats' });
  t.ok(s.session.interrupts >= 1, `session received ${s.session.interrupts} INTERRUPT(s)`);
  t.equal(s.session.inFlight, 0, 'nothing left in flight');
  await fsp.writeFile(path.join(server.mountpoint, 'after.txt'), 'still works');
  t.equal(await fsp.readFile(path.join(server.mountpoint, 'after.txt'), 'utf8'), 'still works');
});

t.test('abortFuse frees a mount whose server hangs; the server then ends cleanly', async (t) => {
  const fusectlMounted = (): boolean => readMountInfo().some((m) => m.fstype === 'fusectl');
  const fusectlBefore = fusectlMounted();
  const server = await startMemfsServer(t);
  const mp = server.mountpoint;
  process.kill(server.pid, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(server.pid, 'SIGCONT');
    } catch {
      // already gone
    }
  });
  // A fresh name: nothing cached, so stat must ask the (frozen) server.
  const stuck = startHelper(t, 'stat', [path.join(mp, `nothing-${process.pid}`)]);
  await sleep(300);
  t.equal(stuck.child.exitCode, null, 'stat hangs on the frozen server');
  await withTimeout(abortFuse(mp), 10_000, 'abortFuse');
  const exit = await withTimeout(stuck.exited, 5000, 'stat exit after abort');
  t.not(exit.code, 0, 'the stuck call failed instead of hanging');
  t.notOk(isFuseMounted(mp), 'the mount is gone');
  process.kill(server.pid, 'SIGCONT');
  const code = await withTimeout(server.exited, 5000, 'server exit');
  t.equal(code, 0, 'server exited 0');
  t.equal(server.closedReason(), 'unmounted', 'its reads ended with ENODEV');
  t.equal(fusectlMounted(), fusectlBefore, 'fusectl left as it was found');
});
