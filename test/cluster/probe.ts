// Reachability checks between nodes of a ClusterWorld, run as small node scripts inside the
// namespaces. No ICMP: scripts/setup.sh does not install ping, and a TCP SYN answered by a
// RST (refused) proves the peer's kernel is reachable just as well as an echo reply does.
import type { ClusterWorld, NodeRef } from './harness';
import type { ManagedProcess } from './process';

/** How a TCP connect ended: only 'connected' and 'refused' mean the peer answered. */
export type ProbeResult = 'connected' | 'refused' | 'timeout' | 'unreachable' | 'blocked' | `error:${string}`;

// A port nothing listens on (discard): a reachable peer answers the SYN with a RST.
const PROBE_PORT = 9;
const PROBE_TIMEOUT_MS = 2_000;
// Starting node in a namespace takes a while on a loaded 2-core CI machine; bound it apart.
const NODE_START_MS = 15_000;

// Maps connect errors to the result; prints exactly one word.
const CONNECT_SCRIPT = `
const net = require('net');
const [ip, port, timeoutMs, token] = process.argv.slice(1);
const codes = { ECONNREFUSED: 'refused', ENETUNREACH: 'unreachable', EHOSTUNREACH: 'unreachable', EPERM: 'blocked', ETIMEDOUT: 'timeout' };
const done = (r) => { process.stdout.write(r + '\\n'); process.exit(0); };
setTimeout(() => done('timeout'), Number(timeoutMs));
const s = net.connect({ host: ip, port: Number(port) });
s.on('error', (e) => done(codes[e.code] || 'error:' + e.code));
s.on('connect', () => {
  if (!token) return done('connected');
  let got = '';
  s.on('data', (b) => { got += b; if (got.length >= token.length) done(got === token ? 'ok' : 'mismatch'); });
  s.write(token);
});
`;

const ECHO_SERVER_SCRIPT = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
const server = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
server.listen(Number(port), ip, () => console.log('listening ' + server.address().port));
`;

function ipOf(world: ClusterWorld, to: NodeRef | string): string {
  return typeof to === 'string' ? to : world.node(to).ip;
}

async function connect(world: ClusterWorld, from: NodeRef, ip: string, port: number, timeoutMs: number, token = ''): Promise<string> {
  const r = await world.run(from, process.execPath, ['-e', CONNECT_SCRIPT, ip, String(port), String(timeoutMs), token], {
    timeoutMs: timeoutMs + NODE_START_MS,
  });
  const word = r.stdout.trim();
  if (r.status !== 0 || word === '') throw new Error(`connect probe from ${world.node(from).name} to ${ip}:${port} failed: ${r.status ?? r.signal} ${r.stderr}`);
  return word;
}

/** TCP connect from a node to a node (or any address) on a closed port; see ProbeResult. */
export async function probe(world: ClusterWorld, from: NodeRef, to: NodeRef | string, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  return (await connect(world, from, ipOf(world, to), PROBE_PORT, timeoutMs)) as ProbeResult;
}

/** Whether `to`'s kernel answers `from` within `timeoutMs`. */
export async function ping(world: ClusterWorld, from: NodeRef, to: NodeRef | string, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  const r = await probe(world, from, to, timeoutMs);
  return r === 'connected' || r === 'refused';
}

export interface EchoServer {
  proc: ManagedProcess;
  ip: string;
  port: number;
}

/** A TCP echo server on the node's address (port 0: any free port); stopped by destroy(). */
export async function startEchoServer(world: ClusterWorld, node: NodeRef, port = 0): Promise<EchoServer> {
  const ip = world.node(node).ip;
  const proc = world.spawn(node, process.execPath, ['-e', ECHO_SERVER_SCRIPT, ip, String(port)], { label: 'echo-server' });
  const m = await proc.waitForLine(/^listening (\d+)$/, NODE_START_MS, { stream: 'stdout' });
  return { proc, ip, port: Number(m[1]) };
}

/**
 * Connects from `from` to an echo server, sends a random token and waits for it back:
 * 'ok', or why not ('timeout' under a partition, 'refused', 'unreachable', 'mismatch', ...).
 */
export async function tcpEcho(world: ClusterWorld, from: NodeRef, server: { ip: string; port: number }, timeoutMs = PROBE_TIMEOUT_MS): Promise<string> {
  const token = `o2fs-${Math.random().toString(36).slice(2)}`;
  return connect(world, from, server.ip, server.port, timeoutMs, token);
}
