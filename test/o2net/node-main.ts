// One o2net node in its own process, for test/o2net/process.test.ts. Configured by a JSON
// argument; driven over the IPC channel (requests, heartbeat events, stats); reports
// membership events and log lines back. Exits when the parent goes away.
import { O2Net, O2NetNode, O2NetTimeouts } from '../../dlm/o2cb/o2net';
import { TransportError } from '../../dlm/o2cb/transport';

export interface NodeConfig {
  thisNode: number;
  nodes: O2NetNode[];
  clusterName: string;
  keyHex: string;
  timeouts: O2NetTimeouts;
}

export type Command =
  | { op: 'request'; id: number; node: number; type: number; payloadB64: string; timeoutMs?: number }
  | { op: 'heartbeatUp'; node: number }
  | { op: 'heartbeatDown'; node: number }
  | { op: 'state'; id: number }
  | { op: 'stop' };

export type Report =
  | { event: 'ready' }
  | { event: 'up' | 'down'; node: number }
  | { event: 'log'; line: string }
  | { event: 'reply'; id: number; ok: true; payloadB64: string }
  | { event: 'reply'; id: number; ok: false; code: string; message: string }
  | { event: 'state'; id: number; connected: number[]; live: number[] };

export const ECHO = 1;
export const WHOAMI = 2;
export const NEVER = 3; // a handler that never replies

function send(r: Report): void {
  if (process.send) process.send(r);
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as NodeConfig;
  const net = new O2Net({
    thisNode: cfg.thisNode,
    nodes: cfg.nodes,
    clusterName: cfg.clusterName,
    clusterKey: Buffer.from(cfg.keyHex, 'hex'),
    timeouts: cfg.timeouts,
    log: (line) => send({ event: 'log', line }),
  });
  net.register(ECHO, (_from, p) => p);
  net.register(WHOAMI, (from) => Buffer.from(`${cfg.thisNode} answering ${from}`));
  net.register(NEVER, () => new Promise<Buffer>(() => undefined));
  net.subscribe({ onNodeUp: (node) => send({ event: 'up', node }), onNodeDown: (node) => send({ event: 'down', node }) });
  await net.start();
  process.on('disconnect', () => {
    void net.stop().then(() => process.exit(0));
  });
  process.on('message', (m: Command) => {
    switch (m.op) {
      case 'request':
        net.request(m.node, m.type, Buffer.from(m.payloadB64, 'base64'), m.timeoutMs).then(
          (r) => send({ event: 'reply', id: m.id, ok: true, payloadB64: r.toString('base64') }),
          (e: Error) => send({ event: 'reply', id: m.id, ok: false, code: e instanceof TransportError ? e.code : e.name, message: e.message }),
        );
        return;
      case 'heartbeatUp':
        net.heartbeatUp(m.node);
        return;
      case 'heartbeatDown':
        net.heartbeatDown(m.node);
        return;
      case 'state':
        send({ event: 'state', id: m.id, connected: [...net.connectedNodes()], live: [...net.liveNodes()] });
        return;
      case 'stop':
        void net.stop().then(() => process.exit(0));
        return;
    }
  });
  send({ event: 'ready' });
}

// Only when run as the child's entry point; the test imports the types and constants.
if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`node-main: ${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
