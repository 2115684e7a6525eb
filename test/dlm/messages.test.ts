// The o2dlm codec: every message type round-trips, and decoders refuse out-of-range fields.
import t from 'tap';
import * as M from '../../dlm/o2cb/o2dlm/messages';
import { MSG } from '../../dlm/o2cb/o2dlm/messages';

const D = '0123456789ABCDEF0123456789ABCDEF';
const lvb = Buffer.alloc(64, 7);

t.test('round trips', async (t) => {
  const cases: Array<[M.MsgType, object, (p: Buffer) => object]> = [
    [MSG.MASTER_REQUEST, { domain: D, name: 'M1' }, M.decodeMasterRequest],
    [MSG.ASSERT_MASTER, { domain: D, name: 'M1', master: 3, flags: 1 }, M.decodeAssertMaster],
    [MSG.CREATE_LOCK, { domain: D, name: 'M1', seq: 77, mode: 5, flags: 9 }, M.decodeCreateLock],
    [MSG.CONVERT_LOCK, { domain: D, name: 'M1', seq: 77, mode: 0, flags: 8, lvb }, M.decodeConvertLock],
    [MSG.PROXY_AST, { domain: D, name: 'M1', seq: 77, kind: 2, mode: 3, lvb }, M.decodeProxyAst],
    [MSG.UNLOCK_LOCK, { domain: D, name: 'M1', seq: 77, flags: 4, lvb: Buffer.alloc(0) }, M.decodeUnlockLock],
    [MSG.DEREF_LOCKRES, { domain: D, name: 'M1' }, M.decodeDerefLockres],
    [MSG.MIGRATE_REQUEST, { domain: D, name: 'M1', from: 1, to: 2 }, M.decodeMigrateRequest],
    [MSG.MIG_LOCKRES, {
      domain: D, name: 'M1', flags: 2, sender: 4, lvb, lvbVouched: true, refmap: [1, 2], gen: 513,
      locks: [
        { node: 1, seq: 5, queue: 0, granted: 3, requested: -1, getLvb: false, highestBlocked: 5 },
        { node: 2, seq: 6, queue: 1, granted: 0, requested: 3, getLvb: true, highestBlocked: -1 },
        { node: 4, seq: 7, queue: 2, granted: -1, requested: 5, getLvb: true, highestBlocked: -1 },
      ],
    }, M.decodeMigLockres],
    [MSG.QUERY_JOIN, { domain: D, node: 3, dlmProto: { major: 1, minor: 0 }, fsProto: { major: 1, minor: 2 }, live: [0, 3] }, M.decodeQueryJoin],
    [MSG.EXIT_DOMAIN, { domain: D, node: 3 }, M.decodeNodeNotice],
    [MSG.MASTER_REQUERY, { domain: D, name: 'M1' }, M.decodeMasterRequery],
    [MSG.BEGIN_RECO, { domain: D, recoMaster: 1, dead: [2, 4], gen: 99, stage: 0, sender: 1 }, M.decodeReco],
  ];
  for (const [type, body, decode] of cases) {
    t.same(decode(M.encode(type, body)), body, `type ${type}`);
  }
  const reply = { status: 3, response: 1, master: 4, hasRef: true, join: 2, dlmProto: { major: 1, minor: 0 }, fsProto: { major: 1, minor: 1 }, error: 'x', dead: [5] };
  t.same(M.decodeReply(M.encodeReply(reply)), reply);
});

t.test('decoders refuse what does not fit', async (t) => {
  t.throws(() => M.decodeCreateLock(M.encode(MSG.CREATE_LOCK, { domain: D, name: 'M1', seq: 1, mode: 4 })), { name: 'BadMessage' }, 'mode 4 is no mode');
  t.throws(() => M.decodeCreateLock(M.encode(MSG.CREATE_LOCK, { domain: D, name: '', seq: 1, mode: 3 })), { name: 'BadMessage' }, 'empty name');
  t.throws(() => M.decodeConvertLock(M.encode(MSG.CONVERT_LOCK, { domain: D, name: 'M', seq: 1, mode: 3, lvb: Buffer.alloc(63) })), { name: 'BadMessage' }, '63-byte LVB');
  t.throws(() => M.decodeAssertMaster(M.encode(MSG.ASSERT_MASTER, { domain: D, name: 'M', master: 255 })), { name: 'BadMessage' }, 'node 255');
  t.throws(() => M.decodeMigLockres(M.encode(MSG.MIG_LOCKRES, {
    domain: D, name: 'M', sender: 1, locks: [{ node: 1, seq: 1, queue: 1, granted: 5, requested: 3, getLvb: false, highestBlocked: -1 }],
  })), { name: 'BadMessage' }, 'a convert must go up');
  t.throws(() => M.decodeMasterRequest(Buffer.from([0xff, 0xff, 0xff])), { name: 'BadMessage' }, 'not protobuf');
  t.throws(() => M.domainOf(MSG.CREATE_LOCK, Buffer.from('\n\x05ab')), { name: 'BadMessage' }, 'truncated');
});
