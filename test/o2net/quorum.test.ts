// Quorum: the decision rule checked exhaustively against an independent statement of it,
// partitions never leave two surviving groups, and the hold/delay state machine driven by
// a manual clock through splits and transitions.
import t from 'tap';
import { Quorum, QuorumTimers, QuorumVerdict, decideQuorum, defaultQuorumDelayMs } from '../../dlm/o2cb/quorum';

class ManualClock implements QuorumTimers {
  nowMs = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { atMs: number; fn: () => void }>();
  set(fn: () => void, delayMs: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { atMs: this.nowMs + delayMs, fn });
    return id;
  }
  clear(h: unknown): void {
    this.timers.delete(h as number);
  }
  pending(): number {
    return this.timers.size;
  }
  advance(ms: number): void {
    const end = this.nowMs + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      let next: [number, { atMs: number; fn: () => void }] | null = null;
      for (const e of this.timers) if (e[1].atMs <= end && (!next || e[1].atMs < next[1].atMs)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.nowMs = next[1].atMs;
      next[1].fn();
    }
    this.nowMs = end;
  }
}

const DELAY_MS = 1000;

function mk(thisNode: number, clock: ManualClock) {
  const q = new Quorum({ thisNode, quorumDelayMs: DELAY_MS, timers: clock });
  const fences: string[] = [];
  const decisions: QuorumVerdict[] = [];
  q.on('fence', (r) => fences.push(r));
  q.on('decision', (v) => decisions.push(v));
  return { q, fences, decisions };
}

/** A node that sees every node in `all` heartbeating and is connected to `connected`. */
function steady(thisNode: number, all: number[], connected: number[], clock: ManualClock) {
  const m = mk(thisNode, clock);
  for (const n of all) {
    if (n === thisNode) continue;
    m.q.heartbeatUp(n);
    if (connected.includes(n)) m.q.connUp(n);
  }
  return m;
}

function subsets(items: number[]): number[][] {
  const out: number[][] = [];
  for (let mask = 0; mask < 1 << items.length; mask++) out.push(items.filter((_, i) => mask & (1 << i)));
  return out;
}

t.test('decideQuorum matches the rule for every membership of up to 6 nodes', async (t) => {
  const all = [0, 1, 2, 3, 4, 5];
  let cases = 0;
  let mismatches = 0;
  for (const self of all) {
    const others = all.filter((n) => n !== self);
    for (const hbOthers of subsets(others)) {
      const hb = new Set([self, ...hbOthers]);
      for (const connOthers of subsets(hbOthers)) {
        const conn = new Set([self, ...connOthers]);
        const v = decideQuorum(self, hb, conn);
        // The rule restated: survive with a strict majority, or exactly half holding the
        // lowest heartbeating node; a lone node always survives.
        const n = hb.size;
        const c = conn.size;
        const lowest = Math.min(...hb);
        const survive = n === 1 || 2 * c > n || (2 * c === n && conn.has(lowest));
        if (v.fence === survive) mismatches++;
        cases++;
      }
    }
  }
  t.equal(mismatches, 0, `${cases} memberships checked`);
  // Connections to nodes that are not heartbeating do not count.
  t.equal(decideQuorum(1, new Set([0, 1]), new Set([1, 5, 6])).fence, true);
  t.equal(decideQuorum(1, new Set([1]), new Set([1])).fence, false, 'alone: never fences');
  t.equal(decideQuorum(1, new Set([0, 2]), new Set([1])).fence, false, 'not heartbeating itself: no decision');
});

// Every way to split up to 6 fully meshed nodes into isolated groups: at most one group
// survives, and when some group survives it is the one the rule names.
t.test('no partition of up to 6 nodes leaves two surviving groups', async (t) => {
  function* partitions(items: number[]): Generator<number[][]> {
    if (items.length === 0) {
      yield [];
      return;
    }
    const [first, ...rest] = items;
    for (const p of partitions(rest)) {
      for (let i = 0; i < p.length; i++) yield [...p.slice(0, i), [first, ...p[i]], ...p.slice(i + 1)];
      yield [[first], ...p];
    }
  }
  let checked = 0;
  for (let size = 1; size <= 6; size++) {
    const nodes = [...Array(size).keys()].map((i) => i * 3 + 1); // not starting at 0
    for (const p of partitions(nodes)) {
      const hb = new Set(nodes);
      const surviving = p.filter((group) => group.every((self) => !decideQuorum(self, hb, new Set(group)).fence));
      if (surviving.length > 1) t.fail(`split ${JSON.stringify(p)} leaves ${surviving.length} groups running`);
      // Each group decides uniformly.
      for (const g of p) {
        const verdicts = new Set(g.map((self) => decideQuorum(self, hb, new Set(g)).fence));
        if (verdicts.size !== 1) t.fail(`group ${JSON.stringify(g)} of ${JSON.stringify(p)} disagrees`);
      }
      checked++;
    }
  }
  t.pass(`${checked} partitions checked`);
});

t.test('2-node split: the lower node survives, the higher fences after the delay', async (t) => {
  const clock = new ManualClock();
  const a = steady(0, [0, 1], [1], clock);
  const b = steady(1, [0, 1], [0], clock);
  a.q.connErr(1);
  b.q.connErr(0);
  clock.advance(DELAY_MS - 1);
  t.same([a.decisions.length, b.decisions.length], [0, 0], 'nothing decided inside the delay');
  clock.advance(1);
  t.same(a.fences, []);
  t.equal(a.decisions.length, 1);
  t.equal(a.decisions[0].fence, false);
  t.equal(b.fences.length, 1);
  t.match(b.fences[0], /node 1 lost quorum: connected to half \(1 of 2\).*not to the lowest node 0/);
  t.ok(b.q.hasFenced());
});

t.test('3-node split 2|1: the lone node fences, the pair continues', async (t) => {
  const clock = new ManualClock();
  const all = [0, 1, 2];
  const n0 = steady(0, all, [1, 2], clock);
  const n1 = steady(1, all, [0, 2], clock);
  const n2 = steady(2, all, [0, 1], clock);
  n0.q.connErr(2);
  n1.q.connErr(2);
  n2.q.connErr(0);
  clock.advance(300); // the second loss comes a little later: one delay per node
  n2.q.connErr(1);
  clock.advance(DELAY_MS - 300);
  t.same(n2.decisions, [], 'node 2 still holds for node 1');
  clock.advance(300);
  t.same([n0.fences, n1.fences], [[], []]);
  t.equal(n0.decisions[0].connected, 2);
  t.equal(n2.fences.length, 1);
  t.match(n2.fences[0], /connected to only 1 of 3 heartbeating nodes; 2 are needed/);
  // Once node 2 is gone the survivors see it stop heartbeating: no further decisions.
  n0.q.heartbeatDown(2);
  n1.q.heartbeatDown(2);
  clock.advance(10 * DELAY_MS);
  t.equal(n0.decisions.length, 1);
});

t.test('4-node split 2|2: the half with the lowest node survives', async (t) => {
  const clock = new ManualClock();
  const all = [0, 1, 2, 3];
  const groups = [
    [0, 1],
    [2, 3],
  ];
  const ms = all.map((n) => {
    const mine = groups.find((g) => g.includes(n)) as number[];
    const m = steady(n, all, all.filter((x) => x !== n), clock);
    for (const x of all) if (!mine.includes(x)) m.q.connErr(x);
    return m;
  });
  clock.advance(DELAY_MS);
  t.same(
    ms.map((m) => m.fences.length),
    [0, 0, 1, 1],
  );
  t.match(ms[2].fences[0], /half \(2 of 4\).*not to the lowest node 0/);
  // 4-node 3|1: the three continue, the one fences.
  const c2 = new ManualClock();
  const lone = steady(0, all, [1, 2, 3], c2);
  for (const x of [1, 2, 3]) lone.q.connErr(x);
  const three = steady(3, all, [0, 1, 2], c2);
  three.q.connErr(0);
  c2.advance(DELAY_MS);
  t.equal(lone.fences.length, 1, 'node 0 alone fences even though it is the lowest');
  t.equal(three.fences.length, 0);
});

t.test('transitions: heartbeat death or reconnection inside the delay cancels the decision', async (t) => {
  const clock = new ManualClock();
  const all = [0, 1, 2];
  const n2 = steady(2, all, [0, 1], clock);
  n2.q.connErr(0);
  n2.q.connErr(1);
  clock.advance(DELAY_MS / 2);
  n2.q.heartbeatDown(0); // node 0 really died
  n2.q.connUp(1); // and node 1 came back
  clock.advance(10 * DELAY_MS);
  t.same(n2.decisions, [], 'no decision needed');
  t.equal(clock.pending(), 0, 'no timers left');
  t.same(n2.q.state().holds, []);

  // A node heartbeating but never connected holds decisions off until it connects.
  const c = new ManualClock();
  const n1 = steady(1, [0, 1], [0], c);
  n1.q.heartbeatUp(2); // heartbeating, no connection yet: a hold
  n1.q.connErr(0);
  c.advance(DELAY_MS);
  t.same(n1.decisions, [], 'held off by node 2 in transition');
  t.equal(n1.q.state().pending, true, 'a decision is owed');
  n1.q.connUp(2);
  t.equal(n1.decisions.length, 1, 'decided as soon as the last hold cleared');
  t.equal(n1.decisions[0].fence, false, '2 of 3 connected');

  // The same, but node 2 dies instead: now it is a 2-node cluster and node 1 lacks node 0.
  const c3 = new ManualClock();
  const m = steady(1, [0, 1], [0], c3);
  m.q.heartbeatUp(2);
  m.q.connErr(0);
  c3.advance(DELAY_MS);
  m.q.heartbeatDown(2);
  t.equal(m.fences.length, 1, 'fences once node 2 leaves and only node 0 (unreachable, lowest) remains');

  // Connected without a heartbeat is a transition too.
  const c4 = new ManualClock();
  const k = steady(0, [0, 1, 2], [1, 2], c4);
  k.q.connUp(3);
  k.q.connErr(1);
  c4.advance(DELAY_MS);
  t.same(k.decisions, [], 'held by node 3 (connected, not heartbeating)');
  k.q.heartbeatUp(3);
  t.equal(k.decisions.length, 1);
  t.equal(k.decisions[0].fence, false, '3 of 4 connected');
});

t.test('a node alone never fences; fence fires once; close stops timers', async (t) => {
  const clock = new ManualClock();
  const solo = mk(0, clock);
  solo.q.heartbeatUp(1);
  solo.q.connErr(1);
  solo.q.heartbeatDown(1);
  clock.advance(10 * DELAY_MS);
  t.same(solo.fences, []);

  const b = steady(1, [0, 1], [0], clock);
  b.q.connErr(0);
  clock.advance(DELAY_MS);
  t.equal(b.fences.length, 1);
  b.q.connUp(0);
  b.q.connErr(0);
  clock.advance(DELAY_MS);
  t.equal(b.fences.length, 1, 'fence is emitted at most once');

  const c = steady(1, [0, 1], [0], clock);
  c.q.connErr(0);
  c.q.close();
  clock.advance(10 * DELAY_MS);
  t.same(c.fences, []);
});

t.test('options: the default delay follows OCFS2, bad input is refused', async (t) => {
  t.equal(defaultQuorumDelayMs(31, 2000), 66_000);
  t.equal(new Quorum({ thisNode: 0, heartbeatDeadThreshold: 31, heartbeatIntervalMs: 2000 }).quorumDelayMs, 66_000);
  t.throws(() => new Quorum({ thisNode: 0 }), TypeError);
  t.throws(() => new Quorum({ thisNode: 300, quorumDelayMs: 1 }), RangeError);
  const q = new Quorum({ thisNode: 0, quorumDelayMs: 1 });
  t.throws(() => q.heartbeatUp(-1), RangeError);
  q.close();
});
