// dlmglue over a real lock manager (o2dlm on the seeded simulated network, test/dlm): the
// races a single node never sees. The conversion deadlock: two nodes cache PR and both
// upconvert to EX; each convert waits for the other's PR. dlmglue must cancel its
// upconvert on the BAST, downconvert, and ask again (OCFS2's BUSY handling), so that both
// get EX in turn and never at once.
import t from 'tap';
import type { LockHandle } from '../../fs/dlmglue';
import { glueOn } from '../dlm/sim-glue';
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
