// The o2net handshake: the Hello both ends exchange (protocol version, node number, cluster
// name, timeouts) and the HMAC challenge-response that proves each end holds the cluster
// key. Kept apart from the connection logic so tests can speak the handshake from a raw
// socket (to get past it and then misbehave).
import * as crypto from 'node:crypto';
import { loadProto } from '../proto';

/** Bumped on any incompatible change to framing or handshake. Must match exactly. */
export const O2NET_PROTOCOL_VERSION = 1;
export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32; // HMAC-SHA256
/** Handshake frames are tiny; a larger one is garbage. */
export const HANDSHAKE_MAX_PAYLOAD_BYTES = 1024;
const PROOF_LABEL = Buffer.from('o2net handshake proof v1', 'utf8');

export interface Hello {
  protocolVersion: number;
  clusterName: string;
  node: number;
  heartbeatDeadMs: number;
  idleTimeoutMs: number;
  keepaliveDelayMs: number;
  reconnectDelayMs: number;
  maxPayloadBytes: number;
  nonce: Buffer;
}

const root = () => loadProto('dlm/o2cb/o2net.proto');

export class HandshakeDecodeError extends Error {}

function decodeWith<T>(typeName: string, bytes: Buffer): T {
  const type = root().lookupType(typeName);
  try {
    const msg = type.decode(bytes);
    return type.toObject(msg, { defaults: true, bytes: Buffer }) as T;
  } catch (e) {
    throw new HandshakeDecodeError(`undecodable ${typeName}: ${(e as Error).message}`);
  }
}

function encodeWith(typeName: string, value: object): Buffer {
  const type = root().lookupType(typeName);
  const err = type.verify(value);
  if (err) throw new Error(`invalid ${typeName}: ${err}`);
  return Buffer.from(type.encode(type.fromObject(value)).finish());
}

export function encodeHello(h: Hello): Buffer {
  return encodeWith('o2net.Hello', h);
}

export function decodeHello(b: Buffer): Hello {
  const h = decodeWith<Hello>('o2net.Hello', b);
  if (!Buffer.isBuffer(h.nonce) || h.nonce.length !== NONCE_BYTES) {
    throw new HandshakeDecodeError(`hello nonce is ${Buffer.isBuffer(h.nonce) ? h.nonce.length : 'not'} bytes`);
  }
  return h;
}

export function encodeAuth(proof: Buffer): Buffer {
  return encodeWith('o2net.Auth', { proof });
}

export function decodeAuth(b: Buffer): Buffer {
  const a = decodeWith<{ proof: Buffer }>('o2net.Auth', b);
  return Buffer.isBuffer(a.proof) ? a.proof : Buffer.alloc(0);
}

export function encodeRefuse(reason: string): Buffer {
  return encodeWith('o2net.Refuse', { reason: reason.slice(0, 512) });
}

export function decodeRefuse(b: Buffer): string {
  return decodeWith<{ reason: string }>('o2net.Refuse', b).reason;
}

export function encodeHandlerError(message: string, code: string): Buffer {
  return encodeWith('o2net.HandlerError', { message: message.slice(0, 1024), code: code.slice(0, 64) });
}

export function decodeHandlerError(b: Buffer): { message: string; code: string } {
  return decodeWith<{ message: string; code: string }>('o2net.HandlerError', b);
}

/**
 * What `prover` sends to show it holds `key`. Both nonces are fresh per connection, so a
 * recorded proof is useless later; the node numbers are in the MAC in a fixed role order,
 * so a peer cannot reflect our own proof back at us.
 */
export function computeProof(
  key: Buffer,
  clusterName: string,
  prover: number,
  verifier: number,
  dialerNonce: Buffer,
  acceptorNonce: Buffer,
): Buffer {
  const nums = Buffer.alloc(8);
  nums.writeUInt32BE(prover, 0);
  nums.writeUInt32BE(verifier, 4);
  const name = Buffer.from(clusterName, 'utf8');
  const nameLen = Buffer.alloc(2);
  nameLen.writeUInt16BE(name.length, 0);
  return crypto
    .createHmac('sha256', key)
    .update(PROOF_LABEL)
    .update(nameLen)
    .update(name)
    .update(nums)
    .update(dialerNonce)
    .update(acceptorNonce)
    .digest();
}

export function proofMatches(expected: Buffer, got: Buffer): boolean {
  return got.length === expected.length && crypto.timingSafeEqual(expected, got);
}

export function newNonce(): Buffer {
  return crypto.randomBytes(NONCE_BYTES);
}

/**
 * Why a peer's Hello is unacceptable, as a log line naming both values, or null if it is
 * fine. All nodes must agree on the timeouts, or one could declare another dead before that
 * node has fenced itself.
 */
export function helloMismatch(ours: Hello, theirs: Hello): string | null {
  const n = theirs.node;
  if (theirs.protocolVersion !== ours.protocolVersion) {
    return `node ${n} speaks o2net protocol version ${theirs.protocolVersion} but we speak ${ours.protocolVersion}`;
  }
  if (theirs.clusterName !== ours.clusterName) {
    return `node ${n} is in cluster "${theirs.clusterName}" but we are in cluster "${ours.clusterName}"`;
  }
  const checks: Array<[keyof Hello, string]> = [
    ['heartbeatDeadMs', 'heartbeat dead time'],
    ['idleTimeoutMs', 'network idle timeout'],
    ['keepaliveDelayMs', 'network keepalive delay'],
    ['maxPayloadBytes', 'maximum message payload'],
  ];
  for (const [field, what] of checks) {
    if (theirs[field] !== ours[field]) {
      const unit = field === 'maxPayloadBytes' ? 'bytes' : 'ms';
      return `node ${n} uses a ${what} of ${theirs[field]} ${unit} but we use ${ours[field]} ${unit}`;
    }
  }
  return null;
}
