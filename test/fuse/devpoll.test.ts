// The devpoll addon and PollChannel: reads that wait on the event loop, not the threadpool.
// A pipe stands in for /dev/fuse (both are pollable descriptors that deliver whole writes).
import t from 'tap';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { PollChannel } from '../../fs/fuse/channel';
import { devPoll, devPollError } from '../../fs/fuse/devpoll';

function pipe(): [number, number] {
  // Node has no pipe(2); a FIFO in a temp dir gives the same pair of descriptors.
  const dir = fs.mkdtempSync('/tmp/o2fs-devpoll-');
  const fifo = `${dir}/fifo`;
  const r = spawnSync('mkfifo', [fifo]);
  if (r.status !== 0) throw new Error('mkfifo failed');
  const rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const wfd = fs.openSync(fifo, fs.constants.O_WRONLY);
  fs.rmSync(dir, { recursive: true });
  return [rfd, wfd];
}

t.test('the addon loads (scripts/setup.sh builds it)', async (t) => {
  t.ok(devPoll(), `devpoll: ${devPollError()}`);
});

t.test('PollChannel: immediate reads, waiting reads in order, close rejects waiters', async (t) => {
  const dp = devPoll();
  if (!dp) return t.fail(devPollError());
  const [rfd, wfd] = pipe();
  t.teardown(() => fs.closeSync(wfd));
  const ch = new PollChannel(rfd, dp);
  // Nothing queued: the reads wait; they complete in FIFO order as data arrives.
  const a = Buffer.alloc(16);
  const b = Buffer.alloc(16);
  const ra = ch.read(a);
  const rb = ch.read(b);
  fs.writeSync(wfd, Buffer.from('first'));
  t.equal(await ra, 5);
  t.equal(a.toString('latin1', 0, 5), 'first');
  fs.writeSync(wfd, Buffer.from('second'));
  t.equal(await rb, 6);
  t.equal(b.toString('latin1', 0, 6), 'second');
  // Data already queued: read() completes without waiting for the watcher.
  fs.writeSync(wfd, Buffer.from('third'));
  t.equal(await ch.read(a), 5);
  // The loop must not spin while nobody waits (the watcher is paused): an idle second passes
  // with almost no CPU.
  const before = process.cpuUsage();
  fs.writeSync(wfd, Buffer.from('unread'));
  await new Promise((r) => setTimeout(r, 300));
  const used = process.cpuUsage(before);
  t.ok(used.user + used.system < 150_000, `idle CPU ${used.user + used.system} us`);
  t.equal(await ch.read(a), 6);
  const pending = ch.read(b);
  ch.close();
  await t.rejects(pending, { code: 'ENODEV' });
  await t.rejects(ch.read(b), { code: 'ENODEV' });
});

t.test('devpoll: bad arguments are TypeErrors, not crashes', async (t) => {
  const dp = devPoll();
  if (!dp) return t.fail(devPollError());
  t.throws(() => dp.read(-1, Buffer.alloc(1)), TypeError);
  t.throws(() => dp.read(0, 'x' as unknown as Buffer), TypeError);
  t.throws(() => dp.watch(0, 42 as unknown as () => void), TypeError);
  t.throws(() => dp.unwatch({}), TypeError);
  t.equal(dp.read(987654, Buffer.alloc(4)), -9, 'EBADF comes back as -errno');
});
