// Shared pieces of the o2hb tests: a real o2cb volume in a temp dir, an event recorder,
// bounded waits, and a child-process peer (peer.ts) driven over stdin/stdout.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { openFileDevice } from '../../blockdev/file';
import { mkfs } from '../../fs/mkfs';
import { heartbeatRegionOf, HbRegion, O2Hb, O2HbOptions } from '../../dlm/o2cb/o2hb';

// tap's Test type, reduced to what the helpers use.
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A formatted volume file in a temp dir (under `parent`: the system's temp dir by default). */
export async function makeVolume(t: Teardown, sizeBytes = 64 << 20, parent = tmpdir()): Promise<{ devicePath: string; region: HbRegion }> {
  const dir = mkdtempSync(path.join(parent, 'o2hb-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const devicePath = path.join(dir, 'vol.img');
  const dev = await openFileDevice(devicePath, { create: { sizeBytes } });
  try {
    await mkfs(dev, { slots: 4, stack: 'o2cb', clusterName: 'test' });
  } finally {
    await dev.close();
  }
  return { devicePath, region: await heartbeatRegionOf(devicePath) };
}

export interface Recorded {
  ev: 'up' | 'down' | 'fence' | 'steady' | 'started' | 'stopped' | 'error';
  node?: number;
  reason?: string;
  atMs: number;
}

export function nowMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 10 ms until it holds; rejects after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = nowMs() + timeoutMs;
  while (!cond()) {
    if (nowMs() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Starts an in-process O2Hb, records its events and log, and stops it at teardown. */
export async function startHb(t: Teardown, o: O2HbOptions): Promise<{ hb: O2Hb; events: Recorded[]; logs: string[] }> {
  const events: Recorded[] = [];
  const logs: string[] = [];
  const hb = await O2Hb.start({ log: (l) => logs.push(l), ...o });
  hb.on('up', (node) => events.push({ ev: 'up', node, atMs: nowMs() }));
  hb.on('down', (node, reason) => events.push({ ev: 'down', node, reason, atMs: nowMs() }));
  hb.on('fence', (reason) => events.push({ ev: 'fence', reason, atMs: nowMs() }));
  t.teardown(() => hb.stop().catch(() => undefined));
  return { hb, events, logs };
}

export interface PeerConfig {
  devicePath: string;
  thisNode: number;
  nodes: number[];
  intervalMs: number;
  deadThreshold: number;
}

/** An O2Hb in a child process (dist/test/o2hb/peer.js); events arrive as JSON lines. */
export class Peer {
  readonly events: Recorded[] = [];
  readonly child: ChildProcess;
  private exitedNow = false;
  readonly exited: Promise<number | null>;

  constructor(t: Teardown, cfg: PeerConfig) {
    this.child = spawn(process.execPath, [path.join(__dirname, 'peer.js'), JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => {
      this.exitedNow = true;
      resolve(code);
    }));
    const rl = createInterface({ input: this.child.stdout! });
    rl.on('line', (line) => {
      const m = JSON.parse(line) as Omit<Recorded, 'atMs'>;
      this.events.push({ ...m, atMs: nowMs() });
    });
    // By pid, ours only: SIGKILL if it is still running when the test ends.
    t.teardown(async () => {
      if (!this.exitedNow && this.child.pid !== undefined) this.child.kill('SIGKILL');
      await this.exited;
    });
  }

  has(ev: Recorded['ev'], node?: number): boolean {
    return this.events.some((e) => e.ev === ev && (node === undefined || e.node === node));
  }

  async started(timeoutMs = 20_000): Promise<number> {
    await waitFor(() => this.has('started') || this.has('error') || this.exitedNow, timeoutMs, `peer started`);
    const e = this.events.find((x) => x.ev === 'started');
    if (!e) throw new Error(`peer failed to start: ${JSON.stringify(this.events)}`);
    return e.atMs;
  }

  /** Clean stop through stdin; resolves with the exit code. */
  async stop(): Promise<number | null> {
    this.child.stdin!.end('stop\n');
    return this.exited;
  }

  kill(): void {
    if (this.child.pid !== undefined) this.child.kill('SIGKILL');
  }
}
