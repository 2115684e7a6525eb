// dlmglue over a real lock manager (o2dlm on the seeded simulated network, test/dlm): the
// races a single node never sees. The conversion deadlock: two nodes cache PR and both
// upconvert to EX; each convert waits for the other's PR. dlmglue must cancel its
// upconvert on the BAST, downconvert, and ask again (OCFS2's BUSY handling), so that both
// get EX in turn and never at once.
import t from 'tap';
import type { DlmGlue, LockHandle } from '../../fs/dlmglue';
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

/** Node `from` gives up a lock `to` asks for (as a directory lock goes to a node that reads it). */
async function giveUpOne(from: DlmGlue, to: DlmGlue, name: string): Promise<void> {
  (await from.lock(from.resource(name), 'EX')).release();
  (await to.lock(to.resource(name), 'PR')).release();
}

t.test('a brand-new lock (LKF.LOCAL) is held at once and told to the lock manager only when the node gives something up; a node that learns the name then waits for it', async (t) => {
  const net = new SimNet({ nodes: 2, seed: 7, delayMaxMs: 3 });
  const nodes = await joinAll(t, net, [glueOn(net, 0), glueOn(net, 1)]);
  const name = 'M0000000000000000000003000000ab';
  const dir = 'M000000000000000000000300000001';
  (await nodes[0].glue.lock(nodes[0].glue.resource(dir), 'EX')).release();
  const sent = nodes[0].glue.stackRequests;
  const mine = nodes[0].glue.resource(name);
  const h = await nodes[0].glue.lock(mine, 'EX', { local: true });
  const again = await nodes[0].glue.lock(mine, 'PR');
  again.release();
  t.pass('a second holder at a lower level goes on meanwhile');
  t.equal(nodes[0].glue.stackRequests, sent, 'no request sent for it yet');
  // Node 1 reads the "directory" node 0 held: node 0 registers the new lock before giving it up.
  await giveUpOne(nodes[0].glue, nodes[1].glue, dir);
  t.equal(nodes[0].glue.stackRequests, sent + 2, 'the new lock, then the downconvert');
  // Node 1 learns the name only now: node 0 masters it and holds EX, so node 1 waits.
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

t.test('a brand-new lock dropped before the node gave anything up costs no request; one asked for above its level is told at once', async (t) => {
  const net = new SimNet({ nodes: 2, seed: 9, delayMaxMs: 3 });
  const nodes = await joinAll(t, net, [glueOn(net, 0), glueOn(net, 1)]);
  const a = nodes[0].glue;
  const sent = a.stackRequests;
  const gone = a.resource('O0000000000000000000005000000ab');
  (await a.lock(gone, 'PR', { local: true })).release();
  t.ok(await a.drop(gone), 'dropped');
  t.equal(a.cached(gone.name), undefined, 'and forgotten');
  const trimmed = a.resource('M0000000000000000000005000000ac');
  (await a.lock(trimmed, 'EX', { local: true })).release();
  let before = 0;
  t.ok(await a.dropIfIdle(trimmed, async () => void (before += 1)), 'given back as the lock cache does');
  t.equal(before, 1, 'after what must precede it (checkpoint, invalidation)');
  t.equal(a.stackRequests, sent, 'neither cost a request');
  const stillHeld = a.resource('O0000000000000000000005000000af');
  const h = await a.lock(stillHeld, 'PR', { local: true });
  const dropping = a.drop(stillHeld);
  await net.sleep(10);
  h.release();
  t.ok(await dropping, 'a drop asked while it is held goes once the holder does');
  const upgraded = a.resource('O0000000000000000000005000000ad');
  (await a.lock(upgraded, 'PR', { local: true })).release();
  (await a.lock(upgraded, 'EX')).release();
  t.equal(a.stackRequests, sent + 2, 'PR made new then EX: the new lock told, then the upconvert');
  const held = await a.lock(a.resource('M0000000000000000000005000000ae'), 'EX', { local: true });
  await t.rejects(a.shutdown(), /still held at shutdown/, 'shutdown asserts no holder is left');
  held.release();
  await a.shutdown();
  t.equal(a.stackRequests, sent + 2, 'shutdown forgets new locks nobody was told of');
});

t.test('exclusiveSinceNew: only a lock made here at EX as a new name, until another node gets any level', async (t) => {
  const net = new SimNet({ nodes: 2, seed: 8, delayMaxMs: 3 });
  const nodes = await joinAll(t, net, [glueOn(net, 0), glueOn(net, 1)]);
  const [a, b] = nodes.map((n) => n.glue);
  const errors: string[] = [];
  for (const g of [a, b]) g.onDownconvertError = (name, e) => void errors.push(`${name}: ${e.message}`);
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
  // Node 0 gives up the lock just taken (the new ones are told first); node 1 then learns
  // the new name and reads: node 0 goes down to PR, and the lock is not its alone.
  await giveUpOne(a, b, known.name);
  t.ok(created.exclusiveSinceNew, 'told to the lock manager, still node 0\'s alone');
  (await b.lock(b.resource(created.name), 'PR')).release();
  t.equal(created.level, 'PR', 'node 0 gave way');
  t.notOk(created.exclusiveSinceNew, 'cleared once the level left EX');
  (await a.lock(created, 'EX')).release();
  t.notOk(created.exclusiveSinceNew, 'and EX again later does not bring it back');
  await net.sleep(50);
  t.same(errors, [], 'no downconvert failed');
});
