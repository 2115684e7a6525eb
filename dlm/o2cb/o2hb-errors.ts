// Typed errors of the disk heartbeat (o2hb.ts, hb-region.ts).
export type O2HbErrorCode =
  | 'EINVAL' // bad options, or the volume has no usable heartbeat region
  | 'EBUSY' // another writer is heartbeating in this node's slot
  | 'EIO' // the device could not be opened, read or written
  | 'ETIMEDOUT' // the worker did not start or stop within its bound
  | 'ESTOPPED'; // the heartbeat stopped (or fenced) before the awaited state was reached

export class O2HbError extends Error {
  readonly code: O2HbErrorCode;
  constructor(code: O2HbErrorCode, message: string, options?: ErrorOptions) {
    super(`o2hb: ${code}: ${message}`, options);
    this.name = 'O2HbError';
    this.code = code;
  }
}
