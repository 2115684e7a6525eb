// o2hb across processes: heartbeats in child processes (peer.ts) and one in this process, on
// one volume image. Three nodes see each other; SIGKILL of a child is a death after about the
// dead time; a clean stop is a prompt down; and a main thread stalled far past the dead time
// does not make a peer declare this node dead, because the beat runs on its own thread.
import t from 'tap';
import { makeVolume, nowMs, Peer, startHb, waitFor } from './helpers';

const I = 100; // intervalMs
const DT = 10; // deadThreshold: dead time 1 s
const NODES = [0, 1, 2];

t.test('three nodes (one here, two in child processes) see each other up; SIGKILL is a death after the dead time; a clean stop is a prompt down', async (t) => {
  const { devicePath, region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: NODES, intervalMs: I, deadThreshold: DT });
  const p1 = new Peer(t, { devicePath, thisNode: 1, nodes: NODES, intervalMs: I, deadThreshold: DT });
  const p2 = new Peer(t, { devicePath, thisNode: 2, nodes: NODES, intervalMs: I, deadThreshold: DT });
  const started1 = await p1.started();
  const started2 = await p2.started();
  await waitFor(() => a.hb.liveNodes().length === 2 && p1.has('up', 0) && p1.has('up', 2) && p2.has('up', 0) && p2.has('up', 1), 20 * I, 'all up');
  const up1 = a.events.find((e) => e.ev === 'up' && e.node === 1)!.atMs;
  const up2 = a.events.find((e) => e.ev === 'up' && e.node === 2)!.atMs;
  // A child's first write precedes its "started" line, so two of our passes after that line
  // (plus pipe latency) is the bound.
  t.ok(up1 - started1 <= 4 * I, `node 1 up ${up1 - started1} ms after it started`);
  t.ok(up2 - started2 <= 4 * I, `node 2 up ${up2 - started2} ms after it started`);
  await waitFor(() => p1.has('steady') && p2.has('steady'), 20 * I, 'children steady');

  const killAt = nowMs();
  p1.kill();
  await waitFor(() => a.events.some((e) => e.ev === 'down' && e.node === 1), (DT + 10) * I, 'a sees 1 down');
  await waitFor(() => p2.has('down', 1), 10 * I, '2 sees 1 down');
  const downA = a.events.find((e) => e.ev === 'down' && e.node === 1)!;
  const down2 = p2.events.find((e) => e.ev === 'down' && e.node === 1)!;
  t.equal(downA.reason, 'timeout');
  t.equal(down2.reason, 'timeout');
  // The last write was at most an interval (plus a pass) before the kill; death comes
  // deadThreshold passes after the first pass that saw it.
  const tookA = downA.atMs - killAt;
  t.ok(tookA >= (DT - 2) * I && tookA <= (DT + 4) * I, `node 0 declared 1 dead ${tookA} ms after SIGKILL (dead time ${DT * I} ms)`);
  t.ok(down2.atMs - killAt <= (DT + 6) * I, `node 2 declared 1 dead ${down2.atMs - killAt} ms after SIGKILL`);
  t.equal(await p1.exited, null, 'killed by signal');

  const stopAt = nowMs();
  t.equal(await p2.stop(), 0, 'clean exit');
  t.ok(p2.has('stopped'));
  await waitFor(() => a.events.some((e) => e.ev === 'down' && e.node === 2), 5 * I, 'a sees 2 down');
  const down = a.events.find((e) => e.ev === 'down' && e.node === 2)!;
  t.equal(down.reason, 'clean');
  t.ok(down.atMs - stopAt < 5 * I, `clean stop seen ${down.atMs - stopAt} ms after the stop began`);
  t.same(a.hb.liveNodes(), []);
  t.notOk(a.events.some((e) => e.ev === 'fence'));
});

t.test('a main thread stalled past the dead time does not make a peer declare us dead', async (t) => {
  const { devicePath, region } = await makeVolume(t);
  const a = await startHb(t, { region, thisNode: 0, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  const p = new Peer(t, { devicePath, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  await p.started();
  await waitFor(() => p.has('up', 0) && a.hb.liveNodes().includes(1), 20 * I, 'both up');
  // Busy-loop this thread for three dead times: no timer, no message, no I/O callback runs.
  const stallMs = 3 * DT * I;
  const until = nowMs() + stallMs;
  let spins = 0;
  while (nowMs() < until) spins++;
  t.ok(spins > 0);
  // Let queued reports (the peer's stdout, our worker's messages) arrive.
  await new Promise((r) => setTimeout(r, 3 * I));
  t.notOk(p.has('down', 0), `the peer never declared node 0 dead during a ${stallMs} ms stall: ${JSON.stringify(p.events)}`);
  t.equal(a.hb.state, 'running', 'our write watchdog did not fence: the worker kept writing');
  t.notOk(a.events.some((e) => e.ev === 'down' || e.ev === 'fence'), 'and we saw no false death either');
  t.same(a.hb.liveNodes(), [1]);
  // Control: the same peer does declare us dead when the beat really stops.
  await a.hb.stop({ clean: false });
  await waitFor(() => p.has('down', 0), (DT + 10) * I, 'peer sees 0 down after a real stop');
  t.equal(p.events.find((e) => e.ev === 'down' && e.node === 0)?.reason, 'timeout');
});

t.test('a second process heartbeating as the same node is refused', async (t) => {
  const { devicePath, region } = await makeVolume(t);
  await startHb(t, { region, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  const p = new Peer(t, { devicePath, thisNode: 1, nodes: [0, 1], intervalMs: I, deadThreshold: DT });
  t.equal(await p.exited, 2);
  t.match(p.events.find((e) => e.ev === 'error')?.reason, /EBUSY: another node is heartbeating in node 1's slot/);
});
