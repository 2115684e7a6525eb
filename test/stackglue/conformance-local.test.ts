// The lock-manager conformance suite (conformance.ts) on the `local` pseudo-stack. local is
// one node that grants every request at once, so it declares no conflicts, no other nodes,
// no deaths and no partitions: those cases are skipped by name with the reason. What it can
// show, it must: NOQUEUE grants of compatible modes, the LVB rules, the cancel/grant
// contract when the grant always wins, lvb_torture on one node, one completion per request.
import t from 'tap';
import { localStack } from '../../stackglue/local/index';
import { ClusterUnderTest, runConformance } from './conformance';

process.on('unhandledRejection', (err) => {
  throw err;
});

void runConformance(t, {
  name: 'local',
  supports: { multiNode: false, conflicts: false, kill: false, partition: false, killDuringRecovery: false, maxNodes: 1 },
  async create(nodes: number): Promise<ClusterUnderTest> {
    if (nodes !== 1) throw new Error(`local is a single-node stack, asked for ${nodes} nodes`);
    return {
      nodes: 1,
      // local has no failover: nothing ever dies that another node would wait for.
      failoverBoundMs: 0,
      opTimeoutMs: 2000,
      settleMs: 10,
      connect: (_node, opts, callbacks, onRecovery) => localStack.connect({ ...opts, callbacks, onRecovery }),
      close: async () => undefined,
    };
  },
});
