// o2hb liveness rules, driven sample by sample (no disk, no timers).
import t from 'tap';
import { SIG } from '../../fs/format/constants';
import { encodeHeartbeat } from '../../fs/format/heartbeat';
import { HbSample, LIVE_THRESHOLD, SlotEvent, SlotTracker, sampleOf } from '../../dlm/o2cb/o2hb-slots';

const DEAD = 5;
const OUR_DEAD_MS = 500;
const ok = (seq: number, hbGeneration = 77, deadMs = OUR_DEAD_MS): HbSample => ({ kind: 'ok', seq, hbGeneration, deadMs });
const bad: HbSample = { kind: 'bad', why: 'checksum mismatch' };
const kinds = (evs: SlotEvent[]): string[] => evs.filter((e) => e.type !== 'log').map((e) => (e.type === 'down' ? `down:${e.reason}` : e.type));

t.test('up after LIVE_THRESHOLD changes, the first block counting as one', async (t) => {
  t.equal(LIVE_THRESHOLD, 2);
  const s = new SlotTracker(3, DEAD, OUR_DEAD_MS);
  t.same(kinds(s.sample(ok(10))), []);
  t.equal(s.live, false);
  t.same(kinds(s.sample(ok(11))), ['up']);
  t.equal(s.live, true);
  t.same(kinds(s.sample(ok(12))), [], 'no second up');
});

t.test('dead after deadThreshold consecutive unchanged samples, not one earlier', async (t) => {
  const s = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s.sample(ok(1));
  s.sample(ok(2));
  t.equal(s.live, true);
  for (let i = 1; i < DEAD; i++) t.same(kinds(s.sample(ok(2))), [], `miss ${i} of ${DEAD}`);
  t.same(kinds(s.sample(ok(2))), ['down:timeout']);
  t.equal(s.live, false);
  t.same(kinds(s.sample(ok(2))), [], 'still dead, no repeat');
});

t.test('a change resets the miss count', async (t) => {
  const s = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s.sample(ok(1));
  s.sample(ok(2));
  for (let round = 0; round < 3; round++) {
    for (let i = 1; i < DEAD; i++) s.sample(ok(2 + round));
    s.sample(ok(3 + round));
  }
  t.equal(s.live, true);
});

t.test('a stale block of a crashed node never comes up', async (t) => {
  const s = new SlotTracker(2, DEAD, OUR_DEAD_MS);
  for (let i = 0; i < 4 * DEAD; i++) t.same(kinds(s.sample(ok(42))), []);
  t.equal(s.live, false);
});

t.test('bad blocks are misses: they never keep a node alive, and are logged once per stretch', async (t) => {
  const s = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s.sample(ok(1));
  s.sample(ok(2));
  const logs: string[] = [];
  let down = 0;
  for (let i = 0; i < DEAD; i++) {
    for (const e of s.sample(bad)) {
      if (e.type === 'log') logs.push(e.line);
      if (e.type === 'down') down++;
    }
  }
  t.equal(down, 1, 'down after deadThreshold bad samples');
  t.equal(logs.length, 1);
  t.match(logs[0], /node 1: unreadable heartbeat block.*miss/);
  // A single bad sample on a live node is survivable.
  const s2 = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s2.sample(ok(1));
  s2.sample(ok(2));
  t.same(kinds(s2.sample(bad)), []);
  t.same(kinds(s2.sample(ok(3))), []);
  t.equal(s2.live, true);
  // Bad samples never bring a node up.
  const s3 = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  for (let i = 0; i < 10; i++) s3.sample(bad);
  t.equal(s3.live, false);
});

t.test('generation change on a live slot: down, then up after one more change', async (t) => {
  const s = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s.sample(ok(1, 100));
  s.sample(ok(2, 100));
  t.same(kinds(s.sample(ok(3, 200))), ['down:generation']);
  t.same(kinds(s.sample(ok(4, 200))), ['up']);
});

t.test('generation 0 (the clean-stop mark) takes a live node down at once and never brings it up', async (t) => {
  const s = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  s.sample(ok(1));
  s.sample(ok(2));
  t.same(kinds(s.sample(ok(3, 0, 0))), ['down:clean']);
  t.same(kinds(s.sample(ok(3, 0, 0))), []);
  const fresh = new SlotTracker(1, DEAD, OUR_DEAD_MS);
  t.same(kinds(fresh.sample(ok(0, 0, 0))), [], 'mkfs state');
  t.same(kinds(fresh.sample(ok(5, 0, 0))), []);
  t.equal(fresh.live, false);
});

t.test('a different advertised dead time is warned about once per generation', async (t) => {
  const s = new SlotTracker(4, DEAD, OUR_DEAD_MS);
  const lines = [ok(1, 9, 900), ok(2, 9, 900), ok(3, 9, 900)].flatMap((x) => s.sample(x)).filter((e) => e.type === 'log');
  t.equal(lines.length, 1);
  t.match((lines[0] as { line: string }).line, /node 4 advertises a dead time of 900 ms but this node uses 500 ms/);
  t.equal(s.live, true, 'a mismatch is a warning, not a refusal');
});

t.test('sampleOf checks signature, CRC, block number, volume and node number', async (t) => {
  const bs = 512;
  const good = encodeHeartbeat({ blkno: 100, fsGeneration: 0xabc, seq: 7, nodeNum: 3, deadMs: 500, hbGeneration: 99, timeMs: 1 }, bs);
  t.same(sampleOf(good, 100, 0xabc, 3), { kind: 'ok', seq: 7, hbGeneration: 99, deadMs: 500 });
  const flipped = Buffer.from(good);
  flipped[0x30] ^= 1;
  t.match(sampleOf(flipped, 100, 0xabc, 3), { kind: 'bad', why: /checksum/ });
  t.match(sampleOf(good, 101, 0xabc, 3), { kind: 'bad', why: /claims to be block 100/ });
  t.match(sampleOf(good, 100, 0xdef, 3), { kind: 'bad', why: /another volume/ });
  t.match(sampleOf(good, 100, 0xabc, 4), { kind: 'bad', why: /claims node 3/ });
  t.match(sampleOf(Buffer.alloc(bs), 100, 0xabc, 3), { kind: 'bad', why: /signature/ });
  t.equal(SIG.heartbeat, 'O2HBEAT1');
});
