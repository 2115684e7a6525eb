// Per-inode locks (fs/inode-locks.ts) over a real lock manager (o2dlm on the seeded simulated
// network): three nodes run operations that each touch a random set of "inodes" in random
// order, as lookups and allocations do. Invariants: every operation finishes (waits only
// in block order, tries out of order and starts over: no deadlock), an EX holder is alone,
// and a bank of balances moved under EX always sums to the same total, whatever a PR
// reader or a writer sees (the scopes are serializable).
import t from 'tap';
import { DlmGlue } from '../../fs/dlmglue';
import { InodeLocks, Restart } from '../../fs/inode-locks';
import { DlmDomain } from '../../dlm/o2cb/o2dlm/domain';
import type { ClusterConnection } from '../../stackglue/types';
import { SimNet, prng } from '../dlm/simnet';

interface Node {
  glue: DlmGlue;
  dom: DlmDomain;
  locks: InodeLocks;
  checkpoints: number;
  invalidations: number;
  /** Downconverts that failed (none may, until the test tears the network down). */
  errors: string[];
}

function nodeOn(net: SimNet, num: number): Node {
  const glue = new DlmGlue();
  const dom = new DlmDomain(net.transport(num), {
    name: '0123456789ABCDEF0123456789ABCDEF', proto: { major: 1, minor: 0 }, callbacks: glue.callbacks,
    onEviction: () => undefined, clock: net.clock,
  });
  const conn: ClusterConnection = {
    stack: 'o2cb-sim', thisNode: num, proto: { major: 1, minor: 0 },
    lock: (l, m, f, n) => dom.lock(l, m, f, n),
    unlock: (l, f) => dom.unlock(l, f),
    disconnect: async () => undefined,
  };
  glue.attach(conn);
  const errors: string[] = [];
  glue.onDownconvertError = (name, e) => void errors.push(`${name}: ${e.message}`);
  const node: Node = {
    glue, dom, checkpoints: 0, invalidations: 0, errors,
    locks: new InodeLocks(glue, {
      checkpoint: async () => void (node.checkpoints += 1),
      invalidate: () => void (node.invalidations += 1),
      log: () => undefined,
    }),
  };
  return node;
}

const INODES = [101, 102, 103, 104, 105, 106, 107, 108];
const TOTAL = 8 * 100;

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  t.test(`three nodes, random inode sets in random order (seed ${seed})`, async (t) => {
    const net = new SimNet({ nodes: 3, seed, delayMaxMs: 3 });
    const nodes = [nodeOn(net, 0), nodeOn(net, 1), nodeOn(net, 2)];
    t.teardown(() => {
      for (const n of nodes) n.dom.abandon();
      net.close();
    });
    for (const n of nodes) await n.dom.join();
    // The "disk": balances, changed only by EX scopes holding both inodes.
    const disk = new Map(INODES.map((b) => [b, 100]));
    const holders = new Map<number, { ex: number; pr: number }>(INODES.map((b) => [b, { ex: 0, pr: 0 }]));
    const violations: string[] = [];
    const sums: number[] = [];
    const rounds = 25;
    const worker = async (n: Node, id: number): Promise<number> => {
      const rng = prng(seed * 100 + id);
      let done = 0;
      for (let r = 0; r < rounds; r++) {
        const write = rng() < 0.6;
        const mode = write ? 'EX' : 'PR';
        const want = INODES.filter(() => rng() < 0.4);
        if (want.length < 2) want.push(...INODES.slice(0, 2).filter((b) => !want.includes(b)));
        // Random order: as an operation meets inodes, not sorted.
        for (let i = want.length - 1; i > 0; i--) {
          const j = Math.floor(rng() * (i + 1));
          [want[i], want[j]] = [want[j], want[i]];
        }
        await n.locks.run(mode, async () => {
          const mine: number[] = [];
          try {
            for (const b of want) {
              await n.locks.reading(b);
              const h = holders.get(b)!;
              if (write ? h.ex + h.pr > 0 : h.ex > 0) violations.push(`node ${id} got ${b} at ${mode} while held ex=${h.ex} pr=${h.pr}`);
              if (write) h.ex += 1;
              else h.pr += 1;
              mine.push(b);
              await net.sleep(rng() < 0.5 ? 0 : 1);
            }
            if (write) {
              // Move an amount between the first two (read, yield, write: racy without locks).
              const [a, b] = want;
              const va = disk.get(a)!;
              const vb = disk.get(b)!;
              await net.sleep(1);
              const amount = Math.floor(rng() * 10);
              disk.set(a, va - amount);
              disk.set(b, vb + amount);
            } else if (want.length === INODES.length) {
              sums.push(INODES.reduce((s, b) => s + disk.get(b)!, 0));
            }
          } finally {
            for (const b of mine) {
              const h = holders.get(b)!;
              if (write) h.ex -= 1;
              else h.pr -= 1;
            }
          }
        });
        done += 1;
      }
      return done;
    };
    const deadline = net.sleep(600_000).then(() => 'stuck');
    const result = await Promise.race([Promise.all(nodes.map((n, i) => worker(n, i))), deadline]);
    t.same(result, [rounds, rounds, rounds], 'every operation finished (no deadlock)');
    t.same(violations, [], 'an EX holder is always alone');
    t.equal(INODES.reduce((s, b) => s + disk.get(b)!, 0), TOTAL, 'the balances still sum to the total');
    for (const s of sums) t.equal(s, TOTAL, 'a reader holding every inode saw the total');
    t.ok(nodes.some((n) => n.locks.restarts > 0), `operations started over when a lock out of order was busy (${nodes.map((n) => n.locks.restarts).join('/')})`);
    t.ok(nodes.every((n) => n.checkpoints > 0), 'every node checkpointed before giving locks up');
    t.same(nodes.flatMap((n) => n.errors), [], 'no downconvert failed');
  });
}

t.test('no inode lock is taken while a dead node awaits recovery', async (t) => {
  const net = new SimNet({ nodes: 1, seed: 9, delayMaxMs: 1 });
  const [n] = [nodeOn(net, 0)];
  t.teardown(() => {
    n.dom.abandon();
    net.close();
  });
  await n.dom.join();
  t.ok(n.locks.nodeDown(7), 'first word of the death');
  t.notOk(n.locks.nodeDown(7), 'told again: nothing new');
  let ran = false;
  const op = n.locks.run('PR', async () => {
    await n.locks.reading(101);
    ran = true;
  });
  await net.sleep(50);
  t.notOk(ran, 'the operation waits');
  n.locks.recovered(7);
  await op;
  t.ok(ran, 'and runs once the slot is recovered');
  // The recovery itself does not wait for itself.
  n.locks.nodeDown(8);
  await n.locks.run('EX', async () => void (await n.locks.reading(102)), { duringRecovery: true });
  t.pass('recovery ran while its node was pending');
  n.locks.recovered(8);
});

t.test('scope rules are asserted', async (t) => {
  const net = new SimNet({ nodes: 1, seed: 10, delayMaxMs: 1 });
  const n = nodeOn(net, 0);
  t.teardown(() => {
    n.dom.abandon();
    net.close();
  });
  await n.dom.join();
  t.throws(() => n.locks.reading(101), /outside an inode lock scope/, 'a read outside any scope');
  await t.rejects(n.locks.run('PR', async () => n.locks.writing(101)), /changed in a read-only \(PR\) scope/, 'a change in a PR scope');
  await t.rejects(n.locks.run('PR', () => n.locks.run('PR', async () => undefined)), /do not nest/, 'nested scopes');
  n.locks.setUncovered([55]);
  await n.locks.run('PR', async () => t.equal(n.locks.reading(55), undefined, 'an uncovered inode needs no lock'));
  t.ok(new Restart(1, 'x') instanceof Error);
});
