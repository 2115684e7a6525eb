// dlmglue on one node of the seeded simulated network: an o2dlm domain joined over the
// SimNet transport and a stackglue connection to it, as the o2cb plugin gives a mount.
// For tests of dlmglue and what sits on it (inode locks) against a real lock manager.
import { DlmGlue } from '../../fs/dlmglue';
import { DlmDomain } from '../../dlm/o2cb/o2dlm/domain';
import type { ClusterConnection } from '../../stackglue/types';
import type { SimNet } from './simnet';

/** A DlmGlue for node `num` of `net` (call dom.join() before locking; dom.abandon() after). */
export function glueOn(net: SimNet, num: number): { glue: DlmGlue; dom: DlmDomain } {
  const glue = new DlmGlue();
  const dom = new DlmDomain(net.transport(num), {
    name: '0123456789ABCDEF0123456789ABCDEF', proto: { major: 1, minor: 0 }, callbacks: glue.callbacks,
    onEviction: () => undefined, clock: net.clock,
  });
  const conn: ClusterConnection = {
    stack: 'o2cb-sim', thisNode: num, proto: { major: 1, minor: 0 },
    lock: (l, m, f, n) => dom.lock(l, m, f, n),
    unlock: (l, f) => dom.unlock(l, f),
    disconnect: async () => undefined,
  };
  glue.attach(conn);
  return { glue, dom };
}

/** What a test gives joinAll(): tap's teardown. */
interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Joins every node's domain, and leaves them and closes the network when the test ends. */
export async function joinAll<N extends { dom: DlmDomain }>(t: Teardown, net: SimNet, nodes: N[]): Promise<N[]> {
  t.teardown(() => {
    for (const n of nodes) n.dom.abandon();
    net.close();
  });
  for (const n of nodes) await n.dom.join();
  return nodes;
}
