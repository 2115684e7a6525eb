// DlmDomain: one o2dlm lock space (one per mounted volume) on one node. It wires the
// parts together (client, server, mastery, recovery, membership, migration, purge), routes
// each message type to its handler, and offers the stackglue-shaped API:
//   join() -> the negotiated filesystem protocol; lock()/unlock() queue a request whose
//   outcome arrives through the callbacks (see client.ts for the exact contract);
//   leave() migrates what this node masters and exits the domain.
// The transport's node-down events start recovery; onEviction(n) fires when it is done.
import type { Lksb, LockMode, ProtocolVersion } from '../../../stackglue/types';
import type { Transport } from '../transport';
import { Client } from './client';
import { Core, DomainOptions } from './core';
import { Dispatcher, DomainEndpoint } from './dispatch';
import { Mastery } from './mastery';
import { Membership } from './membership';
import * as M from './messages';
import { MSG, MsgType, Reply } from './messages';
import { Migration } from './migration';
import { modeName } from './modes';
import { Purger } from './purge';
import { Recovery } from './recovery';
import { Server } from './server';
import { AST_KIND, DLM_STATUS, DlmError, JOIN, MIG_FLAG } from './status';

export type { DomainOptions } from './core';
export { DlmError, DlmProtocolError } from './status';

/** A JSON-able view of one resource (for debugging and tests). */
export interface ResourceDump {
  name: string;
  owner: number;
  recovering: boolean;
  migratingTo: number | null;
  lvb: string;
  refmap: number[];
  granted: string[];
  converting: string[];
  blocked: string[];
  local: Array<{ seq: number; granted: string; pending: string | null }>;
}

export interface DomainDump {
  node: number;
  domain: string;
  state: string;
  members: number[];
  recovery: object;
  resources: ResourceDump[];
}

export class DlmDomain implements DomainEndpoint {
  private readonly core: Core;
  private readonly client: Client;
  private readonly server: Server;
  private readonly mastery: Mastery;
  private readonly recovery: Recovery;
  private readonly membership: Membership;
  private readonly migration: Migration;
  private readonly purger: Purger;
  private readonly dispatcher: Dispatcher;
  private unsubscribe: (() => void) | null = null;

  constructor(transport: Transport, opts: DomainOptions) {
    const core = new Core(transport, opts);
    this.core = core;
    this.client = new Client(core);
    this.server = new Server(core, this.client.deliverLocal);
    this.mastery = new Mastery(core);
    this.client.server = this.server;
    this.client.mastery = this.mastery;
    this.recovery = new Recovery(core, this.server, this.client, this.mastery, (n) => opts.onEviction(n));
    this.membership = new Membership(core, this.server, this.mastery);
    this.migration = new Migration(core, this.server, this.mastery);
    this.purger = new Purger(core, this.client);
    this.dispatcher = Dispatcher.for(transport);
  }

  get name(): string {
    return this.core.name;
  }

  get thisNode(): number {
    return this.core.thisNode;
  }

  /** The filesystem locking protocol the domain runs at (valid after join). */
  get proto(): ProtocolVersion {
    return { ...this.core.proto };
  }

  get state(): string {
    return this.core.state;
  }

  /** Members other than this node. */
  members(): number[] {
    return [...this.core.members].sort((a, b) => a - b);
  }

  log(line: string): void {
    this.core.log(line);
  }

  async join(): Promise<ProtocolVersion> {
    this.dispatcher.attach(this);
    // Subscribe first: a death during the join must not be missed.
    this.unsubscribe = this.core.transport.subscribe({
      onNodeUp: (n) => this.core.log(`node ${n} up`),
      onNodeDown: (n) => this.recovery.nodeDown(n),
    });
    try {
      const proto = await this.membership.join();
      this.purger.start();
      return proto;
    } catch (e) {
      this.detach();
      throw e;
    }
  }

  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void {
    this.client.lock(lksb, mode, flags, name);
  }

  unlock(lksb: Lksb, flags: number): void {
    this.client.unlock(lksb, flags);
  }

  /** Clean leave: every lock must have been dropped; what this node masters moves away. */
  async leave(): Promise<void> {
    const core = this.core;
    if (core.state !== 'joined') throw new DlmError('EINVAL', `leave: domain is ${core.state}`);
    if (this.client.lockCount > 0) throw new DlmError('EBUSY', `leave: ${this.client.lockCount} locks still held`);
    await core.waitRecovery();
    core.state = 'leaving';
    this.purger.stop();
    await this.membership.beginExit();
    await this.migration.migrateAll();
    await this.purger.derefAll();
    await this.membership.exit();
    core.state = 'left';
    this.detach();
    core.changed.notify();
  }

  /**
   * Stops at once without telling anyone (this node died, or a test tears down): every
   * pending request completes with ENOTCONN, timers stop, handlers go away.
   */
  abandon(): void {
    if (this.core.state === 'left' || this.core.state === 'abandoned') return;
    this.core.state = 'abandoned';
    this.client.abandonAll();
    this.detach();
    this.core.changed.notify();
  }

  private detach(): void {
    this.purger.stop();
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.dispatcher.detach(this);
  }

  dump(): DomainDump {
    const core = this.core;
    const lock = (l: { node: number; seq: number; granted: number; requested: number }): string =>
      `${l.node}:${l.seq} ${modeName(l.granted)}${l.requested >= 0 ? `->${modeName(l.requested)}` : ''}`;
    const resources: ResourceDump[] = [...core.resources.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((r) => ({
        name: r.name,
        owner: r.owner,
        recovering: r.recovering,
        migratingTo: r.migratingTo,
        lvb: r.owner === core.thisNode ? r.q.lvb.toString('hex') : '',
        refmap: [...r.refmap].sort((a, b) => a - b),
        granted: r.q.granted.map(lock),
        converting: r.q.converting.map(lock),
        blocked: r.q.blocked.map(lock),
        local: [...r.local.values()].map((ll) => ({
          seq: ll.seq,
          granted: modeName(ll.granted),
          pending: ll.pending ? `${ll.pending.kind} ${modeName(ll.pending.mode)} ${ll.pending.phase}` : null,
        })),
      }));
    return { node: core.thisNode, domain: core.name, state: core.state, members: this.members(), recovery: this.recovery.describe(), resources };
  }

  /** Routes one decoded message to its handler (the dispatcher turns throws into replies). */
  async handle(type: MsgType, from: number, payload: Buffer): Promise<Partial<Reply>> {
    const core = this.core;
    // Join traffic comes from nodes outside the domain; everything else must come from a member.
    switch (type) {
      case MSG.QUERY_JOIN:
        return this.membership.onQueryJoin(from, M.decodeQueryJoin(payload));
      case MSG.ASSERT_JOINED:
        return this.membership.onAssertJoined(from, M.decodeNodeNotice(payload));
      case MSG.CANCEL_JOIN:
        return this.membership.onCancelJoin(from, M.decodeNodeNotice(payload));
      case MSG.QUERY_REGION:
      case MSG.QUERY_NODEINFO:
        // Accepted for completeness: there is no global-heartbeat region list or node table to compare here.
        M.decodeNodeNotice(payload);
        return { status: DLM_STATUS.NORMAL };
      default:
        break;
    }
    // Decode before any check so that garbage is always BADARGS.
    const decoded = this.decode(type, payload);
    if (!core.active) return { status: DLM_STATUS.NOT_IN_DOMAIN, join: JOIN.OK_NO_MAP };
    if (!core.members.has(from)) return { status: DLM_STATUS.NOT_IN_DOMAIN, error: `node ${from} is not a member` };
    switch (decoded.type) {
      case MSG.MASTER_REQUEST:
        return this.mastery.onMasterRequest(from, decoded.m.name);
      case MSG.ASSERT_MASTER:
        return this.mastery.onAssertMaster(from, decoded.m);
      case MSG.MASTER_REQUERY:
        return this.mastery.onMasterRequery(decoded.m.name);
      case MSG.CREATE_LOCK:
        return this.server.handleCreate(from, decoded.m);
      case MSG.CONVERT_LOCK:
        return this.server.handleConvert(from, decoded.m);
      case MSG.UNLOCK_LOCK:
        return this.server.handleUnlock(from, decoded.m);
      case MSG.PROXY_AST: {
        const m = decoded.m;
        if (!core.members.has(from)) return { status: DLM_STATUS.NOT_IN_DOMAIN };
        return { status: this.client.onAst(m.name, m.seq, m.kind === AST_KIND.AST ? 'ast' : 'bast', m.mode, m.lvb.length ? m.lvb : undefined) };
      }
      case MSG.DEREF_LOCKRES:
        return this.server.handleDeref(from, decoded.m.name);
      case MSG.DEREF_LOCKRES_DONE:
        return { status: DLM_STATUS.NORMAL };
      case MSG.MIGRATE_REQUEST:
        return this.migration.onMigrateRequest(from, decoded.m);
      case MSG.MIG_LOCKRES:
        if (decoded.m.flags === MIG_FLAG.RECOVERY) return this.recovery.onRecoveryData(from, decoded.m);
        if (decoded.m.flags === MIG_FLAG.MIGRATION) return this.migration.onMigrated(from, decoded.m);
        return { status: DLM_STATUS.BADARGS, error: `MIG_LOCKRES flags ${decoded.m.flags}` };
      case MSG.BEGIN_RECO:
        if (!core.members.has(from)) return { status: DLM_STATUS.NOT_IN_DOMAIN };
        return this.recovery.onBeginReco(from, decoded.m);
      case MSG.LOCK_REQUEST:
        return this.recovery.onLockRequest(from, decoded.m);
      case MSG.RECO_DATA_DONE:
        return this.recovery.onRecoDataDone(from, decoded.m);
      case MSG.FINALIZE_RECO:
        return this.recovery.onFinalize(from, decoded.m);
      case MSG.EXIT_DOMAIN:
        return this.membership.onExitDomain(from, decoded.m);
      case MSG.BEGIN_EXIT_DOMAIN:
        return this.membership.onBeginExit(from, decoded.m);
    }
  }

  private decode(type: MsgType, p: Buffer): Decoded {
    switch (type) {
      case MSG.MASTER_REQUEST: return { type, m: M.decodeMasterRequest(p) };
      case MSG.ASSERT_MASTER: return { type, m: M.decodeAssertMaster(p) };
      case MSG.MASTER_REQUERY: return { type, m: M.decodeMasterRequery(p) };
      case MSG.CREATE_LOCK: return { type, m: M.decodeCreateLock(p) };
      case MSG.CONVERT_LOCK: return { type, m: M.decodeConvertLock(p) };
      case MSG.UNLOCK_LOCK: return { type, m: M.decodeUnlockLock(p) };
      case MSG.PROXY_AST: return { type, m: M.decodeProxyAst(p) };
      case MSG.DEREF_LOCKRES:
      case MSG.DEREF_LOCKRES_DONE: return { type, m: M.decodeDerefLockres(p) };
      case MSG.MIGRATE_REQUEST: return { type, m: M.decodeMigrateRequest(p) };
      case MSG.MIG_LOCKRES: return { type, m: M.decodeMigLockres(p) };
      case MSG.BEGIN_RECO:
      case MSG.LOCK_REQUEST:
      case MSG.RECO_DATA_DONE:
      case MSG.FINALIZE_RECO: return { type, m: M.decodeReco(p) };
      case MSG.EXIT_DOMAIN:
      case MSG.BEGIN_EXIT_DOMAIN: return { type, m: M.decodeNodeNotice(p) };
      default: throw new M.BadMessage(`type ${type} not handled here`);
    }
  }
}

type Decoded =
  | { type: typeof MSG.MASTER_REQUEST; m: M.MasterRequest }
  | { type: typeof MSG.ASSERT_MASTER; m: M.AssertMaster }
  | { type: typeof MSG.MASTER_REQUERY; m: M.MasterRequery }
  | { type: typeof MSG.CREATE_LOCK; m: M.CreateLock }
  | { type: typeof MSG.CONVERT_LOCK; m: M.ConvertLock }
  | { type: typeof MSG.UNLOCK_LOCK; m: M.UnlockLock }
  | { type: typeof MSG.PROXY_AST; m: M.ProxyAst }
  | { type: typeof MSG.DEREF_LOCKRES | typeof MSG.DEREF_LOCKRES_DONE; m: M.DerefLockres }
  | { type: typeof MSG.MIGRATE_REQUEST; m: M.MigrateRequest }
  | { type: typeof MSG.MIG_LOCKRES; m: M.MigLockres }
  | { type: typeof MSG.BEGIN_RECO | typeof MSG.LOCK_REQUEST | typeof MSG.RECO_DATA_DONE | typeof MSG.FINALIZE_RECO; m: M.Reco }
  | { type: typeof MSG.EXIT_DOMAIN | typeof MSG.BEGIN_EXIT_DOMAIN; m: M.NodeNotice };
