// o2net with each node in its own process: the mesh forms, a SIGSTOPped node is dropped by
// the idle timeout and reconnects after SIGCONT, and a SIGKILLed node's pending requests
// fail with EHOSTDOWN while membership waits for the heartbeat's verdict.
import t from 'tap';
import { ChildProcess, fork } from 'node:child_process';
import * as path from 'node:path';
import { Command, ECHO, NEVER, NodeConfig, Report, WHOAMI } from './node-main';
import { CLUSTER, KEY, nodeTable, randomBasePort, sleep, waitFor } from './helpers';

const TIMEOUTS = { keepaliveDelayMs: 200, idleTimeoutMs: 1000, reconnectDelayMs: 100, heartbeatDeadMs: 3000 };
const MAIN = path.join(__dirname, 'node-main.js');

class Child {
  readonly reports: Report[] = [];
  readonly proc: ChildProcess;
  private nextId = 1;
  private readonly waiting = new Map<number, (r: Report) => void>();
  constructor(readonly num: number, cfg: NodeConfig) {
    this.proc = fork(MAIN, [JSON.stringify(cfg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--enable-source-maps'] });
    this.proc.on('message', (r: Report) => {
      this.reports.push(r);
      if ((r.event === 'reply' || r.event === 'state') && this.waiting.has(r.id)) {
        const w = this.waiting.get(r.id) as (r: Report) => void;
        this.waiting.delete(r.id);
        w(r);
      }
    });
  }
  alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
  cmd(c: Command): void {
    this.proc.send(c);
  }
  private call(make: (id: number) => Command, timeoutMs: number): Promise<Report> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`node ${this.num}: no answer to command ${id} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.cmd(make(id));
    });
  }
  /** Resolves with the reply text, or "ERR <code>". */
  async request(node: number, type: number, payload: string, timeoutMs = 5000): Promise<string> {
    const r = await this.call((id) => ({ op: 'request', id, node, type, payloadB64: Buffer.from(payload).toString('base64'), timeoutMs }), timeoutMs + 5000);
    if (r.event !== 'reply') throw new Error('bad reply');
    return r.ok ? Buffer.from(r.payloadB64, 'base64').toString() : `ERR ${r.code}`;
  }
  async connected(): Promise<number[]> {
    const r = await this.call((id) => ({ op: 'state', id }), 5000);
    if (r.event !== 'state') throw new Error('bad state');
    return r.connected.sort();
  }
  events(kind: 'up' | 'down'): number[] {
    return this.reports.filter((r): r is { event: 'up' | 'down'; node: number } => r.event === kind).map((r) => r.node);
  }
  logged(re: RegExp): boolean {
    return this.reports.some((r) => r.event === 'log' && re.test(r.line));
  }
}

t.test('separate processes: mesh, SIGSTOP idle timeout and recovery, SIGKILL', async (t) => {
  const nodes = nodeTable(3, randomBasePort());
  const children = nodes.map(
    (n) => new Child(n.num, { thisNode: n.num, nodes, clusterName: CLUSTER, keyHex: KEY.toString('hex'), timeouts: TIMEOUTS }),
  );
  t.teardown(() => {
    for (const c of children) {
      if (!c.alive() || c.proc.pid === undefined) continue;
      process.kill(c.proc.pid, 'SIGCONT');
      process.kill(c.proc.pid, 'SIGKILL');
    }
  });
  await waitFor('children ready', () => children.every((c) => c.reports.some((r) => r.event === 'ready')), 15_000);
  // Play o2hb: everyone sees everyone heartbeating.
  for (const c of children) for (const n of nodes) if (n.num !== c.num) c.cmd({ op: 'heartbeatUp', node: n.num });
  await waitFor('all up', () => children.every((c) => c.events('up').length === 2), 10_000);
  for (const a of children) {
    for (const b of children) {
      if (a !== b) t.equal(await a.request(b.num, WHOAMI, ''), `${b.num} answering ${a.num}`);
    }
  }

  // SIGSTOP node 1: it stops answering keepalives; the others drop it after the idle timeout.
  const [c0, c1, c2] = children;
  process.kill(c1.proc.pid as number, 'SIGSTOP');
  const t0 = Date.now();
  t.equal(await c0.request(1, ECHO, 'while stopped', 10_000), 'ERR EHOSTDOWN', 'a request to the stopped node fails');
  const tookMs = Date.now() - t0;
  t.ok(tookMs >= 500 && tookMs < 4000, `... once the idle timeout drops the link (${tookMs} ms, idle timeout ${TIMEOUTS.idleTimeoutMs} ms)`);
  await waitFor('node 0 logs the idle timeout', () => c0.logged(/no longer connected to node 1 .*idle timeout/), 5000);
  await waitFor('node 2 drops node 1 too', () => c2.logged(/no longer connected to node 1 .*idle timeout/), 5000);
  t.same(c0.events('down'), [], 'no death without the heartbeat');
  t.equal(await c0.request(2, ECHO, 'still'), 'still', '0 <-> 2 unaffected');
  process.kill(c1.proc.pid as number, 'SIGCONT');
  await waitFor('node 1 reconnects', () => c0.logged(/accepted a connection from node 1/) && c0.reports.filter((r) => r.event === 'log' && /accepted a connection from node 1/.test(r.line)).length >= 2, 10_000);
  t.equal(await c0.request(1, ECHO, 'back'), 'back', 'node 1 answers again after SIGCONT');
  t.equal(await c1.request(2, WHOAMI, ''), '2 answering 1');

  // SIGKILL node 2 with a request pending to it.
  const dying = c0.request(2, NEVER, '', 10_000);
  await sleep(100);
  process.kill(c2.proc.pid as number, 'SIGKILL');
  t.equal(await dying, 'ERR EHOSTDOWN', 'the pending request fails with EHOSTDOWN');
  await waitFor('node 1 notices', () => c1.logged(/no longer connected to node 2/), 5000);
  t.same([...c0.events('down'), ...c1.events('down')], [], 'a dead socket is not a death');
  t.same(await c0.connected(), [1]);
  // o2hb declares node 2 dead.
  c0.cmd({ op: 'heartbeatDown', node: 2 });
  c1.cmd({ op: 'heartbeatDown', node: 2 });
  await waitFor('down events', () => c0.events('down').length === 1 && c1.events('down').length === 1, 5000);
  t.same([c0.events('down'), c1.events('down')], [[2], [2]]);
  t.equal(await c1.request(0, WHOAMI, ''), '0 answering 1', 'the survivors still talk');
  t.equal(await c0.request(2, ECHO, 'x'), 'ERR EHOSTDOWN');

  for (const c of [c0, c1]) c.cmd({ op: 'stop' });
  await waitFor('clean exits', () => !c0.alive() && !c1.alive(), 5000);
  t.equal(c0.proc.exitCode, 0);
});
