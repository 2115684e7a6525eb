// stackglue: the local stack's contract, protocol negotiation, stack selection, and the
// first cut of dlmglue's lock cache (caching, LVBs, downconvert on a blocking callback).
import t from 'tap';
import { DlmGlue } from '../../fs/dlmglue';
import { LOCK_TYPE, extentLockName, lockName, parseLockName } from '../../fs/lock-names';
import { localStack } from '../../stackglue/local/index';
import { chooseStack } from '../../stackglue/registry';
import { ClusterConnection, LKF, Lksb, LockMode, StackCallbacks, negotiateProtocol, newLksb } from '../../stackglue/types';

const PROTO = { major: 1, minor: 0 };

t.test('lock names follow OCFS2', async (t) => {
  const n = lockName(LOCK_TYPE.meta, 0x1234, 0xabcdef01);
  t.equal(n, 'M0000000000000000001234abcdef01');
  t.equal(n.length, 31);
  t.same(parseLockName(n), { type: 'M', blkno: 0x1234, generation: 0xabcdef01, chunk: 0 });
  t.same(parseLockName(extentLockName(0x1234, 7, 0x2a)), { type: 'E', blkno: 0x1234, generation: 7, chunk: 0x2a });
  t.ok(extentLockName(5, 1, 1) < extentLockName(5, 1, 2) && extentLockName(5, 1, 2) < extentLockName(4, 1, 3), 'ranges sort in file order');
  t.equal(parseLockName('garbage'), null);
});

t.test('protocol negotiation: same major, lower minor, else refuse', async (t) => {
  t.same(negotiateProtocol({ major: 1, minor: 3 }, { major: 1, minor: 1 }), { major: 1, minor: 1 });
  t.same(negotiateProtocol({ major: 1, minor: 0 }, { major: 1, minor: 2 }), { major: 1, minor: 0 });
  t.equal(negotiateProtocol({ major: 2, minor: 0 }, { major: 1, minor: 9 }), null);
});

t.test('stack selection from the superblock label', async (t) => {
  t.equal(chooseStack('local', '').plugin.name, 'local');
  t.equal(chooseStack('o2cb', 'alpha').plugin.name, 'o2cb');
  t.throws(() => chooseStack('user', 'alpha'), /user cluster stack.*nocluster/);
  const nc = chooseStack('o2cb', 'alpha', { nocluster: true });
  t.equal(nc.plugin.name, 'local');
  t.equal(nc.nocluster, true);
});

t.test('local stack: grants on the next tick and keeps the LVB an EX holder wrote', async (t) => {
  const events: string[] = [];
  const callbacks: StackCallbacks = {
    onGrant: (l) => events.push(`grant ${l.granted}`),
    onBlocking: () => events.push('bast'),
    onUnlock: (_l, s) => events.push(`unlock ${s}`),
  };
  const conn = await localStack.connect({ clusterName: '', group: 'X', proto: PROTO, callbacks, onRecovery: () => undefined });
  t.equal(conn.thisNode, 0);
  const a = newLksb('a');
  conn.lock(a, 'EX', LKF.VALBLK, 'M1');
  t.same(events, [], 'not granted synchronously');
  await new Promise((r) => setImmediate(r));
  t.same(events, ['grant EX']);
  a.lvb.write('hello', 0);
  conn.unlock(a, LKF.VALBLK);
  await new Promise((r) => setImmediate(r));
  const b = newLksb('b');
  conn.lock(b, 'PR', LKF.VALBLK, 'M1');
  await new Promise((r) => setImmediate(r));
  t.equal(b.lvb.toString('utf8', 0, 5), 'hello', 'LVB put on unlock from EX, got on the next grant');
  t.same(events, ['grant EX', 'unlock 0', 'grant PR']);
  await conn.disconnect();
});

t.test('dlmglue caches granted levels and upconverts once', async (t) => {
  const glue = new DlmGlue();
  glue.attach(await localStack.connect({ clusterName: '', group: 'X', proto: PROTO, callbacks: glue.callbacks, onRecovery: () => undefined }));
  const res = glue.resource(lockName(LOCK_TYPE.meta, 5), { usesLvb: true });
  const h1 = await glue.lock(res, 'PR');
  h1.release();
  t.equal(glue.stackRequests, 1);
  for (let i = 0; i < 100; i++) (await glue.lock(res, 'PR')).release();
  t.equal(glue.stackRequests, 1, 'cached PR costs no stack request');
  const ex = await glue.lock(res, 'EX');
  t.equal(glue.stackRequests, 2, 'one upconvert');
  t.equal(res.level, 'EX');
  ex.release();
  (await glue.lock(res, 'PR')).release();
  t.equal(glue.stackRequests, 2, 'EX covers PR');
  await glue.shutdown();
});

/** A stack that grants everything at once and lets the test play the other node. */
class ScriptedStack implements ClusterConnection {
  readonly stack = 'scripted';
  readonly thisNode = 1;
  readonly proto = PROTO;
  readonly log: string[] = [];
  constructor(private readonly cb: StackCallbacks) {}
  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void {
    this.log.push(`${flags & LKF.CONVERT ? 'convert' : 'lock'} ${name} ${mode}`);
    queueMicrotask(() => {
      lksb.granted = mode;
      lksb.status = 0;
      this.cb.onGrant(lksb);
    });
  }
  unlock(lksb: Lksb): void {
    queueMicrotask(() => this.cb.onUnlock(lksb, 0));
  }
  async disconnect(): Promise<void> {}
  blockingAst(lksb: Lksb, level: LockMode): void {
    this.cb.onBlocking(lksb, level);
  }
}

t.test('dlmglue downconverts on a blocking callback once holders let it', async (t) => {
  const glue = new DlmGlue();
  const stack = new ScriptedStack(glue.callbacks);
  glue.attach(stack);
  const order: string[] = [];
  const res = glue.resource('M0000000000000000000000700000000', {
    onDownconvert: async (to) => {
      order.push(`hook ${to}`);
    },
  });
  const h = await glue.lock(res, 'EX');
  stack.blockingAst(res.lksb, 'PR');
  await new Promise((r) => setImmediate(r));
  t.equal(res.level, 'EX', 'held: no downconvert while an EX holder is active');
  h.release();
  for (let i = 0; i < 10 && res.level !== 'PR'; i++) await new Promise((r) => setImmediate(r));
  t.equal(res.level, 'PR', 'PR is enough for the remote reader');
  t.same(order, ['hook PR'], 'the hook ran before the convert');
  t.match(stack.log[stack.log.length - 1], /^convert .* PR$/);
  stack.blockingAst(res.lksb, 'EX');
  for (let i = 0; i < 10 && res.level !== 'NL'; i++) await new Promise((r) => setImmediate(r));
  t.equal(res.level, 'NL', 'an EX waiter takes us down to NL');
  const again = await glue.lock(res, 'PR');
  t.equal(res.level, 'PR', 'and we can get it back');
  again.release();
});

t.test('dlmglue asserts the lock order inside holding()', async (t) => {
  const glue = new DlmGlue();
  glue.attach(await localStack.connect({ clusterName: '', group: 'X', proto: PROTO, callbacks: glue.callbacks, onRecovery: () => undefined }));
  const S = glue.resource(lockName(LOCK_TYPE.super, 0));
  const M = glue.resource(lockName(LOCK_TYPE.meta, 0));
  const O5 = glue.resource(lockName(LOCK_TYPE.open, 5));
  const O9 = glue.resource(lockName(LOCK_TYPE.open, 9));
  const F = glue.resource(lockName(LOCK_TYPE.flock, 5));
  const nested = async (outer: typeof S, inner: typeof S): Promise<void> => {
    const h = await glue.lock(outer, 'EX');
    try {
      await glue.holding(h, async () => (await glue.lock(inner, 'PR')).release());
    } finally {
      h.release();
    }
  };
  await t.resolves(nested(S, M), 'S then M');
  await t.resolves(nested(M, O5), 'M then O');
  await t.resolves(nested(O5, O9), 'O locks in ascending block order');
  await t.rejects(nested(M, S), /lock order: S0+0+ taken while holding M/, 'M then S: refused');
  await t.rejects(nested(O9, O5), /lock order/, 'O locks in descending block order: refused');
  await t.rejects(nested(M, F), /taken alone/, 'a flock lock while holding the meta lock: refused');
  await t.rejects(nested(M, M), /taken again while held/, 'the same lock twice: refused');
  // Outside holding() nothing is checked: unrelated requests take locks concurrently.
  const m = await glue.lock(M, 'PR');
  (await glue.lock(S, 'PR')).release();
  m.release();
  t.pass('no check without holding()');
});
