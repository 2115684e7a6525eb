// Test fixture: a FuseChannel in memory. Tests push crafted requests, the session "reads"
// them, and every reply/notification it writes is recorded for inspection.
import type { FuseChannel } from '../../fs/fuse/channel';
import { decodeOutHeader, encodeInitIn, encodeRequest } from '../../fs/fuse/codec';
import { InitFlag, Opcode, OutHeader } from '../../fs/fuse/protocol';

export interface RecordedReply {
  unique: bigint;
  error: number;
  payload: Buffer;
}

function errnoError(code: string): Error {
  return Object.assign(new Error(`${code} (fake)`), { code });
}

export class FakeChannel implements FuseChannel {
  readonly replies: RecordedReply[] = [];
  readonly notifies: Buffer[] = [];
  readsIssued = 0;
  closed = false;
  private readonly queue: Buffer[] = [];
  private readonly waiting: { buf: Buffer; resolve: (n: number) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  /** Errno code notifications fail with (e.g. 'ENOENT'), or undefined to succeed. */
  notifyError: string | undefined;

  /** Queues a request for the session's readers. */
  push(request: Buffer): void {
    const w = this.waiting.shift();
    if (w) {
      request.copy(w.buf);
      w.resolve(request.length);
    } else {
      this.queue.push(request);
    }
  }

  /** Simulates the unmount: every pending and future read fails with ENODEV. */
  end(): void {
    this.ended = true;
    for (const w of this.waiting.splice(0)) w.reject(errnoError('ENODEV'));
  }

  read(buf: Buffer): Promise<number> {
    this.readsIssued += 1;
    const next = this.queue.shift();
    if (next) {
      next.copy(buf);
      return Promise.resolve(next.length);
    }
    if (this.ended) return Promise.reject(errnoError('ENODEV'));
    return new Promise((resolve, reject) => this.waiting.push({ buf, resolve, reject }));
  }

  writeReply(chunks: readonly Buffer[]): void {
    const msg = Buffer.concat(chunks);
    const h = decodeOutHeader(msg);
    if (h.lenBytes !== msg.length) throw new Error(`reply header says ${h.lenBytes}, message is ${msg.length}`);
    this.replies.push({ unique: h.unique, error: h.error, payload: msg.subarray(OutHeader.size) });
  }

  async writeNotify(chunks: readonly Buffer[]): Promise<void> {
    if (this.notifyError) throw errnoError(this.notifyError);
    this.notifies.push(Buffer.concat(chunks));
  }

  close(): void {
    this.closed = true;
  }

  replyTo(unique: bigint): RecordedReply | undefined {
    return this.replies.find((r) => r.unique === unique);
  }
}

export function request(opcode: number, unique: bigint, nodeid: bigint, body?: Buffer): Buffer {
  return encodeRequest({ opcode, unique, nodeid, uid: 1000, gid: 100, pid: 4242 }, body);
}

export function initRequest(minor = 45, flags: bigint = (1n << 43n) - 1n): Buffer {
  return request(Opcode.INIT, 1n, 0n, encodeInitIn({ major: 7, minor, maxReadaheadBytes: 131072, flags: flags | InitFlag.INIT_EXT }));
}
