// The messaging seam between o2dlm and the network below it. o2net implements it over a
// TCP mesh; test/dlm's simulated network implements it in memory with a seeded schedule.
// Semantics follow o2net (reference/ocfs2.md §4.2):
//   - request(node, type, payload) resolves with the remote handler's reply once that
//     handler has returned; it rejects with a TransportError when the node is not
//     connected, the connection dies before the reply, or the remote has no handler.
//   - handlers for one peer run one at a time, in arrival order (per-connection FIFO), so a
//     sender's messages are handled in the order they were sent.
//   - membership: 'up' when a node is heartbeating and connected, 'down' when the heartbeat
//     declares it dead (a dropped connection alone is not a death).

export type TransportErrorCode =
  | 'EHOSTDOWN' // the connection died (or was never up) before a reply came
  | 'ENOPROTOOPT' // the remote has no handler for this message type
  | 'ETIMEDOUT'; // no reply within the request's deadline

export class TransportError extends Error {
  constructor(readonly code: TransportErrorCode, readonly node: number, message: string) {
    super(`node ${node}: ${code}: ${message}`);
  }
}

/** Handles one message from `from`; the returned bytes are the reply payload. */
export type MessageHandler = (from: number, payload: Buffer) => Promise<Buffer> | Buffer;

export interface MembershipEvents {
  /** Node `node` is heartbeating and connected: messages may flow. */
  onNodeUp(node: number): void;
  /** Node `node` was declared dead by the heartbeat (not merely disconnected). */
  onNodeDown(node: number): void;
}

export interface Transport {
  readonly thisNode: number;
  /**
   * Members: nodes reported up (onNodeUp) and not since declared dead (onNodeDown), not
   * including this node. A node whose connection dropped stays here until the heartbeat
   * decides: treating it as gone before it is fenced would let two nodes master one name.
   */
  liveNodes(): ReadonlySet<number>;
  /** Nodes with a working connection right now (a request to them can be answered). */
  connectedNodes(): ReadonlySet<number>;
  register(type: number, handler: MessageHandler): void;
  request(node: number, type: number, payload: Buffer, timeoutMs?: number): Promise<Buffer>;
  subscribe(events: MembershipEvents): () => void;
}
