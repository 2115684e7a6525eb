// Domain join and exit (reference §3.8). A joiner asks every live node (QUERY_JOIN, with
// the o2dlm and filesystem protocol versions); members answer JOIN_OK with the protocol the
// domain runs at, nodes without the domain answer NOT_IN_DOMAIN (or have no o2dlm at all:
// ENOPROTOOPT). Only one node joins at a time: a member that said JOIN_OK refuses other
// joiners (JOIN_DISALLOW) until ASSERT_JOINED or CANCEL_JOIN, and so does a node that is
// itself joining; a refused joiner cancels and backs off. Joining is also refused while a
// recovery runs. The filesystem protocol must have the same major, and the joiner's minor
// must be at least the domain's; it then runs at the domain's (lower or equal) minor.
import type { ProtocolVersion } from '../../../stackglue/types';
import { negotiateProtocol } from '../../../stackglue/types';
import { TransportError } from '../transport';
import type { Core } from './core';
import { isTransportError } from './core';
import type { NodeNotice, QueryJoin, Reply } from './messages';
import { MSG } from './messages';
import type { Mastery } from './mastery';
import type { Server } from './server';
import { DEFAULTS, DLM_PROTOCOL, DLM_STATUS, DlmError, DlmProtocolError, JOIN, OWNER_UNKNOWN } from './status';

type Answer =
  | { node: number; kind: 'member'; fsProto: ProtocolVersion }
  | { node: number; kind: 'outside' | 'disallow' }
  | { node: number; kind: 'mismatch'; why: string };

export class Membership {
  /** Jitter source for join back-off: deterministic per node, different across nodes. */
  private rand: number;

  constructor(private readonly core: Core, private readonly server: Server, private readonly mastery: Mastery) {
    this.rand = (core.thisNode + 1) * 2654435761 >>> 0;
  }

  private jitter(maxMs: number): number {
    this.rand = (Math.imul(this.rand, 1103515245) + 12345) >>> 0;
    return this.rand % Math.max(1, maxMs);
  }

  private async ask(n: number): Promise<Answer> {
    const core = this.core;
    try {
      const live = [...core.transport.liveNodes()];
      const r = await core.request(n, MSG.QUERY_JOIN, { node: core.thisNode, dlmProto: DLM_PROTOCOL, fsProto: core.opts.proto, live });
      if (r.status === DLM_STATUS.NOT_IN_DOMAIN || r.join === JOIN.OK_NO_MAP) return { node: n, kind: 'outside' };
      if (r.status !== DLM_STATUS.NORMAL) return { node: n, kind: 'disallow' };
      if (r.join === JOIN.DISALLOW) return { node: n, kind: 'disallow' };
      if (r.join === JOIN.PROTOCOL_MISMATCH) {
        return { node: n, kind: 'mismatch', why: `node ${n} runs filesystem locking protocol ${r.fsProto.major}.${r.fsProto.minor} (o2dlm ${r.dlmProto.major}.${r.dlmProto.minor}); this node speaks up to ${core.opts.proto.major}.${core.opts.proto.minor} (o2dlm ${DLM_PROTOCOL.major}.${DLM_PROTOCOL.minor})` };
      }
      if (r.join !== JOIN.OK) return { node: n, kind: 'disallow' };
      const agreed = negotiateProtocol(core.opts.proto, r.fsProto);
      if (!agreed || r.fsProto.minor > core.opts.proto.minor) {
        return { node: n, kind: 'mismatch', why: `node ${n} runs filesystem locking protocol ${r.fsProto.major}.${r.fsProto.minor}, this node speaks up to ${core.opts.proto.major}.${core.opts.proto.minor}` };
      }
      return { node: n, kind: 'member', fsProto: r.fsProto };
    } catch (e) {
      if (e instanceof TransportError && e.code === 'ENOPROTOOPT') return { node: n, kind: 'outside' };
      if (isTransportError(e)) return { node: n, kind: 'disallow' }; // unreachable for now: try again
      throw e;
    }
  }

  private async notify(nodes: number[], type: typeof MSG.ASSERT_JOINED | typeof MSG.CANCEL_JOIN | typeof MSG.EXIT_DOMAIN | typeof MSG.BEGIN_EXIT_DOMAIN): Promise<boolean> {
    const core = this.core;
    const results = await Promise.all(nodes.map(async (n) => {
      try {
        const r = await core.request(n, type, { node: core.thisNode });
        return r.status === DLM_STATUS.NORMAL;
      } catch (e) {
        if (!isTransportError(e)) throw e;
        core.log(`message ${type} to ${n}: ${e.code}`);
        return false;
      }
    }));
    return results.every(Boolean);
  }

  async join(): Promise<ProtocolVersion> {
    const core = this.core;
    if (core.state !== 'new') throw new DlmError('EINVAL', `join: domain is ${core.state}`);
    core.state = 'joining';
    for (let attempt = 0; attempt < DEFAULTS.joinAttemptsMax; attempt++) {
      if (attempt > 0) {
        // Backing off, this node is outside the domain: others may join meanwhile.
        core.joinAttemptActive = false;
        await core.sleep(core.tun.joinBackoffMs + this.jitter(core.tun.joinBackoffMs * (1 + Math.min(attempt, 4))));
      }
      core.joinAttemptActive = true;
      const nodes = [...core.transport.liveNodes()].sort((a, b) => a - b);
      const answers = await Promise.all(nodes.map((n) => this.ask(n)));
      const members = answers.filter((a): a is Extract<Answer, { kind: 'member' }> => a.kind === 'member');
      const mismatch = answers.find((a): a is Extract<Answer, { kind: 'mismatch' }> => a.kind === 'mismatch');
      if (mismatch) {
        await this.notify(members.map((m) => m.node), MSG.CANCEL_JOIN);
        core.joinAttemptActive = false;
        core.state = 'new';
        throw new DlmProtocolError(`cannot join domain ${core.name}: ${mismatch.why}`, mismatch.node);
      }
      if (answers.some((a) => a.kind === 'disallow')) {
        await this.notify(members.map((m) => m.node), MSG.CANCEL_JOIN);
        continue;
      }
      const running = members.length > 0 ? members[0].fsProto : core.opts.proto;
      for (const m of members) {
        if (m.fsProto.major !== running.major || m.fsProto.minor !== running.minor) core.log(`assertion: members disagree on the protocol (${m.node})`);
      }
      const memberNodes = members.map((m) => m.node);
      if (!(await this.notify(memberNodes, MSG.ASSERT_JOINED))) {
        await this.notify(memberNodes, MSG.CANCEL_JOIN);
        continue;
      }
      for (const n of memberNodes) core.members.add(n);
      core.proto = { major: running.major, minor: running.minor };
      core.joinAttemptActive = false;
      core.state = 'joined';
      core.log(`joined with members [${memberNodes}] at protocol ${core.proto.major}.${core.proto.minor}`);
      core.changed.notify();
      return { ...core.proto };
    }
    core.joinAttemptActive = false;
    core.state = 'new';
    throw new DlmError('ETIMEDOUT', `join of ${core.name}: still refused after ${DEFAULTS.joinAttemptsMax} attempts`);
  }

  /** BEGIN_EXIT_DOMAIN to every member. */
  beginExit(): Promise<boolean> {
    return this.notify(this.core.liveMembers(), MSG.BEGIN_EXIT_DOMAIN);
  }

  /** EXIT_DOMAIN to every member. */
  exit(): Promise<boolean> {
    return this.notify(this.core.liveMembers(), MSG.EXIT_DOMAIN);
  }

  onQueryJoin(from: number, m: QueryJoin): Partial<Reply> {
    const core = this.core;
    if (m.node !== from) return { status: DLM_STATUS.BADARGS, error: 'a node asks to join for itself' };
    // One joiner at a time, and that includes this node while it tries to join.
    if (core.state === 'joining' && core.joinAttemptActive) return { status: DLM_STATUS.NORMAL, join: JOIN.DISALLOW };
    if (core.state !== 'joined') return { status: DLM_STATUS.NOT_IN_DOMAIN, join: JOIN.OK_NO_MAP };
    if (core.recovering || core.recoveryMap.has(from) || core.members.has(from)) return { status: DLM_STATUS.NORMAL, join: JOIN.DISALLOW };
    // Both sides must see each other, and the joiner every member: a joiner blind to a
    // member would leave it out of its domain map, never ask it who masters a name, and
    // master a name that member already masters. The heartbeat catches up; the joiner
    // backs off and asks again (o2dlm's dlm_query_join_handler does the same).
    if (!core.transport.liveNodes().has(from)) return { status: DLM_STATUS.NORMAL, join: JOIN.DISALLOW };
    const unseen = [...core.members].filter((n) => n !== from && !m.live.includes(n));
    if (unseen.length > 0) {
      core.log(`join of node ${from} held off: it does not see member${unseen.length > 1 ? 's' : ''} ${unseen.join(', ')} yet`);
      return { status: DLM_STATUS.NORMAL, join: JOIN.DISALLOW };
    }
    const j = core.joining;
    if (j && j.node !== from && core.nowMs() - j.sinceMs < DEFAULTS.joiningHoldMs) return { status: DLM_STATUS.NORMAL, join: JOIN.DISALLOW };
    const versions = { dlmProto: DLM_PROTOCOL, fsProto: core.proto };
    if (m.dlmProto.major !== DLM_PROTOCOL.major || m.fsProto.major !== core.proto.major || m.fsProto.minor < core.proto.minor) {
      return { status: DLM_STATUS.NORMAL, join: JOIN.PROTOCOL_MISMATCH, ...versions };
    }
    core.joining = { node: from, sinceMs: core.nowMs() };
    return { status: DLM_STATUS.NORMAL, join: JOIN.OK, ...versions };
  }

  onAssertJoined(from: number, m: NodeNotice): Partial<Reply> {
    const core = this.core;
    if (m.node !== from) return { status: DLM_STATUS.BADARGS };
    if (core.state !== 'joined' && core.state !== 'leaving') return { status: DLM_STATUS.NOT_IN_DOMAIN };
    if (core.joining?.node !== from) return { status: DLM_STATUS.BADARGS, error: 'ASSERT_JOINED without QUERY_JOIN' };
    core.joining = null;
    core.members.add(from);
    core.log(`node ${from} joined`);
    core.changed.notify();
    return { status: DLM_STATUS.NORMAL };
  }

  onCancelJoin(from: number, m: NodeNotice): Partial<Reply> {
    if (m.node !== from) return { status: DLM_STATUS.BADARGS };
    if (this.core.joining?.node === from) this.core.joining = null;
    return { status: DLM_STATUS.NORMAL };
  }

  onBeginExit(from: number, m: NodeNotice): Partial<Reply> {
    if (m.node !== from || !this.core.members.has(from)) return { status: DLM_STATUS.BADARGS };
    this.core.leavingNodes.add(from);
    return { status: DLM_STATUS.NORMAL };
  }

  onExitDomain(from: number, m: NodeNotice): Partial<Reply> {
    const core = this.core;
    if (m.node !== from) return { status: DLM_STATUS.BADARGS };
    if (!core.members.has(from)) return { status: DLM_STATUS.NORMAL };
    core.members.delete(from);
    core.leavingNodes.delete(from);
    for (const res of core.resources.values()) {
      if (res.owner === core.thisNode) {
        res.refmap.delete(from);
        // A clean leaver holds no locks; if it did, they go as a dead node's would.
        if (res.q.removeNode(from)) res.q.lvb.fill(0);
        this.server.kick(res);
      } else if (res.owner === from) {
        core.log(`node ${from} left still mastering ${res.name}; finding a new master`);
        res.owner = OWNER_UNKNOWN;
      }
    }
    this.mastery.nodeGone(from);
    core.log(`node ${from} left`);
    core.changed.notify();
    return { status: DLM_STATUS.NORMAL };
  }
}
