// Framing and schema of the local o2cbd protocol (o2cbd.proto): a 4-byte big-endian length,
// then one protobuf message. Shared by the daemon and the stackglue o2cb plugin.
import type * as protobuf from 'protobufjs';
import { loadProto } from '../proto';

/** No local message comes near this; a bigger length means a confused or hostile peer. */
export const LOCAL_FRAME_BYTES_MAX = 64 * 1024;

export type ClientMsg =
  | { connect: { cluster: string; group: string; protoMajor: number; protoMinor: number; device: string } }
  | { lock: { lockId: number; mode: number; flags: number; name: string; lvb: Uint8Array } }
  | { unlock: { lockId: number; flags: number; lvb: Uint8Array } }
  | { disconnect: Record<string, never> };

export interface DaemonMsg {
  connected?: { thisNode: number; protoMajor: number; protoMinor: number };
  grant?: { lockId: number; status: number; granted: number; lvb: Uint8Array; lvbValid: boolean; gone?: boolean };
  blocking?: { lockId: number; level: number };
  unlocked?: { lockId: number; status: number; granted: number; gone?: boolean };
  recovery?: { node: number };
  nodeDown?: { node: number };
  fenced?: { reason: string };
  refused?: { code: string; message: string };
  disconnected?: Record<string, never>;
}

let types: { client: protobuf.Type; daemon: protobuf.Type } | null = null;

function schema(): { client: protobuf.Type; daemon: protobuf.Type } {
  if (!types) {
    const root = loadProto('dlm/o2cb/o2cbd.proto');
    types = { client: root.lookupType('o2cbd.ClientMsg'), daemon: root.lookupType('o2cbd.DaemonMsg') };
  }
  return types;
}

function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

export function encodeClientMsg(m: ClientMsg): Buffer {
  const t = schema().client;
  return frame(t.encode(t.fromObject(m)).finish());
}

export function encodeDaemonMsg(m: DaemonMsg): Buffer {
  const t = schema().daemon;
  return frame(t.encode(t.fromObject(m)).finish());
}

const DECODE_OPTS = { longs: Number, bytes: Buffer, defaults: true, oneofs: false } as const;

export function decodeClientMsg(body: Buffer): ClientMsg {
  const t = schema().client;
  const obj = t.toObject(t.decode(body), DECODE_OPTS) as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined && obj[k] !== null);
  if (keys.length !== 1) throw new Error(`client message with ${keys.length} operations`);
  return obj as unknown as ClientMsg;
}

export function decodeDaemonMsg(body: Buffer): DaemonMsg {
  const t = schema().daemon;
  return t.toObject(t.decode(body), DECODE_OPTS) as DaemonMsg;
}

/**
 * Splits a byte stream into frame bodies. push() returns the complete bodies so far; it
 * throws on a length over LOCAL_FRAME_BYTES_MAX (the caller closes that connection).
 */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (len > LOCAL_FRAME_BYTES_MAX) throw new Error(`frame of ${len} bytes (limit ${LOCAL_FRAME_BYTES_MAX})`);
      if (this.pending.length < 4 + len) break;
      out.push(this.pending.subarray(4, 4 + len));
      this.pending = this.pending.subarray(4 + len);
    }
    return out;
  }
}

export const MODE_NUM = { NL: 0, PR: 1, EX: 2 } as const;
export const MODE_BY_NUM = ['NL', 'PR', 'EX'] as const;
