// Child-process heartbeat peer for test/o2hb (not a test file): starts an O2Hb from the JSON
// config in argv[2], prints every event as one JSON line on stdout, and stops cleanly on
// "stop" or end of stdin (so it never outlives its parent's pipe).
import { createInterface } from 'node:readline';
import { heartbeatRegionOf, O2Hb } from '../../dlm/o2cb/o2hb';
import type { PeerConfig } from './helpers';

function out(m: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(m) + '\n');
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as PeerConfig;
  let hb: O2Hb;
  try {
    hb = await O2Hb.start({
      region: await heartbeatRegionOf(cfg.devicePath), thisNode: cfg.thisNode, nodes: cfg.nodes,
      intervalMs: cfg.intervalMs, deadThreshold: cfg.deadThreshold, log: (l) => {
        if (process.env.O2HB_VERBOSE) process.stderr.write(`[peer ${cfg.thisNode}] ${l}\n`);
      },
    });
  } catch (err) {
    out({ ev: 'error', reason: (err as Error).message });
    process.exitCode = 2;
    return;
  }
  hb.on('up', (node) => out({ ev: 'up', node }));
  hb.on('down', (node, reason) => out({ ev: 'down', node, reason }));
  hb.on('fence', (reason) => out({ ev: 'fence', reason }));
  out({ ev: 'started' });
  void hb.steady().then(() => out({ ev: 'steady' }), () => undefined);
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await hb.stop();
    out({ ev: 'stopped' });
  };
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'stop') void stop();
  });
  rl.on('close', () => void stop());
}

void main();
