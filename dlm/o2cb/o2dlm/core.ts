// State shared by the parts of one o2dlm domain (server queues, client requests, mastery,
// recovery, membership): the resources, the domain map, the recovery map, tunables, and
// the helpers every part uses to talk to peers and to wait with a bound.
import { Transport, TransportError } from '../transport';
import type { ProtocolVersion, StackCallbacks } from '../../../stackglue/types';
import { MsgType, Reply, decodeReply, encode } from './messages';
import { Resource } from './resource';
import { DEFAULTS, DlmError } from './status';

/**
 * Time as the lock manager sees it. Real time in a daemon; the simulated network supplies
 * a virtual clock so that a seeded run replays exactly, timers included.
 */
export interface Clock {
  nowMs(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

export const realClock: Clock = {
  nowMs: () => Date.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // Lock-manager timers never keep a process alive on their own.
    t.unref?.();
    return t;
  },
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface DomainOptions {
  /** The lock space: the volume UUID. */
  name: string;
  /** The highest filesystem locking protocol this node speaks. */
  proto: ProtocolVersion;
  callbacks: StackCallbacks;
  /** Fired on every node once DLM recovery of dead node `node` has finished. */
  onEviction(node: number): void;
  /**
   * Fired at once when member `node` is declared dead, before recovery begins: nothing its
   * locks kept from anyone can be granted before this has been called (the filesystem
   * uses it to hold its I/O until it has replayed the dead node's journal).
   */
  onNodeDown?(node: number): void;
  log?: (line: string) => void;
  purgeIntervalMs?: number;
  masteryTimeoutMs?: number;
  recoveryTimeoutMs?: number;
  requestTimeoutMs?: number;
  retryDelayMs?: number;
  joinBackoffMs?: number;
  clock?: Clock;
}

export interface Tunables {
  purgeIntervalMs: number;
  masteryTimeoutMs: number;
  recoveryTimeoutMs: number;
  requestTimeoutMs: number;
  retryDelayMs: number;
  joinBackoffMs: number;
}

export type DomainState = 'new' | 'joining' | 'joined' | 'leaving' | 'left' | 'abandoned';

/** A wake-up: waiters resolve on the next notify() or after their own timeout. */
export class Signal {
  private readonly waiters = new Set<() => void>();

  constructor(private readonly clock: Clock) {}

  /** Resolves true when notified, false on timeout. */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (notified: boolean): void => {
        this.clock.clearTimer(timer);
        this.waiters.delete(wake);
        resolve(notified);
      };
      const wake = (): void => done(true);
      const timer = this.clock.setTimer(() => done(false), timeoutMs);
      this.waiters.add(wake);
    });
  }

  notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

export class Core {
  readonly thisNode: number;
  readonly name: string;
  readonly tun: Tunables;
  state: DomainState = 'new';
  /** The filesystem protocol the domain runs at (set by join). */
  proto: ProtocolVersion;
  readonly resources = new Map<string, Resource>();
  /** The domain map: nodes that joined, other than this one. */
  readonly members = new Set<number>();
  /** Members that announced BEGIN_EXIT_DOMAIN: not chosen as migration targets. */
  readonly leavingNodes = new Set<number>();
  /** Dead members whose locks are not yet recovered; non-empty = recovery active. */
  readonly recoveryMap = new Set<number>();
  /** This node is in a join attempt (between its first QUERY_JOIN and ASSERT_JOINED). */
  joinAttemptActive = false;
  /** A joiner this node said JOIN_OK to (one joiner at a time). */
  joining: { node: number; sinceMs: number } | null = null;
  readonly clock: Clock;
  /** Notified on every membership or recovery change. */
  readonly changed: Signal;
  private nextSeq = 0;

  constructor(readonly transport: Transport, readonly opts: DomainOptions) {
    this.thisNode = transport.thisNode;
    this.name = opts.name;
    this.proto = { ...opts.proto };
    this.clock = opts.clock ?? realClock;
    this.changed = new Signal(this.clock);
    this.tun = {
      purgeIntervalMs: opts.purgeIntervalMs ?? DEFAULTS.purgeIntervalMs,
      masteryTimeoutMs: opts.masteryTimeoutMs ?? DEFAULTS.masteryTimeoutMs,
      recoveryTimeoutMs: opts.recoveryTimeoutMs ?? DEFAULTS.recoveryTimeoutMs,
      requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      retryDelayMs: opts.retryDelayMs ?? DEFAULTS.retryDelayMs,
      joinBackoffMs: opts.joinBackoffMs ?? DEFAULTS.joinBackoffMs,
    };
    if (this.thisNode < 0 || this.thisNode > 254) throw new DlmError('EINVAL', `node number ${this.thisNode} out of range 0..254`);
  }

  log(line: string): void {
    this.opts.log?.(`o2dlm ${this.name} node ${this.thisNode}: ${line}`);
  }

  nowMs(): number {
    return this.clock.nowMs();
  }

  get recovering(): boolean {
    return this.recoveryMap.size > 0;
  }

  get active(): boolean {
    return this.state === 'joined' || this.state === 'leaving';
  }

  /** Members the transport can reach now, ascending. */
  liveMembers(): number[] {
    const live = this.transport.liveNodes();
    return [...this.members].filter((n) => live.has(n)).sort((a, b) => a - b);
  }

  newSeq(): number {
    this.nextSeq += 1;
    if (this.nextSeq > 0xffffffff) throw new Error('assertion: lock sequence numbers exhausted');
    return this.nextSeq;
  }

  resource(name: string): Resource {
    let res = this.resources.get(name);
    if (!res) {
      res = new Resource(name, this.nowMs());
      this.resources.set(name, res);
    }
    return res;
  }

  /** Sends one request and decodes the reply; TransportError and BadMessage propagate. */
  async request(node: number, type: MsgType, body: object, timeoutMs = this.tun.requestTimeoutMs): Promise<Reply> {
    if (node === this.thisNode) throw new Error(`assertion: message ${type} to self`);
    const payload = encode(type, { domain: this.name, ...body });
    const reply = await this.transport.request(node, type, payload, timeoutMs);
    return decodeReply(reply);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.clock.setTimer(resolve, ms);
    });
  }

  /** Resolves once no recovery is active; rejects if the domain is shut down meanwhile. */
  async waitRecovery(): Promise<void> {
    const deadlineMs = this.nowMs() + 10 * this.tun.recoveryTimeoutMs + 60000;
    while (this.recovering) {
      if (this.state === 'abandoned' || this.state === 'left') throw new DlmError('ENOTCONN', 'domain shut down');
      if (this.nowMs() > deadlineMs) throw new DlmError('ETIMEDOUT', `recovery of ${[...this.recoveryMap]} did not finish`);
      await this.changed.wait(this.tun.recoveryTimeoutMs);
    }
  }

  /**
   * After a request to `node` failed on the transport: wait until the failure is explained,
   * either the node is back (retry) or the heartbeat declared it dead (recovery follows).
   */
  async waitNodeSettled(node: number): Promise<void> {
    const deadlineMs = this.nowMs() + 120000;
    // A member that is neither reachable nor declared dead: its connection dropped (it is
    // redialled) or it died and the heartbeat has not said so yet. Either way, wait.
    while (this.members.has(node) && !this.recoveryMap.has(node) && !this.transport.connectedNodes().has(node)) {
      if (this.state === 'abandoned' || this.state === 'left') throw new DlmError('ENOTCONN', 'domain shut down');
      if (this.nowMs() > deadlineMs) throw new DlmError('ETIMEDOUT', `node ${node} neither came back nor was declared dead`);
      await this.changed.wait(this.tun.retryDelayMs * 5);
    }
  }
}

export function isTransportError(e: unknown): e is TransportError {
  return e instanceof TransportError;
}
