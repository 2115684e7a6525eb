// o2net framing: every byte on an o2net connection belongs to a frame made of a fixed
// 24-byte big-endian header and a payload of `payloadLength` bytes. The byte layout is in
// dlm/PROTOCOL.md §6. FrameReader turns a byte stream into frames and throws FrameError on anything
// malformed; the connection that produced it is then closed (and only that one).

export const FRAME_HEADER_BYTES = 24;

/** Frame kinds, told apart by the first two bytes of the header. */
export const MAGIC = {
  message: 0xfa55, // a request: run the handler for msgType, reply with a status frame
  status: 0xfa56, // the reply to message msgNum
  keepaliveReq: 0xfa57,
  keepaliveResp: 0xfa58,
  hello: 0xfa5a, // handshake: protobuf o2net.Hello
  auth: 0xfa5b, // handshake: protobuf o2net.Auth
  refuse: 0xfa5c, // handshake: protobuf o2net.Refuse, then the sender closes
} as const;
export type FrameKind = keyof typeof MAGIC;

const KIND_BY_MAGIC = new Map<number, FrameKind>(
  (Object.keys(MAGIC) as FrameKind[]).map((k) => [MAGIC[k], k]),
);

/** sys_status of a status frame: did the transport deliver the message to a handler? */
export const SYS_STATUS = {
  ok: 0, // the handler returned; the payload is its reply
  noHandler: 1, // no handler registered for msgType (ENOPROTOOPT at the requester)
  handlerError: 2, // the handler threw; the payload is a protobuf o2net.HandlerError
  overflow: 3, // the handler's reply was larger than the negotiated maximum
} as const;
export type SysStatus = (typeof SYS_STATUS)[keyof typeof SYS_STATUS];
const SYS_STATUS_MAX = 3;

export interface FrameHeader {
  kind: FrameKind;
  sysStatus: number;
  msgType: number;
  msgNum: number;
  payloadLength: number;
  status: number; // signed 32-bit, reserved for handler status codes (0 today)
}

export interface Frame extends FrameHeader {
  payload: Buffer;
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

// Header offsets. Keep in step with dlm/PROTOCOL.md §6.
const OFF_MAGIC = 0; // u16
const OFF_SYS_STATUS = 2; // u16
const OFF_MSG_TYPE = 4; // u32
const OFF_MSG_NUM = 8; // u32
const OFF_PAYLOAD_LENGTH = 12; // u32
const OFF_STATUS = 16; // s32
const OFF_RESERVED = 20; // u32, must be zero

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

export function encodeHeader(h: FrameHeader): Buffer {
  if (!isU32(h.msgType) || !isU32(h.msgNum) || !isU32(h.payloadLength)) {
    throw new RangeError(`frame header field out of range: type ${h.msgType} num ${h.msgNum} len ${h.payloadLength}`);
  }
  if (!Number.isInteger(h.sysStatus) || h.sysStatus < 0 || h.sysStatus > SYS_STATUS_MAX) {
    throw new RangeError(`bad sys_status ${h.sysStatus}`);
  }
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt16BE(MAGIC[h.kind], OFF_MAGIC);
  b.writeUInt16BE(h.sysStatus, OFF_SYS_STATUS);
  b.writeUInt32BE(h.msgType, OFF_MSG_TYPE);
  b.writeUInt32BE(h.msgNum, OFF_MSG_NUM);
  b.writeUInt32BE(h.payloadLength, OFF_PAYLOAD_LENGTH);
  b.writeInt32BE(h.status, OFF_STATUS);
  b.writeUInt32BE(0, OFF_RESERVED);
  return b;
}

/** Header and payload as one buffer (for small frames and tests). */
export function encodeFrame(f: Omit<FrameHeader, 'payloadLength'> & { payload: Buffer }): Buffer {
  const header = encodeHeader({ ...f, payloadLength: f.payload.length });
  return Buffer.concat([header, f.payload]);
}

/** Parses and checks a header; `maxPayloadBytes` is the limit for the current phase. */
export function decodeHeader(b: Buffer, maxPayloadBytes: number): FrameHeader {
  if (b.length < FRAME_HEADER_BYTES) throw new FrameError(`short header: ${b.length} bytes`);
  const magic = b.readUInt16BE(OFF_MAGIC);
  const kind = KIND_BY_MAGIC.get(magic);
  if (kind === undefined) throw new FrameError(`bad magic 0x${magic.toString(16).padStart(4, '0')}`);
  const reserved = b.readUInt32BE(OFF_RESERVED);
  if (reserved !== 0) throw new FrameError(`reserved header word is 0x${reserved.toString(16)}, not zero`);
  const sysStatus = b.readUInt16BE(OFF_SYS_STATUS);
  if (sysStatus > SYS_STATUS_MAX) throw new FrameError(`bad sys_status ${sysStatus}`);
  const payloadLength = b.readUInt32BE(OFF_PAYLOAD_LENGTH);
  if (payloadLength > maxPayloadBytes) {
    throw new FrameError(`${kind} frame of ${payloadLength} bytes exceeds the ${maxPayloadBytes}-byte limit`);
  }
  return {
    kind,
    sysStatus,
    msgType: b.readUInt32BE(OFF_MSG_TYPE),
    msgNum: b.readUInt32BE(OFF_MSG_NUM),
    payloadLength,
    status: b.readInt32BE(OFF_STATUS),
  };
}

/**
 * Reassembles frames from stream chunks. The caller drains next() after every push, so
 * at most one partial frame stays buffered, and its declared length is checked against
 * the limit before its payload is awaited (an oversized frame fails at its header).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private header: FrameHeader | null = null;

  constructor(public maxPayloadBytes: number) {}

  /** Bytes received but not yet returned as part of a frame. */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  /** Adds received bytes; frames come out of next(). */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
  }

  /**
   * The next complete frame, or null if more bytes are needed. Throws FrameError on bad
   * input. One frame at a time so that the caller can change maxPayloadBytes (at the end
   * of the handshake) before the following header is checked.
   */
  next(): Frame | null {
    if (this.header === null) {
      if (this.bufferedBytes < FRAME_HEADER_BYTES) return null;
      this.header = decodeHeader(this.take(FRAME_HEADER_BYTES), this.maxPayloadBytes);
    }
    if (this.bufferedBytes < this.header.payloadLength) return null;
    const payload = this.take(this.header.payloadLength);
    const frame: Frame = { ...this.header, payload };
    this.header = null;
    return frame;
  }

  // Removes the first n buffered bytes; copies only when they span chunks.
  private take(n: number): Buffer {
    if (n > this.bufferedBytes) throw new Error(`take(${n}) with ${this.bufferedBytes} bytes buffered`);
    this.bufferedBytes -= n;
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      const want = n - filled;
      if (c.length <= want) {
        c.copy(out, filled);
        filled += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, filled, 0, want);
        this.chunks[0] = c.subarray(want);
        filled += want;
      }
    }
    return out;
  }
}
