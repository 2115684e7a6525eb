// The o2dlm message codec: message type numbers (reference §3.6), typed bodies, and
// decoders that validate every field so a handler sees only well-formed input. A payload
// that fails to decode or validate throws BadMessage; the dispatcher answers BADARGS.
import * as protobuf from 'protobufjs';
import { loadProto } from '../../proto';
import { NAME_BYTES_MAX } from './status';
import { isGrantMode, isWireMode } from './modes';
import { LVB_BYTES } from '../../../stackglue/types';

export const MSG = {
  MASTER_REQUEST: 500,
  ASSERT_MASTER: 502,
  CREATE_LOCK: 503,
  CONVERT_LOCK: 504,
  PROXY_AST: 505,
  UNLOCK_LOCK: 506,
  DEREF_LOCKRES: 507,
  MIGRATE_REQUEST: 508,
  MIG_LOCKRES: 509,
  QUERY_JOIN: 510,
  ASSERT_JOINED: 511,
  CANCEL_JOIN: 512,
  EXIT_DOMAIN: 513,
  MASTER_REQUERY: 514,
  LOCK_REQUEST: 515,
  RECO_DATA_DONE: 516,
  BEGIN_RECO: 517,
  FINALIZE_RECO: 518,
  QUERY_REGION: 519,
  QUERY_NODEINFO: 520,
  BEGIN_EXIT_DOMAIN: 521,
  DEREF_LOCKRES_DONE: 522,
} as const;
export type MsgType = (typeof MSG)[keyof typeof MSG];

export interface Version { major: number; minor: number }
export interface MasterRequest { domain: string; name: string }
export interface AssertMaster { domain: string; name: string; master: number; flags: number }
export interface CreateLock { domain: string; name: string; seq: number; mode: number; flags: number }
export interface ConvertLock { domain: string; name: string; seq: number; mode: number; flags: number; lvb: Buffer }
export interface ProxyAst { domain: string; name: string; seq: number; kind: number; mode: number; lvb: Buffer }
export interface UnlockLock { domain: string; name: string; seq: number; flags: number; lvb: Buffer }
export interface DerefLockres { domain: string; name: string }
export interface MigrateRequest { domain: string; name: string; from: number; to: number }
export interface LockRecord {
  node: number; seq: number; queue: number; granted: number; requested: number; getLvb: boolean; highestBlocked: number;
}
export interface MigLockres {
  domain: string; name: string; flags: number; sender: number; lvb: Buffer; lvbVouched: boolean;
  locks: LockRecord[]; refmap: number[]; gen: number;
}
export interface QueryJoin { domain: string; node: number; dlmProto: Version; fsProto: Version; live: number[] }
export interface NodeNotice { domain: string; node: number }
export interface MasterRequery { domain: string; name: string }
export interface Reco { domain: string; recoMaster: number; dead: number[]; gen: number; stage: number; sender: number }
export interface Reply {
  status: number; response: number; master: number; hasRef: boolean; join: number;
  dlmProto: Version; fsProto: Version; error: string; dead: number[];
}

/** Which schema message each type number carries. */
const SCHEMA: Record<MsgType, string> = {
  [MSG.MASTER_REQUEST]: 'MasterRequest',
  [MSG.ASSERT_MASTER]: 'AssertMaster',
  [MSG.CREATE_LOCK]: 'CreateLock',
  [MSG.CONVERT_LOCK]: 'ConvertLock',
  [MSG.PROXY_AST]: 'ProxyAst',
  [MSG.UNLOCK_LOCK]: 'UnlockLock',
  [MSG.DEREF_LOCKRES]: 'DerefLockres',
  [MSG.MIGRATE_REQUEST]: 'MigrateRequest',
  [MSG.MIG_LOCKRES]: 'MigLockres',
  [MSG.QUERY_JOIN]: 'QueryJoin',
  [MSG.ASSERT_JOINED]: 'NodeNotice',
  [MSG.CANCEL_JOIN]: 'NodeNotice',
  [MSG.EXIT_DOMAIN]: 'NodeNotice',
  [MSG.MASTER_REQUERY]: 'MasterRequery',
  [MSG.LOCK_REQUEST]: 'Reco',
  [MSG.RECO_DATA_DONE]: 'Reco',
  [MSG.BEGIN_RECO]: 'Reco',
  [MSG.FINALIZE_RECO]: 'Reco',
  [MSG.QUERY_REGION]: 'NodeNotice',
  [MSG.QUERY_NODEINFO]: 'NodeNotice',
  [MSG.BEGIN_EXIT_DOMAIN]: 'NodeNotice',
  [MSG.DEREF_LOCKRES_DONE]: 'DerefLockres',
};

export const ALL_TYPES: readonly MsgType[] = Object.values(MSG);

export class BadMessage extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadMessage';
  }
}

let root: protobuf.Root | null = null;
function type(name: string): protobuf.Type {
  root ??= loadProto('dlm/o2cb/o2dlm.proto');
  return root.lookupType(`o2dlm.${name}`);
}

function encodeAs(schema: string, body: object): Buffer {
  const t = type(schema);
  const msg = t.fromObject(body);
  return Buffer.from(t.encode(msg).finish());
}

export function encode(msgType: MsgType, body: object): Buffer {
  return encodeAs(SCHEMA[msgType], body);
}

export function encodeReply(r: Partial<Reply>): Buffer {
  return encodeAs('Reply', r);
}

type Raw = Record<string, unknown>;

function decodeRaw(schema: string, payload: Buffer): Raw {
  try {
    const t = type(schema);
    // The plain Reader, not the Buffer one: protobufjs's BufferReader clips a string that
    // runs past the end of the payload instead of failing.
    const reader = new protobuf.Reader(payload);
    const msg = t.decode(reader);
    if (reader.pos !== payload.length) throw new Error(`read ${reader.pos} of ${payload.length} bytes`);
    return t.toObject(msg, { defaults: true, arrays: true }) as Raw;
  } catch (e) {
    throw new BadMessage(`${schema}: ${(e as Error).message}`);
  }
}

// Field readers: each checks the type and range of one field.
function str(r: Raw, k: string, maxBytes: number, allowEmpty = false): string {
  const v = r[k];
  if (typeof v !== 'string') throw new BadMessage(`${k}: not a string`);
  const n = Buffer.byteLength(v);
  if (n > maxBytes || (!allowEmpty && n === 0)) throw new BadMessage(`${k}: length ${n}`);
  return v;
}
function uint(r: Raw, k: string, max: number): number {
  const v = r[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new BadMessage(`${k}: ${String(v)} out of range`);
  return v;
}
function node(r: Raw, k: string): number {
  return uint(r, k, 254);
}
function wireMode(r: Raw, k: string, grantOnly: boolean): number {
  const v = r[k];
  if (typeof v !== 'number' || !(grantOnly ? isGrantMode(v) : isWireMode(v))) throw new BadMessage(`${k}: bad mode ${String(v)}`);
  return v;
}
function bool(r: Raw, k: string): boolean {
  const v = r[k];
  if (typeof v !== 'boolean') throw new BadMessage(`${k}: not a bool`);
  return v;
}
/** An LVB: empty (absent) or exactly LVB_BYTES. */
function lvb(r: Raw, k: string): Buffer {
  const v = r[k];
  if (!(v instanceof Uint8Array)) throw new BadMessage(`${k}: not bytes`);
  if (v.length !== 0 && v.length !== LVB_BYTES) throw new BadMessage(`${k}: ${v.length} bytes`);
  return Buffer.from(v);
}
function version(r: Raw, k: string): Version {
  const v = r[k];
  if (v === null || v === undefined) return { major: 0, minor: 0 };
  if (typeof v !== 'object') throw new BadMessage(`${k}: not a version`);
  return { major: uint(v as Raw, 'major', 0xffff), minor: uint(v as Raw, 'minor', 0xffff) };
}
function nodeList(r: Raw, k: string): number[] {
  const v = r[k];
  if (!Array.isArray(v) || v.length > 255) throw new BadMessage(`${k}: not a node list`);
  return v.map((x: unknown) => node({ x }, 'x'));
}

const U32 = 0xffffffff;
const domain = (r: Raw): string => str(r, 'domain', 64);
const name = (r: Raw): string => str(r, 'name', NAME_BYTES_MAX);

export function decodeMasterRequest(p: Buffer): MasterRequest {
  const r = decodeRaw('MasterRequest', p);
  return { domain: domain(r), name: name(r) };
}
export function decodeAssertMaster(p: Buffer): AssertMaster {
  const r = decodeRaw('AssertMaster', p);
  return { domain: domain(r), name: name(r), master: node(r, 'master'), flags: uint(r, 'flags', U32) };
}
export function decodeCreateLock(p: Buffer): CreateLock {
  const r = decodeRaw('CreateLock', p);
  return { domain: domain(r), name: name(r), seq: uint(r, 'seq', U32), mode: wireMode(r, 'mode', true), flags: uint(r, 'flags', U32) };
}
export function decodeConvertLock(p: Buffer): ConvertLock {
  const r = decodeRaw('ConvertLock', p);
  return { domain: domain(r), name: name(r), seq: uint(r, 'seq', U32), mode: wireMode(r, 'mode', true), flags: uint(r, 'flags', U32), lvb: lvb(r, 'lvb') };
}
export function decodeProxyAst(p: Buffer): ProxyAst {
  const r = decodeRaw('ProxyAst', p);
  const kind = uint(r, 'kind', 2);
  if (kind === 0) throw new BadMessage('kind: 0');
  return { domain: domain(r), name: name(r), seq: uint(r, 'seq', U32), kind, mode: wireMode(r, 'mode', true), lvb: lvb(r, 'lvb') };
}
export function decodeUnlockLock(p: Buffer): UnlockLock {
  const r = decodeRaw('UnlockLock', p);
  return { domain: domain(r), name: name(r), seq: uint(r, 'seq', U32), flags: uint(r, 'flags', U32), lvb: lvb(r, 'lvb') };
}
export function decodeDerefLockres(p: Buffer): DerefLockres {
  const r = decodeRaw('DerefLockres', p);
  return { domain: domain(r), name: name(r) };
}
export function decodeMigrateRequest(p: Buffer): MigrateRequest {
  const r = decodeRaw('MigrateRequest', p);
  return { domain: domain(r), name: name(r), from: node(r, 'from'), to: node(r, 'to') };
}
export function decodeMigLockres(p: Buffer): MigLockres {
  const r = decodeRaw('MigLockres', p);
  const rawLocks = r.locks;
  if (!Array.isArray(rawLocks) || rawLocks.length > 100000) throw new BadMessage('locks: not a list');
  const locks = rawLocks.map((l: unknown): LockRecord => {
    if (typeof l !== 'object' || l === null) throw new BadMessage('locks: not a record');
    const x = l as Raw;
    const rec: LockRecord = {
      node: node(x, 'node'), seq: uint(x, 'seq', U32), queue: uint(x, 'queue', 2),
      granted: wireMode(x, 'granted', false), requested: wireMode(x, 'requested', false),
      getLvb: bool(x, 'getLvb'), highestBlocked: wireMode(x, 'highestBlocked', false),
    };
    // The queue decides which modes must be present.
    const ok = rec.queue === 0 ? rec.granted >= 0 && rec.requested < 0
      : rec.queue === 1 ? rec.granted >= 0 && rec.requested > rec.granted
        : rec.granted < 0 && rec.requested >= 0;
    if (!ok) throw new BadMessage(`lock ${rec.node}:${rec.seq}: modes do not fit queue ${rec.queue}`);
    return rec;
  });
  return {
    domain: domain(r), name: name(r), flags: uint(r, 'flags', U32), sender: node(r, 'sender'), lvb: lvb(r, 'lvb'),
    lvbVouched: bool(r, 'lvbVouched'), locks, refmap: nodeList(r, 'refmap'), gen: uint(r, 'gen', U32),
  };
}
export function decodeQueryJoin(p: Buffer): QueryJoin {
  const r = decodeRaw('QueryJoin', p);
  return { domain: domain(r), node: node(r, 'node'), dlmProto: version(r, 'dlmProto'), fsProto: version(r, 'fsProto'), live: nodeList(r, 'live') };
}
export function decodeNodeNotice(p: Buffer): NodeNotice {
  const r = decodeRaw('NodeNotice', p);
  return { domain: domain(r), node: node(r, 'node') };
}
export function decodeMasterRequery(p: Buffer): MasterRequery {
  const r = decodeRaw('MasterRequery', p);
  return { domain: domain(r), name: name(r) };
}
export function decodeReco(p: Buffer): Reco {
  const r = decodeRaw('Reco', p);
  return {
    domain: domain(r), recoMaster: node(r, 'recoMaster'), dead: nodeList(r, 'dead'), gen: uint(r, 'gen', U32),
    stage: uint(r, 'stage', 2), sender: node(r, 'sender'),
  };
}
export function decodeReply(p: Buffer): Reply {
  const r = decodeRaw('Reply', p);
  const status = r.status;
  if (typeof status !== 'number' || !Number.isInteger(status)) throw new BadMessage('status: not an integer');
  return {
    status, response: uint(r, 'response', 3), master: uint(r, 'master', 255), hasRef: bool(r, 'hasRef'),
    join: uint(r, 'join', 4), dlmProto: version(r, 'dlmProto'), fsProto: version(r, 'fsProto'),
    error: typeof r.error === 'string' ? r.error : '', dead: nodeList(r, 'dead'),
  };
}

/** The domain a payload of `msgType` is addressed to (throws BadMessage). */
export function domainOf(msgType: MsgType, payload: Buffer): string {
  return domain(decodeRaw(SCHEMA[msgType], payload));
}
