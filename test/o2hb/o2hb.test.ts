// o2hb on a real o2cb volume (a sparse image file), several heartbeats in this process: up,
// clean stop, crash, restart, slot collision, self-fence on hung or failing writes, corrupt
// peer blocks, dead-time mismatch. Child-process peers are in peers.test.ts.
import { closeSync, existsSync, openSync, readSync, writeSync } from 'node:fs';
import t from 'tap';
import { decodeHeartbeat, encodeHeartbeat } from '../../fs/format/heartbeat';
import { heartbeatRegionOf, HbRegion, O2Hb, O2HbError } from '../../dlm/o2cb/o2hb';
import { makeVolume, nowMs, sleep, startHb, waitFor } from './helpers';

const I = 100; // intervalMs
const DT = 10; // deadThreshold: dead time 1 s

function readSlot(region: HbRegion, node: number): Buffer {
  const fd = openSync(region.devicePath, 'r');
  try {
    const buf = Buffer.alloc(region.blockSizeBytes);
    readSync(fd, buf, 0, buf.length, region.firstBlockOffsetBytes + node * region.blockSizeBytes);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function writeSlot(region: HbRegion, node: number, buf: Buffer): void {
  const fd = openSync(region.devicePath, 'r+');
  try {
    writeSync(fd, buf, 0, buf.length, region.firstBlockOffsetBytes + node * region.blockSizeBytes);
  } finally {
    closeSync(fd);
  }
}

t.test('heartbeatRegionOf reads the region from the volume', async (t) => {
  const { region, devicePath } = await makeVolume(t);
  t.equal(region.devicePath, devicePath);
  t.match(region.uuid, /^[0-9A-F]{32}$/);
  t.equal(region.blocks, 255);
  t.equal(region.blockSizeBytes, 4096);
  t.equal(region.firstBlockOffsetBytes % region.blockSizeBytes, 0);
  const hb = decodeHeartbeat(readSlot(region, 7));
  t.equal(hb.nodeNum, 7, 'block 7 of the region is node 7\'s (as mkfs wrote it)');
  t.equal(hb.fsGeneration, region.fsGeneration >>> 0);
  t.equal(hb.blkno, region.firstBlockOffsetBytes / region.blockSizeBytes + 7);
  t.same(await heartbeatRegionOf(`file://${devicePath}`), region, 'file:// URL');
  await t.rejects(heartbeatRegionOf('iscsi://h/iqn.x/0'), { name: 'O2HbError', code: 'EINVAL' });
  await t.rejects(heartbeatRegionOf(`${devicePath}.missing`));
});

t.test('start validates its options', async (t) => {
  const { region } = await makeVolume(t);
  const base = { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT };
  await t.rejects(O2Hb.start({ ...base, thisNode: 255 }), { code: 'EINVAL' });
  await t.rejects(O2Hb.start({ ...base, nodes: [1, -1] }), { code: 'EINVAL' });
  await t.rejects(O2Hb.start({ ...base, deadThreshold: 1 }), { code: 'EINVAL' });
  await t.rejects(O2Hb.start({ ...base, intervalMs: 1 }), { code: 'EINVAL' });
  await t.rejects(O2Hb.start({ ...base, writeTimeoutMs: I * DT }), /below the dead time/, 'write timeout must beat the dead time');
  await t.rejects(O2Hb.start({ ...base, region: { ...region, devicePath: region.devicePath + '.nope' } }), { code: 'EINVAL' });
});

t.test('two heartbeats see each other up, steady means existing peers are up, blocks carry what they should', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1, 2], intervalMs: I, deadThreshold: DT });
  t.equal(a.hb.writeTimeoutMs, I * (DT - 1), 'default write timeout');
  t.equal(a.hb.deadMs, I * DT);
  await a.hb.steady();
  t.same(a.hb.liveNodes(), [], 'alone');
  const beginB = nowMs();
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1, 2], intervalMs: I, deadThreshold: DT });
  const startedB = nowMs();
  t.comment(`b's start (worker boot + collision check) took ${startedB - beginB} ms`);
  await b.hb.steady();
  t.same(b.hb.liveNodes(), [0], 'a node heartbeating before we started is up once we are steady');
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  const upAt = a.events.find((e) => e.ev === 'up' && e.node === 1)!.atMs;
  // b writes its first block as soon as start resolves; a needs two changes, i.e. about
  // two of its passes.
  t.ok(upAt - startedB < 4 * I, `a saw b up ${upAt - startedB} ms after b started`);
  t.same(a.events.filter((e) => e.ev !== 'up'), [], 'no down, no fence');
  const blk = decodeHeartbeat(readSlot(region, 1));
  t.equal(blk.hbGeneration, b.hb.hbGeneration);
  t.equal(blk.nodeNum, 1);
  t.equal(blk.deadMs, I * DT);
  const later = await (async () => { await sleep(3 * I); return decodeHeartbeat(readSlot(region, 1)); })();
  t.ok(later.seq >= blk.seq + 2, `seq advances (${blk.seq} -> ${later.seq})`);
  t.not(a.hb.hbGeneration, b.hb.hbGeneration);
});

t.test('clean stop: the peer reports down at once; the block carries the leave mark', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  const stopAt = nowMs();
  await b.hb.stop();
  t.equal(b.hb.state, 'stopped');
  t.same(b.hb.liveNodes(), []);
  const mark = decodeHeartbeat(readSlot(region, 1));
  t.equal(mark.hbGeneration, 0, 'generation 0 = left cleanly');
  await waitFor(() => a.events.some((e) => e.ev === 'down'), 4 * I, 'a sees b down');
  const down = a.events.find((e) => e.ev === 'down')!;
  t.match(down, { node: 1, reason: 'clean' });
  t.ok(down.atMs - stopAt < 3 * I, `down ${down.atMs - stopAt} ms after stop (dead time is ${I * DT})`);
  await b.hb.stop(); // idempotent
  await t.rejects(b.hb.steady(), { code: 'ESTOPPED' });
});

t.test('crash (unclean stop): the peer reports down after deadThreshold unchanged samples', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  const stopAt = nowMs();
  await b.hb.stop({ clean: false });
  t.not(decodeHeartbeat(readSlot(region, 1)).hbGeneration, 0, 'no leave mark');
  await waitFor(() => a.events.some((e) => e.ev === 'down'), (DT + 6) * I, 'a sees b down');
  const down = a.events.find((e) => e.ev === 'down')!;
  t.match(down, { node: 1, reason: 'timeout' });
  const tookMs = down.atMs - stopAt;
  t.ok(tookMs >= (DT - 2) * I && tookMs <= (DT + 4) * I, `down after ${tookMs} ms, dead time ${DT * I} ms`);
  t.same(a.hb.liveNodes(), []);
});

t.test('restart with a new generation: down (generation), then up, well before the dead time', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: 40 });
  const b1 = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: 40 });
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  await b1.hb.stop({ clean: false });
  const b2 = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: 40 });
  t.not(b2.hb.hbGeneration, b1.hb.hbGeneration);
  await waitFor(() => a.events.filter((e) => e.node === 1).length >= 3, 20 * I, 'down and up again');
  t.same(a.events.map((e) => [e.ev, e.node, e.reason]), [['up', 1, undefined], ['down', 1, 'generation'], ['up', 1, undefined]]);
  t.same(a.hb.liveNodes(), [1]);
});

t.test('slot collision: a second writer for the same node is refused at start; a foreign block at run time fences', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 3, nodes: [3, 4], intervalMs: I, deadThreshold: DT });
  await t.rejects(O2Hb.start({ region, thisNode: 3, nodes: [3, 4], intervalMs: I, deadThreshold: DT, log: () => undefined }),
    { name: 'O2HbError', code: 'EBUSY', message: /another node is heartbeating in node 3's slot/ });
  t.equal(a.hb.state, 'running', 'the refused start did not disturb the running one');
  // Another host writes our slot under us.
  const blkno = region.firstBlockOffsetBytes / region.blockSizeBytes + 3;
  writeSlot(region, 3, encodeHeartbeat({ blkno, fsGeneration: region.fsGeneration, seq: 999999, nodeNum: 3, deadMs: I * DT, hbGeneration: 12345, timeMs: Date.now() }, region.blockSizeBytes));
  await waitFor(() => a.hb.state === 'fenced', 4 * I, 'fence');
  t.match(a.events.find((e) => e.ev === 'fence')?.reason, /another node is heartbeating in our slot.*generation 12345/);
  t.ok(a.logs.some((l) => /FENCE: another node is heartbeating in our slot/.test(l)));
  await t.rejects(a.hb.steady(), { code: 'ESTOPPED' });
  await a.hb.stop();
  t.equal(decodeHeartbeat(readSlot(region, 3)).hbGeneration, 12345, 'a fenced node wrote nothing more (no leave mark over the other writer)');
});

t.test('a hung write fences this node, before the peer may declare it dead', async (t) => {
  const { region } = await makeVolume(t);
  const interval = 200; // a whole interval of margin between the fence and the dead time
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: interval, deadThreshold: DT });
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: interval, deadThreshold: DT });
  await waitFor(() => b.hb.liveNodes().includes(0), 10 * interval, 'b sees a');
  const stallAt = nowMs();
  a.hb.testHooks.stallNextWrite(60_000);
  await waitFor(() => a.hb.state === 'fenced', (DT + 3) * interval, 'a fences');
  const fence = a.events.find((e) => e.ev === 'fence')!;
  t.match(fence.reason, /heartbeat write has not completed for \d+ ms \(limit 1800 ms\)/);
  const tookMs = fence.atMs - stallAt;
  // The clock runs from the last completed write, up to one interval before the stall.
  t.ok(tookMs >= (DT - 3) * interval && tookMs <= (DT + 1) * interval, `fenced ${tookMs} ms after the stall began`);
  await waitFor(() => b.events.some((e) => e.ev === 'down'), (DT + 4) * interval, 'b sees a down');
  const down = b.events.find((e) => e.ev === 'down')!;
  t.match(down, { node: 0, reason: 'timeout' });
  t.ok(fence.atMs < down.atMs, `fence (${fence.atMs - stallAt} ms) before the peer declared death (${down.atMs - stallAt} ms)`);
  await a.hb.stop(); // the stalled worker wakes on the abort and exits
});

t.test('failing writes fence too; a few failures inside the timeout do not', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0], intervalMs: I, deadThreshold: DT });
  await a.hb.steady();
  a.hb.testHooks.failNextWrites(3);
  await sleep(8 * I);
  t.equal(a.hb.state, 'running', '3 failed writes < write timeout');
  t.ok(a.logs.some((l) => /heartbeat write failed: EIO: injected/.test(l)));
  t.ok(a.logs.some((l) => /heartbeat writes succeed again/.test(l)));
  a.hb.testHooks.failNextWrites(1000);
  await waitFor(() => a.hb.state === 'fenced', (DT + 5) * I, 'fence');
  t.match(a.events.find((e) => e.ev === 'fence')?.reason, /write has not completed/);
});

t.test('a corrupt peer block is a miss, not a crash and not a sign of life', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1, 2], intervalMs: I, deadThreshold: DT });
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1, 2], intervalMs: I, deadThreshold: DT });
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  // A torn block while b's writes pause for 3 intervals (inside its write timeout): a counts
  // misses and keeps b up; b's next write repairs it.
  b.hb.testHooks.stallNextWrite(3 * I);
  await sleep(I / 2);
  const torn = readSlot(region, 1);
  torn.fill(0xee, 0x20, 0x40);
  writeSlot(region, 1, torn);
  await sleep(6 * I);
  t.same(a.hb.liveNodes(), [1]);
  t.equal(b.hb.state, 'running');
  t.ok(a.logs.some((l) => /node 1: heartbeat block is valid again/.test(l)), 'repaired');
  t.ok(a.logs.some((l) => /node 1: unreadable heartbeat block \(counted as a miss\)/.test(l)), 'logged');
  // b crashes and its slot keeps changing, but only into garbage: a still declares it dead.
  await b.hb.stop({ clean: false });
  const stopAt = nowMs();
  let i = 0;
  while (!a.events.some((e) => e.ev === 'down') && nowMs() - stopAt < (DT + 6) * I) {
    const junk = Buffer.alloc(region.blockSizeBytes, i++ & 0xff);
    writeSlot(region, 1, junk);
    await sleep(I / 2);
  }
  t.match(a.events.find((e) => e.ev === 'down'), { node: 1, reason: 'timeout' });
  // Garbage in a never-used slot never brings a node up.
  for (let k = 0; k < 5; k++) {
    writeSlot(region, 2, Buffer.alloc(region.blockSizeBytes, k + 1));
    await sleep(I);
  }
  t.notOk(a.events.some((e) => e.ev === 'up' && e.node === 2));
  t.equal(a.hb.state, 'running');
});

t.test('a peer advertising another dead time gets one warning', async (t) => {
  const { region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT + 5 });
  await waitFor(() => a.hb.liveNodes().includes(1), 10 * I, 'a sees b');
  await sleep(3 * I);
  const warnings = a.logs.filter((l) => /advertises a dead time/.test(l));
  t.equal(warnings.length, 1);
  t.match(warnings[0], /node 1 advertises a dead time of 1500 ms but this node uses 1000 ms/);
});

t.test('a volume file on tmpfs: heartbeats as usual', async (t) => {
  if (!existsSync('/dev/shm')) {
    t.pass('skipped: no /dev/shm');
    return;
  }
  const { region } = await makeVolume(t, 64 << 20, '/dev/shm');
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await waitFor(() => a.hb.liveNodes().includes(1) && b.hb.liveNodes().includes(0), 10 * I, 'both up');
  t.equal(decodeHeartbeat(readSlot(region, 1)).hbGeneration, b.hb.hbGeneration);
});

t.test('O_DIRECT path (forced on a file)', async (t) => {
  const { region } = await makeVolume(t);
  let a;
  try {
    a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT, direct: true });
  } catch (err) {
    if (err instanceof O2HbError && err.code === 'EINVAL' && /O_DIRECT|EINVAL/.test(err.message)) {
      t.pass(`skipped: the filesystem under ${region.devicePath} refuses O_DIRECT`);
      return;
    }
    throw err;
  }
  const b = await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await waitFor(() => a.hb.liveNodes().includes(1) && b.hb.liveNodes().includes(0), 10 * I, 'both up');
  t.equal(decodeHeartbeat(readSlot(region, 0)).hbGeneration, a.hb.hbGeneration);
});
