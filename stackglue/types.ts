// The stackglue seam (DESIGN.md §2, reference/ocfs2.md §1): the one narrow interface
// between the filesystem and a cluster stack. A stack is a StackPlugin; connect() joins
// the volume's lock space and returns a ClusterConnection. Lock requests are asynchronous:
// lock() and unlock() return once the request is queued, and the outcome arrives through
// the callbacks with the caller's Lksb, exactly one callback per request:
//   onGrant(lksb)             a lock, convert or trylock finished (lksb.status says how)
//   onBlocking(lksb, level)   another node wants `level`; give it up when you can
//   onUnlock(lksb, status)    an unlock or a cancel finished
// One Lksb carries one lock and at most one request in flight.

export type LockMode = 'NL' | 'PR' | 'EX';
export const MODE_ORDER: Record<LockMode, number> = { NL: 0, PR: 1, EX: 2 };

/** Lock request flags (OCFS2's generic flags). */
export const LKF = {
  NOQUEUE: 0x1,
  CONVERT: 0x2,
  CANCEL: 0x4,
  VALBLK: 0x8,
  /** A brand-new name nobody else can know yet: master it locally without messages. */
  LOCAL: 0x10,
  /**
   * With NOQUEUE: a refused request still sends blocking ASTs to the holders in its way
   * (fs/dlm's DLM_LKF_NOQUEUEBAST), so that those caching a level they no longer use give
   * it up, and a later try succeeds.
   */
  NOQUEUEBAST: 0x20,
} as const;

/** lksb.status values (the errno-style results dlmglue relies on). */
export const LOCK_STATUS = {
  OK: 0,
  /** NOQUEUE request could not be granted at once. */
  EAGAIN: -11,
  /** A cancel arrived after the grant. */
  EBUSY: -16,
  /** The cancel succeeded. */
  ECANCEL: -125,
  /** The stack went away (node fenced or disconnected). */
  ENOTCONN: -107,
} as const;

export const LVB_BYTES = 64;

export function compatible(held: LockMode, wanted: LockMode): boolean {
  if (held === 'NL' || wanted === 'NL') return true;
  return held === 'PR' && wanted === 'PR';
}

/** Lock status block: owned by the caller, one per lock. */
export interface Lksb {
  /** Result of the last request (LOCK_STATUS). */
  status: number;
  /** Mode currently granted ('NL' before the first grant). */
  granted: LockMode;
  /** The 64-byte lock value block. */
  lvb: Buffer;
  /** False when the stack lost the LVB's contents (o2cb zeroes it instead). */
  lvbValid: boolean;
  /** The stack's handle; undefined until the first request. */
  lockId?: number;
  /** For the caller: what this lksb belongs to. */
  readonly owner: unknown;
}

export function newLksb(owner: unknown): Lksb {
  return { status: 0, granted: 'NL', lvb: Buffer.alloc(LVB_BYTES), lvbValid: true, owner };
}

export interface StackCallbacks {
  onGrant(lksb: Lksb): void;
  onBlocking(lksb: Lksb, level: LockMode): void;
  onUnlock(lksb: Lksb, status: number): void;
}

export interface ProtocolVersion {
  major: number;
  minor: number;
}

export interface ConnectOptions {
  clusterName: string;
  /** The lock space: the volume UUID as 32 uppercase hex digits. */
  group: string;
  /** The highest filesystem locking protocol this node speaks. */
  proto: ProtocolVersion;
  callbacks: StackCallbacks;
  /** A node died; its journal must be recovered before locks it held are trusted. */
  onRecovery(nodeNum: number): void;
  /**
   * A node was declared dead (stacks that can tell: o2cb). Delivered before any lock the
   * dead node held back is granted, so the filesystem can hold its I/O from that moment
   * until the dead node's journal is replayed; onRecovery follows.
   */
  onNodeDown?(nodeNum: number): void;
  /**
   * This node lost its cluster membership (fenced: heartbeat writes stalled, quorum lost, or
   * the stack's daemon died). The caller must stop all device I/O at once and exit; requests
   * in flight complete with ENOTCONN.
   */
  onFenced?(reason: string): void;
  /** The shared device whose heartbeat area the stack heartbeats on (o2cb). */
  device?: string;
  /** Where the stack's node daemon keeps its socket (o2cb; default $O2CB_RUN_DIR or /run/o2cb). */
  runDir?: string;
}

/** A POSIX (fcntl) lock request on a file, for stacks that do cluster-wide plocks. */
export interface PlockRequest {
  inode: number;
  owner: bigint;
  pid: number;
  start: bigint;
  end: bigint;
  type: 'read' | 'write' | 'unlock';
  wait: boolean;
}

export interface ClusterConnection {
  readonly stack: string;
  readonly thisNode: number;
  /** The protocol all nodes run at (negotiated at connect). */
  readonly proto: ProtocolVersion;
  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void;
  unlock(lksb: Lksb, flags: number): void;
  plock?(req: PlockRequest): Promise<void>;
  disconnect(): Promise<void>;
}

export interface StackPlugin {
  readonly name: string;
  readonly maxProto: ProtocolVersion;
  connect(opts: ConnectOptions): Promise<ClusterConnection>;
}

/**
 * The protocol two sides run at: same major, the lower minor. null when they cannot
 * talk (different majors).
 */
export function negotiateProtocol(mine: ProtocolVersion, theirs: ProtocolVersion): ProtocolVersion | null {
  if (mine.major !== theirs.major) return null;
  return { major: mine.major, minor: Math.min(mine.minor, theirs.minor) };
}
