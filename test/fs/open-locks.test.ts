// Open locks (fs/cluster.ts) over a real lock manager (o2dlm on the seeded simulated
// network): the cache of idle open locks is bounded, also when the inode was forgotten
// while its open lock's grant was still on the way.
import t from 'tap';
import { ClusterHost, ClusterState } from '../../fs/cluster';
import { InodeLocks, INODE_LOCKS_CACHED_MIN } from '../../fs/inode-locks';
import { glueOn, joinAll } from '../dlm/sim-glue';
import { SimNet } from '../dlm/simnet';

t.test('idle open locks beyond the bound go back to the lock manager, grants in flight included', async (t) => {
  const net = new SimNet({ nodes: 1, seed: 31, delayMaxMs: 3 });
  const { glue, dom } = glueOn(net, 0);
  await joinAll(t, net, [{ dom }]);
  const locks = new InodeLocks(glue, {
    generation: async () => 1, checkpoint: async () => undefined, invalidate: () => undefined, log: () => undefined,
  }, INODE_LOCKS_CACHED_MIN);
  const logs: string[] = [];
  // Only what open locks use of the host (the rest would be the mounted volume's).
  const host = { glue, locks, thisNode: 0, slot: 0, readOnly: false, log: (l: string) => void logs.push(l) } as unknown as ClusterHost;
  const cluster = new ClusterState(host);
  const others = glue.cachedCount; // its superblock and orphan-scan locks (not taken here)
  const openLocks = (): number => glue.cachedCount - others;
  const INODES = 3 * INODE_LOCKS_CACHED_MIN;
  // Each inode is referenced and forgotten again before its open lock is granted.
  for (let b = 0; b < INODES; b++) {
    cluster.noteInUse(5000 + b, 1);
    cluster.dropOpen(5000 + b);
  }
  await cluster.flushOpens();
  await cluster.stop();
  t.same(logs, [], 'nothing went wrong');
  t.ok(openLocks() <= INODE_LOCKS_CACHED_MIN, `${openLocks()} open locks kept (bound ${INODE_LOCKS_CACHED_MIN}) of ${INODES} taken`);
  // Referenced again later: taken afresh.
  cluster.noteInUse(5000, 1);
  await cluster.flushOpens();
  const before = glue.stackRequests;
  cluster.noteInUse(5000 + INODES - 1, 1);
  await cluster.flushOpens();
  t.equal(glue.stackRequests, before, 'one still cached is held again without asking the lock manager');
  t.ok(openLocks() <= INODE_LOCKS_CACHED_MIN + 1, 'an inode referenced again gets its open lock back');
});
