// Per-inode locks (fs/inode-locks.ts) over a real lock manager (o2dlm on the seeded simulated
// network): three nodes run operations that each touch a random set of "inodes" in random
// order, as lookups and allocations do. Invariants: every operation finishes (waits only
// in block order, tries out of order and starts over: no deadlock), an EX holder is alone,
// and a bank of balances moved under EX always sums to the same total, whatever a PR
// reader or a writer sees (the scopes are serializable).
import t, { Test } from 'tap';
import type { DlmGlue } from '../../fs/dlmglue';
import { EXTENT_CHUNK_BYTES, InodeLocks, Restart } from '../../fs/inode-locks';
import { InodeLvb, decodeInodeLvb, encodeInodeLvb } from '../../fs/inode-lvb';
import { LOCK_TYPE, lockName } from '../../fs/lock-names';
import type { DlmDomain } from '../../dlm/o2cb/o2dlm/domain';
import { glueOn, joinAll } from '../dlm/sim-glue';
import { SimNet, prng } from '../dlm/simnet';

interface Node {
  glue: DlmGlue;
  dom: DlmDomain;
  locks: InodeLocks;
  checkpoints: number;
  invalidations: number;
  /** host.extentLeft calls: an extent lock left its level (what was read under it may change). */
  extentsLeft: number;
  /** Downconverts that failed (none may, until the test tears the network down). */
  errors: string[];
}

/** The "disk" of inode generations every node reads (1 when not set). */
type Generations = Map<number, number>;

function nodeOn(net: SimNet, num: number, gens: Generations = new Map()): Node {
  const { glue, dom } = glueOn(net, num);
  const errors: string[] = [];
  glue.onDownconvertError = (name, e) => void errors.push(`${name}: ${e.message}`);
  const node: Node = {
    glue, dom, checkpoints: 0, invalidations: 0, extentsLeft: 0, errors,
    locks: new InodeLocks(glue, {
      generation: async (blkno) => gens.get(blkno) ?? 1,
      checkpoint: async () => void (node.checkpoints += 1),
      invalidate: () => void (node.invalidations += 1),
      extentLeft: () => void (node.extentsLeft += 1),
      log: () => undefined,
    }),
  };
  return node;
}

/** `o.nodes` nodes on a simulated network, each with InodeLocks, joined; torn down with `t`. */
async function joinedWorld(t: Test, o: { nodes: number; seed: number; delayMaxMs: number }, gens: Generations = new Map()): Promise<{ net: SimNet; nodes: Node[] }> {
  const net = new SimNet(o);
  const nodes = Array.from({ length: o.nodes }, (_, num) => nodeOn(net, num, gens));
  t.teardown(() => {
    for (const n of nodes) n.dom.abandon();
    net.close();
  });
  for (const n of nodes) await n.dom.join();
  return { net, nodes };
}

const INODES = [101, 102, 103, 104, 105, 106, 107, 108];
const TOTAL = 8 * 100;

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  t.test(`three nodes, random inode sets in random order (seed ${seed})`, async (t) => {
    const { net, nodes } = await joinedWorld(t, { nodes: 3, seed, delayMaxMs: 3 });
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
  await t.rejects(n.locks.run('PR', async () => n.locks.writing(101, 1, false)), /changed in a read-only \(PR\) scope/, 'a change in a PR scope');
  await t.rejects(n.locks.run('PR', () => n.locks.run('PR', async () => undefined)), /do not nest/, 'nested scopes');
  await t.rejects(n.locks.run('EX', async () => n.locks.writing(102, 1, false)), /changed without being read/, 'a change of an inode never read (and not created)');
  n.locks.setUncovered([55]);
  await n.locks.run('PR', async () => t.equal(n.locks.reading(55), undefined, 'an uncovered inode needs no lock'));
  t.ok(new Restart(1, 'x') instanceof Error);
});

t.test('an inode freed and reused: the lock name follows its generation', async (t) => {
  const gens: Generations = new Map([[300, 7]]);
  const { nodes } = await joinedWorld(t, { nodes: 2, seed: 11, delayMaxMs: 2 }, gens);
  const heldNames = (n: Node, level?: string): string[] => [...((n.glue as unknown as { resources: Map<string, { level: string }> }).resources)]
    .filter(([, r]) => (level ? r.level === level : r.level !== 'NL')).map(([name]) => name);
  await nodes[0].locks.run('PR', async () => void (await nodes[0].locks.reading(300)));
  t.ok(heldNames(nodes[0]).some((x) => x.endsWith('0000012c00000007')), 'node 0 caches the lock of generation 7');
  // Node 1 frees the inode (EX on generation 7's lock) and creates the next one in its block.
  await nodes[1].locks.run('EX', async () => {
    await nodes[1].locks.reading(300);
    gens.set(300, 8);
  });
  await nodes[1].locks.run('EX', async () => void (await nodes[1].locks.writing(300, 8, true)));
  const before = nodes[1].glue.stackRequests;
  await nodes[1].locks.run('EX', async () => void (await nodes[1].locks.writing(301, 5, true)));
  t.equal(nodes[1].glue.stackRequests - before, 0, 'a created inode\'s lock costs no request (until node 1 gives something up)');
  // Node 0 still names generation 7: it takes that lock, finds 8 under it, and takes 8's.
  let sawEx = false;
  const invalidationsBefore = nodes[0].invalidations;
  await nodes[0].locks.run('PR', async () => {
    await nodes[0].locks.reading(300);
    sawEx = heldNames(nodes[1], 'EX').some((x) => x.endsWith('0000012c00000008'));
  });
  t.notOk(sawEx, 'node 1 gave generation 8\'s EX up before node 0 read');
  t.ok(heldNames(nodes[0]).some((x) => x.endsWith('0000012c00000008')), 'node 0 now holds the lock of generation 8');
  t.ok(nodes[0].invalidations > invalidationsBefore, 'and dropped what it cached under generation 7\'s lock');
});

t.test('an operation that started over after creating an inode locks the inode it creates next in that block', async (t) => {
  // Attempt 1 creates generation 20 in block 400, then finds inode 200 busy (held at EX on
  // node 1, out of order): it starts over, taking 200 and 400 first. The disk still says
  // generation 9 (the freed inode before), so attempt 2 holds 400's lock of generation 9 when
  // it creates generation 21 there: that new inode's own lock must be taken, not skipped.
  const gens: Generations = new Map([[400, 9]]);
  const { net, nodes } = await joinedWorld(t, { nodes: 2, seed: 12, delayMaxMs: 2 }, gens);
  // Held here: granted, or on its way with the grant certain (a new name, LKF.LOCAL).
  const heldNames = (n: Node): string[] => [...((n.glue as unknown as { resources: Map<string, { level: string; certain: string | null }> }).resources)]
    .filter(([, r]) => r.level !== 'NL' || r.certain !== null).map(([name]) => name);
  const busy = await nodes[1].glue.lock(nodes[1].glue.resource('M00000000000000000000c800000001'), 'EX');
  let attempts = 0;
  let namesAtCommit: string[] = [];
  const done = nodes[0].locks.run('EX', async () => {
    attempts += 1;
    await nodes[0].locks.writing(400, 19 + attempts, true);
    await nodes[0].locks.reading(200);
    namesAtCommit = heldNames(nodes[0]);
  });
  await net.sleep(50);
  busy.release();
  await nodes[1].glue.drop(busy.res);
  await done;
  t.equal(attempts, 2, 'it started over once');
  t.ok(namesAtCommit.some((x) => x.endsWith('0000019000000015')), `generation 21 of inode 400 is locked (held: ${namesAtCommit.join(' ')})`);
});

t.test('a lock naming another generation than the inode read under it: the operation starts over under the right one', async (t) => {
  const net = new SimNet({ nodes: 1, seed: 13, delayMaxMs: 1 });
  const { glue, dom } = glueOn(net, 0);
  t.teardown(() => {
    dom.abandon();
    net.close();
  });
  await dom.join();
  // What the check under the lock sees: generation 3 while `stale` (an image or value block
  // this node trusted), the truth (4) after.
  let stale = true;
  const locks = new InodeLocks(glue, {
    generation: async () => (stale ? 3 : 4), checkpoint: async () => undefined, invalidate: () => undefined, log: () => undefined,
  });
  await locks.run('PR', async () => void (await locks.reading(500)));
  let attempts = 0;
  await locks.run('PR', async () => {
    attempts += 1;
    await locks.reading(500);
    stale = false;
    locks.readInode(500, 4); // the inode block itself says 4
  });
  t.equal(attempts, 2, 'the attempt under generation 3\'s lock started over, the next one held 4\'s');
  await t.rejects(locks.run('EX', async () => {
    await locks.reading(500);
    await locks.writing(500, 5, false);
  }), /changed under the lock of generation 4/, 'a change of an inode whose lock names another generation is a bug');
});

t.test('extent locks: disjoint ranges of one inode are written at once, overlapping ones in turn', async (t) => {
  const { net, nodes } = await joinedWorld(t, { nodes: 2, seed: 12, delayMaxMs: 2 });
  const C = EXTENT_CHUNK_BYTES;
  let inside = 0;
  let maxInside = 0;
  const write = (n: Node, start: number, end: number): Promise<void> => n.locks.run('PR', async () => {
    await n.locks.reading(400);
    await n.locks.ranges(400, 1, start, end, 'EX');
    inside += 1;
    maxInside = Math.max(maxInside, inside);
    // Stay a while, in small steps (the simulated clock must not leap past the other node).
    for (let k = 0; k < 200 && maxInside < 2; k++) await net.sleep(1);
    inside -= 1;
  });
  // (A first round masters the names: the simulated clock runs ahead while a node's mastery
  // takes more than one macrotask, which would show as waiting.)
  for (const n of nodes) await write(n, 0, 2 * C + 1);
  maxInside = 0;
  await Promise.all([write(nodes[0], 0, C), write(nodes[1], C, 2 * C)]);
  t.equal(maxInside, 2, `two nodes wrote disjoint chunks at the same time (both holding M at PR): at most ${maxInside} at once`);
  maxInside = 0;
  // (Writers on one node exclude each other above: fs/posix.ts takes its local lock.)
  await Promise.all([write(nodes[0], 0, C + 1), write(nodes[1], C, 2 * C)]);
  t.equal(maxInside, 1, 'writers of a shared chunk took turns');
  // A change of the inode (M at EX) waits for every extent holder.
  let exInside = false;
  let overlap = false;
  await Promise.all([
    write(nodes[0], 0, C).then(() => undefined),
    nodes[1].locks.run('EX', async () => {
      await nodes[1].locks.reading(400);
      exInside = true;
      if (inside > 0) overlap = true;
      await net.sleep(5);
      exInside = false;
    }),
  ]);
  t.notOk(overlap || exInside, 'M at EX never overlapped an extent writer');
  // A reader's chunk wanted at EX elsewhere: the reader is told (fs/read-ahead.ts drops what it fetched).
  await nodes[0].locks.run('PR', async () => {
    await nodes[0].locks.reading(400);
    await nodes[0].locks.ranges(400, 1, 0, C, 'PR');
  });
  const left = nodes[0].extentsLeft;
  await write(nodes[1], 0, 1);
  t.ok(nodes[0].extentsLeft > left, 'the node reading a chunk hears that its extent lock left, when another node writes it');
  await t.rejects(nodes[0].locks.run('EX', async () => {
    await nodes[0].locks.reading(400);
    await nodes[0].locks.ranges(400, 1, 0, 1, 'EX');
  }), /needs no extent locks/, 'a scope holding M at EX takes no extent locks');
  await t.rejects(nodes[0].locks.run('PR', () => nodes[0].locks.ranges(401, 1, 0, 1, 'PR')), /without its M lock/, 'extent locks need the inode\'s M first');
});

t.test('a bounded lock cache: idle locks go back with what they covered, and no update is lost', async (t) => {
  const net = new SimNet({ nodes: 3, seed: 11, delayMaxMs: 2 });
  // Each node caches inode values (its "block cache"), keeps changes dirty until a
  // checkpoint writes them to the shared disk, and drops an inode's value when its lock
  // says so. A lock given back without its checkpoint or its invalidation loses updates.
  const disk = new Map<number, number>();
  const BOUND = 16;
  const nodes = [0, 1, 2].map((num) => {
    const { glue, dom } = glueOn(net, num);
    const cache = new Map<number, number>();
    const dirty = new Set<number>();
    const locks = new InodeLocks(glue, {
      generation: async () => 1,
      checkpoint: async () => {
        for (const b of dirty) disk.set(b, cache.get(b)!);
        dirty.clear();
      },
      invalidate: (b) => {
        if (dirty.has(b)) throw new Error(`assertion: inode ${b} invalidated while dirty`);
        cache.delete(b);
      },
      log: () => undefined,
    }, BOUND);
    return { glue, dom, locks, cache, dirty };
  });
  await joinAll(t, net, nodes);
  const INODE_COUNT = 60;
  const rounds = 120;
  const added = [0, 0, 0];
  const worker = async (id: number): Promise<void> => {
    const n = nodes[id];
    const rng = prng(500 + id);
    for (let r = 0; r < rounds; r++) {
      const b = 1000 + Math.floor(rng() * INODE_COUNT);
      const write = rng() < 0.7;
      await n.locks.run(write ? 'EX' : 'PR', async () => {
        await n.locks.reading(b);
        const v = n.cache.get(b) ?? disk.get(b) ?? 0;
        n.cache.set(b, v);
        if (!write) return;
        await net.sleep(rng() < 0.5 ? 0 : 1);
        n.cache.set(b, v + 1);
        n.dirty.add(b);
      });
      if (write) added[id] += 1;
    }
  };
  await Promise.all([0, 1, 2].map(worker));
  for (const n of nodes) await n.locks.settle();
  for (const [i, n] of nodes.entries()) {
    t.ok(n.locks.cachedInodes <= BOUND, `node ${i} keeps ${n.locks.cachedInodes} inodes' locks (bound ${BOUND})`);
    t.ok(n.glue.cachedCount <= BOUND, `node ${i}'s lock cache holds ${n.glue.cachedCount} resources`);
    t.ok(n.locks.stats.evicted > 0, `node ${i} gave back ${n.locks.stats.evicted} idle locks`);
  }
  // Everything still dirty reaches the disk as the remaining locks go.
  for (const n of nodes) await n.glue.shutdown().catch(() => undefined);
  for (const n of nodes) for (const b of n.dirty) disk.set(b, n.cache.get(b)!);
  const total = [...disk.values()].reduce((s, v) => s + v, 0);
  t.equal(total, added.reduce((s, v) => s + v, 0), 'every increment is on the disk (none lost to a lock given back)');
});

t.test('inode value blocks: encoded and decoded, version 0 when they cannot carry an inode', async (t) => {
  const lvb = Buffer.alloc(64, 0xaa);
  const ino = lvbAttrs(7, 123456789012);
  encodeInodeLvb(lvb, ino);
  t.same(decodeInodeLvb(lvb), ino, 'every field comes back');
  encodeInodeLvb(lvb, null);
  t.same(lvb, Buffer.alloc(64), 'nothing to say: all zero');
  t.equal(decodeInodeLvb(lvb), null, 'a zeroed value block (o2dlm after a dead EX holder) says nothing');
  encodeInodeLvb(lvb, { ...ino, mtime: { sec: -1, nsec: 0 } });
  t.equal(decodeInodeLvb(lvb), null, 'a time before 1970 is not carried');
  encodeInodeLvb(lvb, { ...ino, rdev: 2 ** 33 });
  t.equal(decodeInodeLvb(lvb), null, 'a device number above 32 bits is not carried');
  encodeInodeLvb(lvb, ino);
  lvb[0] = 9;
  t.equal(decodeInodeLvb(lvb), null, 'an unknown version is not trusted');
  t.throws(() => encodeInodeLvb(Buffer.alloc(32), ino), RangeError);
});

/** Attributes of a test inode whose size (and mtime) count its changes. */
function lvbAttrs(generation: number, size: number): InodeLvb {
  return {
    generation, size, clusters: Math.ceil(size / 4096), mode: 0o100644, uid: 1000, gid: 100, links: 1, rdev: 0,
    atime: { sec: 1_700_000_000, nsec: 1 }, ctime: { sec: 1_700_000_000 + (size % 1_000_000), nsec: 999_999_999 }, mtime: { sec: 1_700_000_000 + (size % 1_000_000), nsec: 5 },
  };
}

t.test('inode value blocks: a stat after another node\'s change is answered without a read, never stale', async (t) => {
  const net = new SimNet({ nodes: 3, seed: 21, delayMaxMs: 2 });
  // Each node holds inode images (its block cache: read under the lock, changed by its own
  // writes, dropped at NL, and at random while held, as a bounded cache would), dirty until
  // a checkpoint writes them to the shared disk. A stat answered from a value block must
  // say what a read of the inode would: the node's own image, else the disk.
  const disk = new Map<number, InodeLvb>();
  // More inodes than the lock cache keeps: locks are also given back at EX (evicted).
  const INODE_COUNT = 24;
  for (let b = 0; b < INODE_COUNT; b++) disk.set(2000 + b, lvbAttrs(1, 0));
  const nodes = [0, 1, 2].map((num) => {
    const { glue, dom } = glueOn(net, num);
    const images = new Map<number, InodeLvb>();
    const dirty = new Set<number>();
    const locks = new InodeLocks(glue, {
      generation: async () => 1,
      checkpoint: async () => {
        for (const b of dirty) disk.set(b, images.get(b)!);
        dirty.clear();
      },
      invalidate: (b) => void images.delete(b),
      attributes: (b, generation) => {
        const i = images.get(b);
        return i && i.generation === generation ? i : null;
      },
      holdsImage: (b) => images.has(b),
      log: () => undefined,
    }, 16);
    return { glue, dom, locks, images, dirty, reads: 0 };
  });
  await joinAll(t, net, nodes);
  const stale: string[] = [];
  const worker = async (id: number): Promise<void> => {
    const n = nodes[id];
    const rng = prng(700 + id);
    for (let r = 0; r < 300; r++) {
      const b = 2000 + Math.floor(rng() * INODE_COUNT);
      const write = rng() < 0.4;
      await n.locks.run(write ? 'EX' : 'PR', async () => {
        const known = await n.locks.attributes(b);
        const truth = n.images.get(b) ?? disk.get(b)!;
        if (known && JSON.stringify(known) !== JSON.stringify(truth)) stale.push(`node ${id} round ${r}: inode ${b} size ${known.size}, truly ${truth.size}`);
        if (!write) return;
        if (!n.images.has(b)) n.reads += 1;
        await n.locks.writing(b, 1, false);
        await net.sleep(rng() < 0.5 ? 0 : 1);
        n.images.set(b, lvbAttrs(1, truth.size + 1));
        n.dirty.add(b);
        // Evicted from the block cache while the lock stays (written out first).
        if (rng() < 0.3) {
          disk.set(b, n.images.get(b)!);
          n.dirty.delete(b);
          n.images.delete(b);
        }
      });
    }
  };
  await Promise.all([0, 1, 2].map(worker));
  t.same(stale, [], 'no stat from a value block said other than a read would');
  const trusted = nodes.map((n) => n.locks.stats.lvbTrusted);
  const published = nodes.map((n) => n.locks.stats.lvbPublished);
  t.ok(trusted.every((x) => x > 0), `every node answered stats from value blocks (${trusted.join('/')})`);
  t.ok(published.every((x) => x > 0), `every node published value blocks leaving EX (${published.join('/')})`);
  t.ok(nodes.every((n) => n.locks.stats.evicted > 0), `every node gave locks back (${nodes.map((n) => n.locks.stats.evicted).join('/')})`);
});

t.test('an inode made and freed here: its new lock is never told to the lock manager, and goes when the freeing scope ends', async (t) => {
  const gens: Generations = new Map([[700, 3]]);
  const { nodes } = await joinedWorld(t, { nodes: 2, seed: 13, delayMaxMs: 2 }, gens);
  const n = nodes[0];
  const before = n.glue.stackRequests;
  await n.locks.run('EX', async () => void (await n.locks.writing(700, 3, true)));
  const name = lockName(LOCK_TYPE.meta, 700, 3);
  t.ok(n.locks.ownSinceCreated(700, 3), 'nobody else ever knew it');
  await n.locks.run('EX', async () => {
    await n.locks.reading(700);
    n.locks.freed(700, 3);
    t.ok(n.glue.cached(name), 'still held while the scope runs');
  });
  await n.locks.settle();
  t.equal(n.glue.cached(name), undefined, 'gone once the scope ended');
  t.equal(n.glue.stackRequests - before, 0, 'not one request');
  t.equal(n.checkpoints, 0, 'and no checkpoint (no other node can take it)');
  // A lock the lock manager knows stays cached when its inode is freed.
  await n.locks.run('EX', async () => void (await n.locks.reading(701)));
  await n.locks.run('EX', async () => {
    await n.locks.reading(701);
    n.locks.freed(701, 1);
  });
  await n.locks.settle();
  t.ok(n.glue.cached(lockName(LOCK_TYPE.meta, 701, 1)), 'a known lock stays cached');
});
