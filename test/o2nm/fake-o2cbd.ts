// TEST DOUBLE, not the real daemon: a stand-in for dlm/o2cb/o2cbd.js that honours only the
// process contract tools/o2cb.ts relies on, so the CLI's process handling (start detached,
// wait for readiness, refuse a second start, stop by pid, status over the socket) can be
// tested without a cluster. The real o2cbd is tested with the cluster harness.
//
// Contract: `node fake-o2cbd.js --config-dir DIR --run-dir DIR --cluster NAME --node NAME`
// listens on RUNDIR/NAME.sock, writes its pid to RUNDIR/NAME.pid, prints "ready", answers
// the line {"op":"status"} with one JSON line, and removes both files and exits 0 on SIGTERM.
//
// FAKE_O2CBD_MODE picks a failure to simulate:
//   fail   exit 1 with a message before listening (a daemon that cannot start)
//   mute   listen but never answer (a hung daemon)
//   slow   never become ready (no socket, no pid file)
// FAKE_O2CBD_LIFETIME_MS (default 120000) bounds its life in case a test forgets it.
import { promises as fsp, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    'config-dir': { type: 'string' },
    'run-dir': { type: 'string' },
    cluster: { type: 'string' },
    node: { type: 'string' },
  },
  strict: true,
});
const runDir = values['run-dir'];
const cluster = values.cluster;
if (!runDir || !cluster || !values.node || !values['config-dir']) {
  process.stderr.write('fake-o2cbd: --config-dir, --run-dir, --cluster and --node are required\n');
  process.exit(2);
}
const mode = process.env.FAKE_O2CBD_MODE ?? 'normal';
const lifetimeMs = Number(process.env.FAKE_O2CBD_LIFETIME_MS ?? 120_000);
setTimeout(() => process.exit(0), lifetimeMs).unref();
const keepAlive = setInterval(() => undefined, 1 << 30);

const sock = path.join(runDir, `${cluster}.sock`);
const pidFile = path.join(runDir, `${cluster}.pid`);

if (mode === 'fail') {
  process.stderr.write(`fake-o2cbd: simulated start failure for cluster ${cluster}\n`);
  process.exit(1);
}

const server = net.createServer((conn) => {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0 || mode === 'mute') return;
    const req = JSON.parse(buf.slice(0, nl)) as { op?: string };
    buf = buf.slice(nl + 1);
    const answer = req.op === 'status' ? { fake: true, cluster, node: values.node, pid: process.pid } : { error: `unknown op ${String(req.op)}` };
    conn.end(JSON.stringify(answer) + '\n');
  });
  conn.on('error', () => undefined);
});

async function stop(): Promise<void> {
  server.close();
  await fsp.rm(sock, { force: true });
  await fsp.rm(pidFile, { force: true });
  clearInterval(keepAlive);
  process.exit(0);
}
process.on('SIGTERM', () => void stop());

if (mode !== 'slow') {
  server.listen(sock, () => {
    writeFileSync(pidFile, `${process.pid}\n`);
    process.stdout.write('ready\n');
  });
}
