// The cluster harness itself: topology and isolation, partitions and heals, killing a node,
// and cleanup after destroy(), after a crash of the test process and after a SIGKILL of it.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { Test } from 'tap';
import type { CrashInfo } from './crash-child';
import {
  ClusterWorld, liveWorlds, ping, probe, startEchoServer, sweepStaleWorlds, tcpEcho, waitFor,
} from './harness';
import { NETNS_DIR, RECORD_DIR, isAlive, netnsPids } from './netns';

// Partitioned connects wait this long; reachable ones answer in well under it.
const CUT_TIMEOUT_MS = 1_500;
const CHILD_TIMEOUT_MS = 60_000;
const STUBBORN_SCRIPT = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000);";
const IDLE_SCRIPT = "console.log('ready'); setInterval(() => {}, 1000);";
const PINGER_SCRIPT = `
const s = require('net').connect(Number(process.argv[2]), process.argv[1], () => round());
let timer;
function late() { console.log('late'); timer = setTimeout(late, 500); }
function round() { s.write('x'); timer = setTimeout(late, 500); }
s.on('data', () => { clearTimeout(timer); console.log('ok'); setTimeout(round, 100); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });
`;

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
}

function netnsList(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((s) => s !== '');
}

/** Pids of processes whose network namespace is one of `inodes` (nsfs inode numbers). */
function holdersOf(inodes: number[]): number[] {
  const want = new Set(inodes.map((i) => `net:[${i}]`));
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (want.has(readlinkSync(`/proc/${d}/ns/net`)) && isAlive(Number(d))) out.push(Number(d));
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return out;
}

interface Made {
  world: string;
  tag: string;
  namespaces: string[];
  inodes: number[];
  tmpDir: string;
  pids: number[];
}

function made(w: ClusterWorld, pids: number[]): Made {
  const namespaces = [w.ns, ...w.nodes.map((n) => n.ns)];
  return {
    world: w.ns, tag: w.tag, namespaces, tmpDir: w.tmpDir, pids,
    inodes: namespaces.map((ns) => statSync(`${NETNS_DIR}/${ns}`).ino),
  };
}

/** Asserts that nothing of a world is left: namespaces, links, processes, files, record. */
function assertNothingLeft(t: Test, m: Made): void {
  const list = netnsList();
  for (const ns of m.namespaces) t.notOk(list.includes(ns), `namespace ${ns} deleted`);
  // Every link of the world carries its tag; none may be in the host namespace either.
  t.notMatch(sh('ip', ['-o', 'link']), m.tag, 'no link of the world in the host namespace');
  // A namespace lives on while a process holds it (with its veths and rules): none may.
  t.same(holdersOf(m.inodes), [], 'no process holds any of its namespaces');
  for (const pid of m.pids) t.notOk(isAlive(pid), `pid ${pid} is gone`);
  t.notOk(existsSync(m.tmpDir), 'tmp dir removed');
  t.notOk(existsSync(path.join(RECORD_DIR, `${m.world}.json`)), 'record removed');
}

async function newWorld(t: Test, nodes: number): Promise<ClusterWorld> {
  const w = await ClusterWorld.create({ nodes });
  t.teardown(() => w.destroy());
  return w;
}

t.test('a 3-node world: one address per node, all reachable, nothing reachable outside', async (t) => {
  const w = await newWorld(t, 3);
  t.equal(w.nodes.length, 3);
  const prefix = w.subnet.replace(/\.0\/24$/, '.');
  for (const n of w.nodes) {
    t.equal(n.ip, `${prefix}${n.num + 1}`);
    const addrs = w.exec(n, 'ip', ['-4', '-o', 'addr']).stdout;
    t.match(addrs, `inet ${n.ip}/24`, `${n.name} has its address`);
    t.equal(w.exec(n, 'ip', ['-6', '-o', 'addr']).stdout, '', `${n.name}: no IPv6, so no path around IPv4 partitions`);
    t.equal(addrs.trim().split('\n').length, 2, `${n.name}: lo and its own interface only`);
    // No default route: nothing a node sends can be routed off the test network.
    t.same(w.exec(n, 'ip', ['-4', 'route']).stdout.trim().split('\n'),
      [`${w.subnet} dev ${n.dev} proto kernel scope link src ${n.ip} `.trim()], `${n.name}: only the subnet route`);
  }
  // The world namespace holds the bridge but no address.
  t.same(w.exec(0, 'true').status, 0);
  t.equal(sh('ip', ['-n', w.ns, '-4', '-o', 'addr']).trim().split('\n').length, 1, 'world ns: only lo has an address');

  // The host holds no address, route or link on the test network. (We do not try to send
  // from the host: with no route of its own, such packets would follow its default route
  // off the machine, which is exactly what must never happen.)
  t.notMatch(sh('ip', ['-4', '-o', 'addr']), prefix, 'host has no address on the test network');
  t.notMatch(sh('ip', ['-4', '-o', 'route']), prefix, 'host has no route to the test network');
  t.notMatch(sh('ip', ['-o', 'link']), w.tag, 'host has none of the links');

  const pairs = w.nodes.flatMap((a) => w.nodes.filter((b) => b !== a).map((b) => [a.num, b.num] as const));
  const pings = await Promise.all(pairs.map(([a, b]) => ping(w, a, b)));
  t.same(pings, pairs.map(() => true), 'every node pings every other node');

  const servers = await Promise.all(w.nodes.map((n) => startEchoServer(w, n)));
  const echoes = await Promise.all(pairs.map(([a, b]) => tcpEcho(w, a, servers[b])));
  t.same(echoes, pairs.map(() => 'ok'), 'TCP echo works between every pair');

  // Outside the subnet there is no route: the connect fails at once, nothing is sent.
  const other = `10.213.${(Number(prefix.split('.')[2]) + 1) % 256}.1`;
  t.equal(await probe(w, 0, other), 'unreachable', 'the neighbouring subnet is unreachable');
  t.equal(await probe(w, 0, '198.51.100.1'), 'unreachable', 'an outside address is unreachable');
});

t.test('partition [[0,1],[2]] cuts 2 off in both directions; heal restores; isolate', async (t) => {
  const w = await newWorld(t, 3);
  const s = await Promise.all(w.nodes.map((n) => startEchoServer(w, n)));
  const echo = (a: number, b: number): Promise<string> => tcpEcho(w, a, s[b], CUT_TIMEOUT_MS);
  const all = async (pairs: [number, number][]): Promise<string[]> => Promise.all(pairs.map(([a, b]) => echo(a, b)));

  w.partition([[0, 1], [2]]);
  t.same(await all([[0, 1], [1, 0]]), ['ok', 'ok'], 'same side: 0<->1 works');
  t.same(await all([[0, 2], [2, 0], [1, 2], [2, 1]]), ['timeout', 'timeout', 'timeout', 'timeout'], 'across the cut: dropped');
  t.equal(await probe(w, 2, 0, CUT_TIMEOUT_MS), 'timeout', 'even a closed port does not answer');
  t.same(w.rules(2).sort(), [
    `-A O2FS-IN -s ${w.nodes[0].ip}/32 -j DROP`, `-A O2FS-IN -s ${w.nodes[1].ip}/32 -j DROP`,
    `-A O2FS-OUT -d ${w.nodes[0].ip}/32 -j DROP`, `-A O2FS-OUT -d ${w.nodes[1].ip}/32 -j DROP`,
  ].sort(), 'node 2 drops both peers in and out');

  w.heal();
  t.same(w.rules(0), [], 'heal removes the rules');
  t.same(w.rules(2), []);
  t.same(await all([[0, 2], [2, 0], [1, 2], [2, 1], [0, 1]]), ['ok', 'ok', 'ok', 'ok', 'ok'], 'healed');

  // A connection opened before the cut stalls, as in a real partition (DROP: no RST), and
  // resumes after the heal. The pinger echoes a byte at a time; "late" when 500 ms pass.
  const conn = w.spawn(0, process.execPath, ['-e', PINGER_SCRIPT, s[2].ip, String(s[2].port)], { label: 'pinger' });
  await conn.waitForLine(/^ok$/, 15_000);
  w.partition([[0, 1], [2]]);
  await conn.waitForLine(/^late$/, 5_000, { fresh: true });
  await t.rejects(conn.waitForLine(/^ok$/, 1_000, { fresh: true }), /within 1000 ms/, 'the open connection stalls');
  w.heal();
  // TCP retransmits with backoff: the first one after the heal may take a few seconds.
  await conn.waitForLine(/^ok$/, 20_000, { fresh: true });
  t.equal(conn.exitStatus, null, 'the open connection survived the partition');

  // A node left out of every group is alone.
  w.partition([[0, 1]]);
  t.same(await all([[0, 1], [2, 0]]), ['ok', 'timeout'], 'an unlisted node is cut off');
  t.throws(() => w.partition([[0], [0, 1]]), /two groups/);
  t.throws(() => w.partition([[0, 7]]), RangeError);
  w.heal();

  w.isolate(1);
  t.same(await all([[1, 0], [0, 1], [2, 1], [0, 2]]), ['timeout', 'timeout', 'timeout', 'ok'], 'isolate(1) cuts only node 1');
  t.equal(w.exec(1, process.execPath, ['-e', `
    const s = require('net').createServer().listen(0, '127.0.0.1', () => {
      require('net').connect(s.address().port, '127.0.0.1', () => { console.log('lo ok'); process.exit(0); });
    });`]).stdout.trim(), 'lo ok', 'an isolated node still reaches its own loopback');
  w.heal();
  t.same(await all([[1, 0], [2, 1]]), ['ok', 'ok'], 'healed after isolate');
});

t.test('spawn, waitForLine, kill: SIGKILL takes down every process of one node', async (t) => {
  const w = await newWorld(t, 2);
  const a = w.spawn(0, process.execPath, ['-e', IDLE_SCRIPT], { label: 'idle' });
  const b = w.spawn(1, process.execPath, ['-e', IDLE_SCRIPT], { label: 'idle' });
  t.equal((await a.waitForLine(/^ready$/, 15_000))[0], 'ready');
  await b.waitForLine(/^ready$/, 15_000);
  await t.rejects(a.waitForLine(/never printed/, 200), /no line matching .* within 200 ms/, 'waitForLine is bounded');
  // A daemon the node forked: no longer our child, only its namespace ties it to node 0.
  const daemonPid = Number((await w.run(0, 'sh', ['-c', 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!'])).stdout.trim());
  t.ok(isAlive(daemonPid), 'daemon runs');
  t.same(netnsPids(w.nodes[0].ns).sort(), [a.pid, daemonPid].sort(), 'the node holds exactly our two processes');

  await w.kill(0);
  t.same(a.exitStatus, { code: null, signal: 'SIGKILL' }, 'spawned process died of SIGKILL');
  t.same(await a.exited, { code: null, signal: 'SIGKILL' });
  t.notOk(isAlive(daemonPid), 'the daemon died with its node');
  t.same(netnsPids(w.nodes[0].ns), [], 'node 0 is empty');
  t.ok(b.running, 'node 1 is untouched');
  t.match(readFileSync(a.stdoutPath, 'utf8'), /^ready\n/, 'output was logged to a file');

  // A crashed node restarts: new processes in the same namespace, same address.
  const s0 = await startEchoServer(w, 0);
  t.equal(await tcpEcho(w, 1, s0), 'ok', 'node 0 serves again after the crash');

  const quitter = w.spawn(1, 'sh', ['-c', 'echo bye; exit 3'], { label: 'quitter' });
  await t.rejects(quitter.waitForLine(/never printed/, 10_000), /exited \(3\) with no line matching/, 'waitForLine fails fast when the process exits');
  t.same(await quitter.exited, { code: 3, signal: null });
  t.equal(quitter.stdout(), 'bye\n');

  const r = await w.run(1, 'sh', ['-c', 'echo out; echo err >&2; exit 4']);
  t.same(r, { status: 4, signal: null, stdout: 'out\n', stderr: 'err\n', timedOut: false }, 'run() collects output and status');
  const slow = await w.run(1, 'sleep', ['30'], { timeoutMs: 300 });
  t.same([slow.timedOut, slow.signal], [true, 'SIGKILL'], 'run() is bounded');
  const e = w.exec(1, 'sh', ['-c', 'cat; exit 5'], { input: 'in' });
  t.same([e.status, e.stdout], [5, 'in'], 'exec() passes input and returns status');
});

t.test('destroy removes everything, escalates to SIGKILL, and is idempotent', async (t) => {
  const w = await ClusterWorld.create({ nodes: 2 });
  t.teardown(() => w.destroy()); // in case an assertion below throws first
  const stubborn = w.spawn(1, process.execPath, ['-e', STUBBORN_SCRIPT], { label: 'stubborn' });
  const idle = w.spawn(0, process.execPath, ['-e', IDLE_SCRIPT], { label: 'idle' });
  await stubborn.waitForLine(/^ready$/, 15_000);
  await idle.waitForLine(/^ready$/, 15_000);
  const daemonPid = Number((await w.run(1, 'sh', ['-c', 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!'])).stdout.trim());
  w.partition([[0], [1]]);
  t.ok(existsSync(w.sharedDisk), 'shared disk exists');
  t.equal(statSync(w.sharedDisk).size, 256 << 20, 'default shared disk size');
  t.ok(statSync(w.sharedDisk).blocks * 512 < 1 << 20, 'shared disk is sparse');
  const m = made(w, [stubborn.pid, idle.pid, daemonPid]);

  await w.destroy();
  t.same(idle.exitStatus, { code: null, signal: 'SIGTERM' }, 'SIGTERM first');
  t.same(stubborn.exitStatus, { code: null, signal: 'SIGKILL' }, 'SIGKILL for one that ignores SIGTERM');
  assertNothingLeft(t, m);
  await w.destroy();
  t.ok(w.isDestroyed, 'a second destroy() is a no-op');
  t.throws(() => w.spawn(0, 'true'), /destroyed/, 'a destroyed world refuses work');
  t.throws(() => w.partition([[0]]), /destroyed/);
});

/** Runs crash-child.js in `mode`; resolves with what it made and the child once printed. */
async function crashChild(t: Test, mode: string): Promise<{ info: CrashInfo; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>; stderr: () => string; pid: number }> {
  const env = { ...process.env };
  delete env.O2FS_KEEP_WORLD;
  const child = spawn(process.execPath, [path.join(__dirname, 'crash-child.js'), mode], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b));
  child.stderr.on('data', (b: Buffer) => (err += b));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })));
  // Whatever happens, the child does not outlive the test, and neither does its world.
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    await exited;
    sweepStaleWorlds();
  });
  await waitFor(() => out.includes('\n') || child.exitCode !== null, CHILD_TIMEOUT_MS, `crash-child ${mode} to report`);
  if (!out.includes('\n')) throw new Error(`crash-child ${mode} exited before reporting: ${err}`);
  return { info: JSON.parse(out.split('\n')[0]) as CrashInfo, exited, stderr: () => err, pid: child.pid! };
}

async function boundedExit<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('crash-child did not exit')), CHILD_TIMEOUT_MS);
    })]);
  } finally {
    clearTimeout(timer);
  }
}

for (const mode of ['throw', 'reject'] as const) {
  t.test(`a test process that dies of an ${mode === 'throw' ? 'uncaught exception' : 'unhandled rejection'} leaves nothing behind`, async (t) => {
    const c = await crashChild(t, mode);
    t.equal(c.info.pid, c.pid);
    const status = await boundedExit(c.exited);
    t.equal(status.code, 1, 'it crashed');
    t.match(c.stderr(), /crash-child: deliberate/);
    assertNothingLeft(t, c.info);
  });
}

t.test('a test process stopped by SIGTERM cleans up, then dies of SIGTERM', async (t) => {
  const c = await crashChild(t, 'wait');
  t.ok(netnsList().includes(c.info.world), 'its world exists while it runs');
  process.kill(c.pid, 'SIGTERM');
  t.same(await boundedExit(c.exited), { code: null, signal: 'SIGTERM' });
  assertNothingLeft(t, c.info);
});

t.test('after a SIGKILL of the test process, the sweeper removes its world', async (t) => {
  const c = await crashChild(t, 'wait');
  process.kill(c.pid, 'SIGKILL');
  t.same(await boundedExit(c.exited), { code: null, signal: 'SIGKILL' });
  // Another test's ClusterWorld.create() may sweep first; if not, ours must report them.
  const present = c.info.namespaces.filter((ns) => netnsList().includes(ns));
  const removed = sweepStaleWorlds();
  for (const ns of present) t.ok(removed.includes(ns), `sweeper removed ${ns}`);
  assertNothingLeft(t, c.info);
});

t.test('the sweeper touches neither live worlds nor namespaces it did not name', async (t) => {
  const live = await newWorld(t, 1);
  const dead = spawnSync('true').pid!;
  await waitFor(() => !isAlive(dead), 5_000, 'a dead pid');
  const tag = live.tag;
  const stale = `o2n0-${dead}-${tag}`;
  const foreign = [`o2w-${dead}-${tag}0`, `x-o2w-${dead}-${tag}`, `o2w-${dead}-ZZZZZZ`];
  t.teardown(() => {
    for (const ns of [stale, ...foreign]) spawnSync('ip', ['netns', 'del', ns]);
  });
  for (const ns of [stale, ...foreign]) sh('ip', ['netns', 'add', ns]);
  const removed = sweepStaleWorlds();
  t.ok(removed.includes(stale), 'a namespace of a dead creator is removed');
  const list = netnsList();
  t.notOk(list.includes(stale));
  for (const ns of foreign) t.ok(list.includes(ns), `${ns} is not ours: untouched`);
  for (const n of [live.ns, ...live.nodes.map((x) => x.ns)]) t.ok(list.includes(n), `live ${n} untouched`);
  t.equal(await ping(live, 0, live.nodes[0]), true, 'the live world still works');
});

t.test('create() validates its options', async (t) => {
  await t.rejects(ClusterWorld.create({ nodes: 0 }), RangeError);
  await t.rejects(ClusterWorld.create({ nodes: 65 }), RangeError);
  await t.rejects(ClusterWorld.create({ nodes: 1.5 }), RangeError);
  await t.rejects(ClusterWorld.create({ nodes: 1, sharedDiskBytes: -1 }), RangeError);
});

t.test('a failure part-way through create() leaves nothing behind', async (t) => {
  // An `ip` that fails on node 1's veth, found first on PATH: by then the world namespace
  // and two node namespaces exist.
  const realIp = sh('sh', ['-c', 'command -v ip']).trim();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-harness-test-'));
  const fakeBin = path.join(dir, 'bin');
  const tmpParent = path.join(dir, 'worlds');
  mkdirSync(fakeBin);
  mkdirSync(tmpParent);
  writeFileSync(path.join(fakeBin, 'ip'),
    `#!/bin/sh\ncase "$*" in *"link add v1-"*) echo injected failure >&2; exit 1;; esac\nexec ${realIp} "$@"\n`, { mode: 0o755 });
  const pathBefore = process.env.PATH;
  t.teardown(() => {
    process.env.PATH = pathBefore;
    rmSync(dir, { recursive: true, force: true });
  });
  const ours = (): string[] => netnsList().filter((ns) => ns.includes(`-${process.pid}-`));
  t.same(ours(), [], 'no world of ours before');
  process.env.PATH = `${fakeBin}:${pathBefore}`;
  await t.rejects(ClusterWorld.create({ nodes: 3, tmpDir: tmpParent }), /injected failure/);
  process.env.PATH = pathBefore;
  t.same(ours(), [], 'no namespace left');
  t.same(readdirSync(tmpParent), [], 'no tmp dir left');
  t.same((existsSync(RECORD_DIR) ? readdirSync(RECORD_DIR) : []).filter((f) => f.includes(`-${process.pid}-`)), [], 'no record left');
  t.same(liveWorlds(), [], 'not registered for exit cleanup any more');
});
