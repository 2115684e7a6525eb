// dlmglue over a real lock manager (o2dlm on the seeded simulated network, test/dlm): the
// races a single node never sees. The conversion deadlock: two nodes cache PR and both
// upconvert to EX; each convert waits for the other's PR. dlmglue must cancel its
// upconvert on the BAST, downconvert, and ask again (OCFS2's BUSY handling), so that both
// get EX in turn and never at once.
import t from 'tap';
import type { LockHandle } from '../../fs/dlmglue';
import { glueOn, joinAll } from '../dlm/sim-glue';
import { SimNet } from '../dlm/simnet';

const NAME = 'M000000000000000000000200000000';

for (const seed of [1, 2, 3, 4, 5, 6]) {
  t.test(`two PR holders upconvert to EX at once (seed ${seed}): both get EX, in turn`, async (t) => {
    const net = new SimNet({ nodes: 2, seed, delayMaxMs: 3 });
    const nodes = [glueOn(net, 0), glueOn(net, 1)];
    t.teardown(() => {
      for (const n of nodes) n.dom.abandon();
      net.close();
    });
    for (const n of nodes) await n.dom.join();
    let exHolders = 0;
    let maxExHolders = 0;
    const rounds = 10;
    const downconverts: number[] = [0, 0];
    const res = nodes.map((n, i) => n.glue.resource(NAME, { onDownconvert: async () => { downconverts[i] += 1; } }));
    const worker = async (i: number): Promise<number> => {
      let done = 0;
      for (let r = 0; r < rounds; r++) {
        (await nodes[i].glue.lock(res[i], 'PR')).release();
        const h: LockHandle = await nodes[i].glue.lock(res[i], 'EX');
        exHolders += 1;
        maxExHolders = Math.max(maxExHolders, exHolders);
        await net.sleep(1 + (r % 3));
        exHolders -= 1;
        h.release();
        done += 1;
      }
      return done;
    };
    const deadline = net.sleep(60_000).then(() => 'stuck');
    const result = await Promise.race([Promise.all([worker(0), worker(1)]), deadline]);
    t.same(result, [rounds, rounds], 'both nodes finished every round (no conversion deadlock)');
    t.equal(maxExHolders, 1, 'never two EX holders at once');
    t.ok(downconverts[0] + downconverts[1] > 0, 'the nodes gave way to each other');
  });
}

t.test('a brand-new lock (LKF.LOCAL) is held without waiting for its grant; a node that learns the name later waits for it', async (t) => {
  const net = new SimNet({ nodes: 2, seed: 7, delayMaxMs: 3 });
  const nodes = await joinAll(t, net, [glueOn(net, 0), glueOn(net, 1)]);
  const name = 'M0000000000000000000003000000ab';
  const mine = nodes[0].glue.resource(name);
  const h = await nodes[0].glue.lock(mine, 'EX', { local: true });
  t.equal(nodes[0].glue.stackRequests, 1, 'one request sent');
  const again = await nodes[0].glue.lock(mine, 'PR');
  again.release();
  t.pass('a second holder at a lower level goes on meanwhile');
  // Node 1 learns the name only now (as from a directory node 0 gave up): node 0 masters
  // it and holds EX, so node 1 waits until node 0 lets go.
  let granted = false;
  const theirs = nodes[1].glue.lock(nodes[1].glue.resource(name), 'EX').then((x) => {
    granted = true;
    return x;
  });
  await net.sleep(100);
  t.notOk(granted, 'node 1 waits for node 0');
  t.equal(mine.level, 'EX', 'node 0\'s grant came meanwhile');
  h.release();
  (await theirs).release();
  t.ok(granted, 'node 1 gets EX once node 0 gives it up');
});

t.test('exclusiveSinceNew: only a lock made here at EX as a new name, until another node gets any level', async (t) => {
  const net = new SimNet({ nodes: 2, seed: 8, delayMaxMs: 3 });
  const nodes = await joinAll(t, net, [glueOn(net, 0), glueOn(net, 1)]);
  const [a, b] = nodes.map((n) => n.glue);
  const created = a.resource('M0000000000000000000004000000ab');
  (await a.lock(created, 'EX', { local: true })).release();
  t.ok(created.exclusiveSinceNew, 'made here at EX, cached with no holder: still nobody else\'s');
  t.equal(a.cached(created.name), created, 'the node keeps it under its name');
  const newAtPr = a.resource('M0000000000000000000004000000ac');
  (await a.lock(newAtPr, 'PR', { local: true })).release();
  t.notOk(newAtPr.exclusiveSinceNew, 'a new lock made at PR does not say so');
  const known = a.resource('M0000000000000000000004000000ad');
  (await a.lock(known, 'EX')).release();
  t.notOk(known.exclusiveSinceNew, 'a lock asked for the usual way does not say so');
  // Node 1 learns the name and reads: node 0 goes down to PR, and the lock is not its alone.
  (await b.lock(b.resource(created.name), 'PR')).release();
  t.equal(created.level, 'PR', 'node 0 gave way');
  t.notOk(created.exclusiveSinceNew, 'cleared once the level left EX');
  (await a.lock(created, 'EX')).release();
  t.notOk(created.exclusiveSinceNew, 'and EX again later does not bring it back');
});
