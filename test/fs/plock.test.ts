// The record-lock table of cluster mounts (fs/plock.ts): its encoding and POSIX's rules for
// one owner's ranges (replace, split, merge, unlock in the middle), conflicts between
// owners, and entries of mounts that are gone.
import t from 'tap';
import { Plock, PlockOwner, applyPlock, decodePlocks, encodePlocks, findConflict, PLOCKS_MAX } from '../../fs/plock';
import { FsError } from '../../fs/errors';

const END = 0x7fff_ffff_ffff_ffffn;
const A: PlockOwner = { slot: 0, generation: 11, owner: 0xaaaan };
const B: PlockOwner = { slot: 1, generation: 22, owner: 0xbbbbn };
const A2: PlockOwner = { slot: 0, generation: 11, owner: 0xcccn }; // another process on A's node
const allLive = (): boolean => true;

function ranges(list: Plock[], o: PlockOwner): string[] {
  return list.filter((l) => l.slot === o.slot && l.owner === o.owner).map((l) => `${l.type[0]}${l.start}-${l.end === END ? 'EOF' : l.end}`).sort();
}

t.test('encoding round-trips, and damage is refused', async (t) => {
  const list: Plock[] = [
    { ...A, type: 'write', start: 0n, end: 99n, pid: 1234 },
    { ...B, type: 'read', start: 100n, end: END, pid: 42 },
  ];
  t.same(decodePlocks(encodePlocks(list)), list);
  t.same(decodePlocks(encodePlocks([])), []);
  const buf = encodePlocks(list);
  t.throws(() => decodePlocks(buf.subarray(0, buf.length - 1)), FsError, 'truncated');
  const badVersion = Buffer.from(buf);
  badVersion[0] = 9;
  t.throws(() => decodePlocks(badVersion), FsError, 'unknown version');
  const badType = Buffer.from(buf);
  badType[4 + 2] = 7;
  t.throws(() => decodePlocks(badType), FsError, 'bad type');
  t.throws(() => encodePlocks(Array.from({ length: PLOCKS_MAX + 1 }, (_, i) => ({ ...A, type: 'read' as const, start: BigInt(i * 2), end: BigInt(i * 2), pid: 1 }))), /ENOLCK|more than/, 'too many locks: ENOLCK');
});

t.test("one owner's ranges: replaced, split, merged", async (t) => {
  let l = applyPlock([], A, 'write', 0n, 99n, 1, allLive);
  t.same(ranges(l, A), ['w0-99']);
  l = applyPlock(l, A, 'write', 100n, 199n, 1, allLive);
  t.same(ranges(l, A), ['w0-199'], 'touching ranges of one type merge');
  l = applyPlock(l, A, 'read', 50n, 59n, 1, allLive);
  t.same(ranges(l, A), ['r50-59', 'w0-49', 'w60-199'], 'a read lock inside a write lock splits it');
  l = applyPlock(l, A, null, 0n, 54n, 1, allLive);
  t.same(ranges(l, A), ['r55-59', 'w60-199'], 'unlock of a prefix');
  l = applyPlock(l, A, 'write', 0n, END, 1, allLive);
  t.same(ranges(l, A), ['w0-EOF'], 'a lock to EOF replaces everything');
  l = applyPlock(l, A, null, 10n, 19n, 1, allLive);
  t.same(ranges(l, A), ['w0-9', 'w20-EOF'], 'unlock in the middle');
  l = applyPlock(l, A, null, 0n, END, 1, allLive);
  t.same(l, [], 'unlock of everything leaves nothing');
});

t.test('conflicts between owners, dead mounts', async (t) => {
  let l = applyPlock([], A, 'write', 0n, 99n, 100, allLive);
  l = applyPlock(l, B, 'read', 200n, 299n, 200, allLive);
  t.equal(findConflict(l, B, { type: 'read', start: 50n, end: 60n }, allLive)?.pid, 100, 'read under a write lock conflicts');
  t.equal(findConflict(l, A2, { type: 'write', start: 99n, end: 99n }, allLive)?.pid, 100, 'another process on the same node conflicts too');
  t.equal(findConflict(l, A, { type: 'write', start: 0n, end: 500n }, allLive)?.pid, 200, "B's read lock is in the way of A's write");
  t.equal(findConflict(l, A, { type: 'read', start: 250n, end: 260n }, allLive), null, 'two read locks do not conflict');
  t.equal(findConflict(l, B, { type: 'write', start: 100n, end: 199n }, allLive), null, 'disjoint ranges do not conflict');
  t.equal(findConflict(l, A, { type: 'write', start: 0n, end: 99n }, allLive), null, 'an owner never conflicts with itself');
  // A's mount went away (node died, was recovered): its locks conflict with nothing and go.
  const aGone = (o: PlockOwner): boolean => o.slot !== A.slot;
  t.equal(findConflict(l, B, { type: 'write', start: 0n, end: 99n }, aGone), null, "a dead mount's lock is ignored");
  const after = applyPlock(l, B, 'write', 0n, 99n, 200, aGone);
  t.same(ranges(after, A), [], "and dropped at the table's next change");
  t.same(ranges(after, B), ['r200-299', 'w0-99']);
});
