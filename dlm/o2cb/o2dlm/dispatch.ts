// One transport can carry several domains (one per mounted volume), but a transport has
// one handler per message type. The dispatcher owns those handlers, finds the domain a
// payload names, and turns every outcome into a Reply: a payload that does not decode is
// BADARGS, a domain this node has not joined is NOT_IN_DOMAIN (JOIN_OK_NO_MAP), and a
// handler that throws is ERROR. Nothing a peer sends can take the node down.
import type { Transport } from '../transport';
import { ALL_TYPES, BadMessage, MsgType, Reply, domainOf, encodeReply } from './messages';
import { DLM_STATUS, JOIN } from './status';

export interface DomainEndpoint {
  readonly name: string;
  handle(type: MsgType, from: number, payload: Buffer): Promise<Partial<Reply>> | Partial<Reply>;
  log(line: string): void;
}

const dispatchers = new WeakMap<Transport, Dispatcher>();

export class Dispatcher {
  private readonly domains = new Map<string, DomainEndpoint>();

  static for(transport: Transport): Dispatcher {
    let d = dispatchers.get(transport);
    if (!d) {
      d = new Dispatcher(transport);
      dispatchers.set(transport, d);
    }
    return d;
  }

  private constructor(transport: Transport) {
    for (const t of ALL_TYPES) transport.register(t, (from, payload) => this.dispatch(t, from, payload));
  }

  attach(ep: DomainEndpoint): void {
    if (this.domains.has(ep.name)) throw new Error(`o2dlm: domain ${ep.name} is already registered on this node`);
    this.domains.set(ep.name, ep);
  }

  detach(ep: DomainEndpoint): void {
    if (this.domains.get(ep.name) === ep) this.domains.delete(ep.name);
  }

  async dispatch(type: MsgType, from: number, payload: Buffer): Promise<Buffer> {
    let name: string;
    try {
      name = domainOf(type, payload);
    } catch (e) {
      return encodeReply({ status: DLM_STATUS.BADARGS, error: (e as Error).message });
    }
    const ep = this.domains.get(name);
    if (!ep) return encodeReply({ status: DLM_STATUS.NOT_IN_DOMAIN, join: JOIN.OK_NO_MAP });
    try {
      return encodeReply(await ep.handle(type, from, payload));
    } catch (e) {
      if (e instanceof BadMessage) {
        ep.log(`message ${type} from ${from}: bad payload: ${e.message}`);
        return encodeReply({ status: DLM_STATUS.BADARGS, error: e.message });
      }
      ep.log(`message ${type} from ${from}: handler failed: ${(e as Error).stack ?? String(e)}`);
      return encodeReply({ status: DLM_STATUS.ERROR, error: (e as Error).message });
    }
  }
}
