// o2net micro-benchmark: 1-byte echo requests over loopback between this process (node 1)
// and a child process (node 0). Prints the median and p99 round trip of sequential
// requests and the throughput with a window of concurrent requests.
// Run: node dist/test/o2net/bench.js [seconds]
import { fork } from 'node:child_process';
import * as path from 'node:path';
import { O2Net } from '../../dlm/o2cb/o2net';
import { ECHO, NodeConfig, Report } from './node-main';
import { CLUSTER, KEY, nodeTable, randomBasePort, waitFor } from './helpers';

const TIMEOUTS = { keepaliveDelayMs: 2000, idleTimeoutMs: 30000, reconnectDelayMs: 100, heartbeatDeadMs: 62000 };

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 3);
  const nodes = nodeTable(2, randomBasePort());
  const cfg: NodeConfig = { thisNode: 0, nodes, clusterName: CLUSTER, keyHex: KEY.toString('hex'), timeouts: TIMEOUTS };
  const child = fork(path.join(__dirname, 'node-main.js'), [JSON.stringify(cfg)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  let ready = false;
  child.on('message', (r: Report) => {
    if (r.event === 'ready') ready = true;
  });
  const me = new O2Net({ thisNode: 1, nodes, clusterName: CLUSTER, clusterKey: KEY, timeouts: TIMEOUTS, log: () => undefined });
  try {
    await me.start();
    await waitFor('child ready', () => ready, 10_000);
    child.send({ op: 'heartbeatUp', node: 1 });
    me.heartbeatUp(0);
    await waitFor('connection', () => me.liveNodes().has(0), 10_000);
    const one = Buffer.from([0x2a]);

    // Sequential: one request at a time.
    const rtts: number[] = [];
    const seqEnd = Date.now() + (seconds * 1000) / 2;
    while (Date.now() < seqEnd && rtts.length < 1_000_000) {
      const t0 = process.hrtime.bigint();
      await me.request(0, ECHO, one);
      rtts.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    rtts.sort((a, b) => a - b);
    const median = rtts[Math.floor(rtts.length / 2)];
    const p99 = rtts[Math.floor(rtts.length * 0.99)];

    // Pipelined: keep a window of requests in flight.
    const WINDOW = 64;
    let done = 0;
    const parEnd = Date.now() + (seconds * 1000) / 2;
    const t1 = Date.now();
    await Promise.all(
      [...Array(WINDOW)].map(async () => {
        while (Date.now() < parEnd) {
          await me.request(0, ECHO, one);
          done++;
        }
      }),
    );
    const parS = (Date.now() - t1) / 1000;
    console.log(
      `o2net loopback, 1-byte echo: sequential ${rtts.length} requests, median RTT ${median.toFixed(1)} us, ` +
        `p99 ${p99.toFixed(1)} us (${Math.round(1e6 / median)} req/s one at a time); ` +
        `window ${WINDOW}: ${Math.round(done / parS)} req/s`,
    );
  } finally {
    await me.stop();
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }
}

main().catch((e: Error) => {
  console.error(e);
  process.exit(1);
});
