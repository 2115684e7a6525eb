// Data writes behind (fs/data-behind.ts) over a device whose writes finish when the test says:
// overlapping writes land in the order they were started, reads of a range wait for it, the
// byte bound holds, a drain waits for everything, and a failed write is reported once.
import t from 'tap';
import { DataWritesBehind } from '../../fs/data-behind';

/** A write the test finishes (or fails) by hand. */
function gate(): { promise: Promise<void>; open: () => void; fail: (e: Error) => void } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const promise = new Promise<void>((resolve, reject) => {
    open = resolve;
    fail = reject;
  });
  return { promise, open, fail };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('overlapping writes and reads wait; disjoint ones do not', async (t) => {
  const b = new DataWritesBehind(1 << 20, () => undefined);
  const order: string[] = [];
  const g1 = gate();
  const first = await b.start(10, 20, 4096, () => g1.promise.then(() => void order.push('A lands')));
  let secondStarted = false;
  const second = b.start(15, 25, 4096, async () => {
    secondStarted = true;
    order.push('B lands');
  });
  let disjointRan = false;
  await b.start(30, 40, 4096, async () => {
    disjointRan = true;
  });
  let readDone = false;
  const read = b.overlapping(12, 13).then(() => {
    readDone = true;
  });
  await tick();
  t.ok(disjointRan, 'a write to other blocks starts at once');
  t.notOk(secondStarted, 'an overlapping write waits for the one behind');
  t.notOk(readDone, 'a read of blocks being written waits');
  g1.open();
  await first.done;
  await (await second).done;
  await read;
  t.same(order, ['A lands', 'B lands'], 'overlapping writes land in the order they started');
  t.ok(readDone);
  t.equal(b.bytesBehind, 0);
});

t.test('at most maxBytes behind; drain waits for all', async (t) => {
  const b = new DataWritesBehind(8192, () => undefined);
  const gates = [gate(), gate(), gate()];
  await b.start(0, 1, 4096, () => gates[0].promise);
  await b.start(1, 2, 4096, () => gates[1].promise);
  let thirdStarted = false;
  const third = b.start(2, 3, 4096, async () => {
    thirdStarted = true;
    return gates[2].promise;
  });
  await tick();
  t.notOk(thirdStarted, 'no room: the third waits');
  t.equal(b.bytesBehind, 8192);
  gates[0].open();
  await third;
  t.ok(thirdStarted, 'starts once one finished');
  let drained = false;
  const d = b.drain().then(() => {
    drained = true;
  });
  await tick();
  t.notOk(drained, 'drain waits');
  gates[1].open();
  gates[2].open();
  await d;
  t.ok(drained);
  t.equal(b.bytesBehind, 0);
});

t.test('a failed write is logged and reported once by the next drain', async (t) => {
  const logged: string[] = [];
  const b = new DataWritesBehind(1 << 20, (l) => logged.push(l));
  const g = gate();
  const { done } = await b.start(5, 6, 4096, () => g.promise);
  g.fail(Object.assign(new Error('EIO from the disk'), { code: 'EIO' }));
  await done; // settles, never rejects
  await t.rejects(b.drain(), { errno: 'EIO', message: /EIO from the disk/ });
  await t.resolves(b.drain(), 'reported once');
  t.match(logged.join('\n'), /data write of blocks 5\.\.5 failed after it was answered/);
});
