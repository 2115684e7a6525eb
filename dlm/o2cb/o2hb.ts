// o2hb: the disk heartbeat of the o2cb stack (reference/ocfs2.md §4.1; dlm/PROTOCOL.md §5 for this
// file). Each node writes its own block of the volume's heartbeat region every interval and
// reads everyone else's; a peer whose block stops changing for deadThreshold passes is dead.
//
// The loop itself runs on a worker thread (o2hb-worker.ts) with its own descriptor and
// synchronous I/O, so a stalled main event loop cannot fake this node's death. This class
// owns the worker, turns its reports into events, and runs the write-timeout watchdog: if
// our own write has not completed for writeTimeoutMs (shorter than the dead time peers use),
// the node must fence itself before the others declare it dead and recover its journal.
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { MAX_NODES } from '../../fs/format/constants';
import type { HbRegion } from './hb-region';
import { O2HbError } from './o2hb-errors';
import { DownReason, LIVE_THRESHOLD } from './o2hb-slots';
import { CMD, CTL, TIME, WorkerConfig, WorkerMessage } from './o2hb-worker';

export { heartbeatRegionOf } from './hb-region';
export type { HbRegion } from './hb-region';
export { O2HbError } from './o2hb-errors';
export type { O2HbErrorCode } from './o2hb-errors';
export type { DownReason } from './o2hb-slots';

export const DEFAULT_INTERVAL_MS = 500;
export const DEFAULT_DEAD_THRESHOLD = 12;
const INTERVAL_MS_MIN = 10;
const INTERVAL_MS_MAX = 60_000;
const DEAD_THRESHOLD_MAX = 1000;
/** Reads of our slot, one interval apart, before the first write (a couple of intervals). */
const COLLISION_SAMPLES = 3;
/** OCFS2 calls a region steady after LIVE_THRESHOLD + 1 clean passes. */
const STEADY_PASSES = LIVE_THRESHOLD + 1;
/** Worker thread boot (module loading) on a loaded machine, on top of the collision check. */
const WORKER_BOOT_MS = 15_000;
/** How long a fenced worker gets to notice the abort before it is terminated. */
const ABORT_GRACE_MS = 1_000;

export interface O2HbOptions {
  region: HbRegion;
  /** This node's number, 0..254: it writes block `thisNode` of the region. */
  thisNode: number;
  /** Configured node numbers (cluster.conf); thisNode may be listed or not. */
  nodes: number[];
  /** Time between passes. Default 500. */
  intervalMs?: number;
  /** Unchanged samples before a live peer is dead. Default 12 (about 6 s at 500 ms). */
  deadThreshold?: number;
  /** Self-fence when our write has not completed for this long. Default interval × (deadThreshold − 1). */
  writeTimeoutMs?: number;
  /** Force O_DIRECT on (or off); default: on for block devices, off for files. */
  direct?: boolean;
  /** Bound on start(), collision check included. Default interval × 3 + 15 s. */
  startTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface O2HbEvents {
  /** A peer has been heartbeating for LIVE_THRESHOLD changes. Never fires for thisNode. */
  up: [node: number];
  /** A live peer stopped (timeout), left cleanly, or restarted (generation; an up follows). */
  down: [node: number, reason: DownReason];
  /** This node must stop all I/O to the volume now: its heartbeat cannot be trusted. */
  fence: [reason: string];
}

export type O2HbState = 'running' | 'stopping' | 'stopped' | 'fenced';

function checkNode(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n >= MAX_NODES) throw new O2HbError('EINVAL', `${what} must be a node number 0..${MAX_NODES - 1}: ${n}`);
}

function nowNs(): bigint {
  return process.hrtime.bigint();
}

export class O2Hb extends EventEmitter<O2HbEvents> {
  readonly region: HbRegion;
  readonly thisNode: number;
  readonly nodes: readonly number[];
  readonly intervalMs: number;
  readonly deadThreshold: number;
  readonly writeTimeoutMs: number;
  /** The dead time we advertise in our block: intervalMs × deadThreshold. */
  readonly deadMs: number;
  /** Random per start and never 0, so peers see a restart as a new generation. */
  readonly hbGeneration: number;

  /**
   * Test hooks: they act on the worker's I/O path exactly where a hung or failing device
   * would. Not for production use.
   */
  readonly testHooks: {
    /** The next write sleeps `ms` before it is issued (a hung write). */
    stallNextWrite(ms: number): void;
    /** The next `count` writes fail as with EIO. */
    failNextWrites(count: number): void;
  };

  private readonly worker: Worker;
  private readonly ctl: Int32Array;
  private readonly time: BigInt64Array;
  private readonly log: (line: string) => void;
  private readonly live = new Set<number>();
  private stateNow: O2HbState = 'running';
  private watchdog: NodeJS.Timeout | null = null;
  private isSteady = false;
  private steadyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private exited: Promise<void>;

  private constructor(o: Required<Omit<O2HbOptions, 'direct' | 'log' | 'startTimeoutMs'>> & { log: (line: string) => void; worker: Worker; ctl: Int32Array; time: BigInt64Array; hbGeneration: number }) {
    super();
    this.region = o.region;
    this.thisNode = o.thisNode;
    this.nodes = o.nodes;
    this.intervalMs = o.intervalMs;
    this.deadThreshold = o.deadThreshold;
    this.writeTimeoutMs = o.writeTimeoutMs;
    this.deadMs = o.intervalMs * o.deadThreshold;
    this.hbGeneration = o.hbGeneration;
    this.log = o.log;
    this.worker = o.worker;
    this.ctl = o.ctl;
    this.time = o.time;
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.testHooks = {
      stallNextWrite: (ms) => {
        if (!Number.isInteger(ms) || ms < 0 || ms > 0x7fffffff) throw new RangeError(`stall must be 0..2^31-1 ms: ${ms}`);
        Atomics.store(this.ctl, CTL.stallMs, ms);
        this.ring();
      },
      failNextWrites: (count) => {
        if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer: ${count}`);
        Atomics.store(this.ctl, CTL.failWrites, count);
        this.ring();
      },
    };
  }

  /**
   * Starts heartbeating. Resolves once our slot has been checked free of other writers and
   * the loop runs; rejects with O2HbError (EINVAL bad options or region, EBUSY another
   * writer in our slot, EIO device, ETIMEDOUT). No event fires before it resolves.
   */
  static async start(opts: O2HbOptions): Promise<O2Hb> {
    const intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    const deadThreshold = opts.deadThreshold ?? DEFAULT_DEAD_THRESHOLD;
    if (!Number.isInteger(intervalMs) || intervalMs < INTERVAL_MS_MIN || intervalMs > INTERVAL_MS_MAX) {
      throw new O2HbError('EINVAL', `intervalMs must be an integer ${INTERVAL_MS_MIN}..${INTERVAL_MS_MAX}: ${intervalMs}`);
    }
    if (!Number.isInteger(deadThreshold) || deadThreshold < 2 || deadThreshold > DEAD_THRESHOLD_MAX) {
      throw new O2HbError('EINVAL', `deadThreshold must be an integer 2..${DEAD_THRESHOLD_MAX}: ${deadThreshold}`);
    }
    const writeTimeoutMs = opts.writeTimeoutMs ?? intervalMs * (deadThreshold - 1);
    // A write timeout at or beyond the dead time would let peers recover our journal while
    // we still write: the whole point of self-fencing is to go first.
    if (!Number.isInteger(writeTimeoutMs) || writeTimeoutMs < intervalMs || writeTimeoutMs >= intervalMs * deadThreshold) {
      throw new O2HbError('EINVAL', `writeTimeoutMs must be an integer from intervalMs (${intervalMs}) to below the dead time (${intervalMs * deadThreshold}): ${writeTimeoutMs}`);
    }
    checkNode(opts.thisNode, 'thisNode');
    if (!Array.isArray(opts.nodes) || opts.nodes.length > MAX_NODES) throw new O2HbError('EINVAL', 'nodes must be an array of at most 255 node numbers');
    for (const n of opts.nodes) checkNode(n, 'each of nodes');
    const nodes = [...new Set([...opts.nodes, opts.thisNode])].sort((a, b) => a - b);
    const r = opts.region;
    if (!r || r.blocks !== MAX_NODES || !Number.isInteger(r.blockSizeBytes) || r.blockSizeBytes < 512 || r.firstBlockOffsetBytes % r.blockSizeBytes !== 0) {
      throw new O2HbError('EINVAL', 'region is not a heartbeat region (use heartbeatRegionOf)');
    }
    const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
    const prefix = `o2hb ${r.uuid.slice(0, 8)} node ${opts.thisNode}: `;
    const hbGeneration = randomInt(1, 2 ** 47);
    const ctl = new Int32Array(new SharedArrayBuffer(CTL.length * 4));
    const time = new BigInt64Array(new SharedArrayBuffer(TIME.length * 8));
    const cfg: WorkerConfig = {
      kind: 'o2hb', region: r, thisNode: opts.thisNode, nodes, intervalMs, deadThreshold,
      deadMs: intervalMs * deadThreshold, hbGeneration, direct: opts.direct,
      collisionSamples: COLLISION_SAMPLES, steadyPasses: STEADY_PASSES, ctl: ctl.buffer as SharedArrayBuffer, time: time.buffer as SharedArrayBuffer,
    };
    // execArgv: []: the worker is plain compiled JS and needs none of the parent's loaders or
    // instrumentation (under a test runner they tripled its boot time).
    const worker = new Worker(path.join(__dirname, 'o2hb-worker.js'), { workerData: cfg, execArgv: [] });
    const hb = new O2Hb({ region: r, thisNode: opts.thisNode, nodes, intervalMs, deadThreshold, writeTimeoutMs, log: (l) => log(prefix + l), worker, ctl, time, hbGeneration });
    const startTimeoutMs = opts.startTimeoutMs ?? intervalMs * COLLISION_SAMPLES + WORKER_BOOT_MS;
    await hb.awaitStart(startTimeoutMs);
    return hb;
  }

  get state(): O2HbState {
    return this.stateNow;
  }

  /** Peers currently live (up and not since down), ascending; never includes thisNode. */
  liveNodes(): number[] {
    return [...this.live].sort((a, b) => a - b);
  }

  /**
   * Resolves after the first few clean passes (LIVE_THRESHOLD + 1), by which time every
   * peer that was heartbeating when we started is up. A mount waits for this before it
   * trusts liveNodes(). Rejects with O2HbError('ESTOPPED') once stopping, stopped or fenced.
   */
  steady(): Promise<void> {
    if (this.stateNow !== 'running') return Promise.reject(new O2HbError('ESTOPPED', `heartbeat is ${this.stateNow}`));
    if (this.isSteady) return Promise.resolve();
    return new Promise((resolve, reject) => this.steadyWaiters.push({ resolve, reject }));
  }

  /**
   * Stops heartbeating. Clean (the default): the worker writes a leave mark (generation 0)
   * so peers report us down at their next pass. `clean: false` just stops writing, as a
   * crash would (peers time us out); tests use it to simulate a crash in-process. Rejects
   * with O2HbError('ETIMEDOUT') if the worker does not finish within writeTimeoutMs plus an
   * interval (its I/O hangs); the caller must then treat the node as fenced.
   */
  async stop(opts: { clean?: boolean } = {}): Promise<void> {
    if (this.stateNow === 'running') {
      this.stateNow = 'stopping';
      this.clearWatchdog();
      this.failSteadyWaiters(`heartbeat stopped`);
      Atomics.store(this.ctl, CTL.command, opts.clean === false ? CMD.abort : CMD.stopClean);
      this.ring();
    }
    const boundMs = this.writeTimeoutMs + this.intervalMs + ABORT_GRACE_MS;
    const ok = await this.waitExit(boundMs);
    if (this.stateNow === 'stopping') this.stateNow = 'stopped';
    this.live.clear();
    if (!ok) {
      await this.worker.terminate().catch(() => undefined);
      throw new O2HbError('ETIMEDOUT', `heartbeat worker did not stop within ${boundMs} ms (device I/O hung?)`);
    }
  }

  private ring(): void {
    Atomics.add(this.ctl, CTL.doorbell, 1);
    Atomics.notify(this.ctl, CTL.doorbell);
  }

  private async waitExit(boundMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), boundMs);
    });
    try {
      return await Promise.race([this.exited.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private awaitStart(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: O2HbError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.stateNow = 'stopped';
        Atomics.store(this.ctl, CTL.command, CMD.abort);
        this.ring();
        void this.worker.terminate().catch(() => undefined);
        reject(err);
      };
      const timer = setTimeout(() => fail(new O2HbError('ETIMEDOUT', `heartbeat did not start within ${timeoutMs} ms`)), timeoutMs);
      this.worker.on('message', (m: WorkerMessage) => {
        if (settled) {
          this.onMessage(m);
          return;
        }
        if (m.type === 'started') {
          settled = true;
          clearTimeout(timer);
          this.armWatchdog();
          resolve();
        } else if (m.type === 'startFailed') {
          fail(new O2HbError(m.code, m.message));
        } else if (m.type === 'log') {
          this.log(m.line);
        }
      });
      this.worker.on('error', (err) => {
        if (!settled) fail(new O2HbError('EIO', `heartbeat worker failed to start: ${err.message}`, { cause: err }));
        else this.fence(`heartbeat worker crashed: ${err.message}`);
      });
      this.worker.on('exit', (code) => {
        if (!settled) fail(new O2HbError('EIO', `heartbeat worker exited (code ${code}) before it started`));
        else if (this.stateNow === 'running') this.fence(`heartbeat worker exited unexpectedly (code ${code})`);
      });
    });
  }

  private onMessage(m: WorkerMessage): void {
    // Reports that arrive after a stop or fence describe a heartbeat we no longer run.
    if (this.stateNow !== 'running') {
      if (m.type === 'log') this.log(m.line);
      return;
    }
    switch (m.type) {
      case 'up':
        if (this.live.has(m.node)) throw new Error(`assertion: node ${m.node} up twice`);
        this.live.add(m.node);
        this.log(`node ${m.node} is up (generation ${m.hbGeneration})`);
        this.emit('up', m.node);
        break;
      case 'down':
        if (!this.live.delete(m.node)) throw new Error(`assertion: node ${m.node} down while not up`);
        this.log(`node ${m.node} is down (${m.reason})`);
        this.emit('down', m.node, m.reason);
        break;
      case 'log':
        this.log(m.line);
        break;
      case 'steady':
        this.isSteady = true;
        for (const w of this.steadyWaiters.splice(0)) w.resolve();
        break;
      case 'fence':
        this.fence(m.reason);
        break;
      case 'stopped':
        // The worker ends only on our command or on a fence it reported first.
        this.fence('heartbeat worker stopped on its own');
        break;
      case 'started':
      case 'startFailed':
        throw new Error(`assertion: worker sent ${m.type} twice`);
    }
  }

  private armWatchdog(): void {
    // Checked often enough that the fence lands well inside the gap between writeTimeoutMs
    // and the dead time (one interval by default).
    const everyMs = Math.max(5, Math.min(Math.floor(this.intervalMs / 4), Math.floor(this.writeTimeoutMs / 4)));
    this.watchdog = setInterval(() => {
      // Shared memory, not messages: after a main-thread stall this reads the worker's real
      // progress, where queued messages would make every write look late.
      const sinceMs = Number(nowNs() - Atomics.load(this.time, TIME.lastWriteDoneNs)) / 1e6;
      if (sinceMs > this.writeTimeoutMs) this.fence(`heartbeat write has not completed for ${Math.round(sinceMs)} ms (limit ${this.writeTimeoutMs} ms)`);
    }, everyMs);
  }

  private clearWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  private failSteadyWaiters(why: string): void {
    for (const w of this.steadyWaiters.splice(0)) w.reject(new O2HbError('ESTOPPED', why));
  }

  /** Stops all heartbeat I/O at once and tells the owner to fence. Fires once. */
  private fence(reason: string): void {
    if (this.stateNow !== 'running') return;
    this.stateNow = 'fenced';
    this.clearWatchdog();
    Atomics.store(this.ctl, CTL.command, CMD.abort);
    this.ring();
    this.live.clear();
    this.failSteadyWaiters(`heartbeat fenced: ${reason}`);
    this.log(`FENCE: ${reason}`);
    // A worker stuck in a hung write cannot be interrupted; give it a moment to see the
    // abort, then terminate it (termination itself completes when the syscall returns).
    const grace = setTimeout(() => void this.worker.terminate().catch(() => undefined), ABORT_GRACE_MS);
    grace.unref();
    void this.exited.then(() => clearTimeout(grace));
    this.emit('fence', reason);
  }
}
