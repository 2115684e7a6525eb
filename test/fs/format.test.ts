// Codec round trips for every on-disk structure, and detection of each kind of damage:
// a flipped byte (checksum), a block written at the wrong place (blkno), a block of
// another volume (fs_generation), garbage (signature), impossible headers.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { BlockCache } from '../../fs/block-cache';
import { CorruptionError } from '../../fs/errors';
import { DYN, INODE_FL, NO_SLOT, S_IFDIR, S_IFREG, SIG, SYSFILE, sysFileId, sysFileNameOfId } from '../../fs/format/constants';
import { cloneDirLeaf, decodeDirLeaf, decodeInlineDir, encodeDirLeaf, encodeInlineDir, nameCookie, majorOfCookie, nameMajorHash, murmur3, viewDirLeafOverImage } from '../../fs/format/dirent';
import { cloneExtentBlock, decodeExtentBlock, encodeExtentBlock, extentBlockCapacity } from '../../fs/format/extent-block';
import { cloneGroup, decodeGroup, encodeGroup, countSetBits, setBit, viewGroupOverImage } from '../../fs/format/group';
import { decodeHeartbeat, encodeHeartbeat } from '../../fs/format/heartbeat';
import { sealBlock, verifyBlock } from '../../fs/format/header';
import { Inode, chainCapacity, cloneInode, decodeInode, encodeInode, inodeExtentCapacity, truncateLogCapacity, viewInodeOverImage } from '../../fs/format/inode';
import { decodeJournalSuper, encodeJournalSuper } from '../../fs/format/journal-super';
import { decodeSlotMapBlock, encodeSlotMapBlock } from '../../fs/format/slot-map';
import { Superblock, checkSuperblock, decodeSuperblock, encodeSuperblock } from '../../fs/format/superblock';
import { XattrEntry, cloneXattrBlock, decodeXattrBlock, encodeXattrBlock, encodeXattrList } from '../../fs/format/xattr';

const BS = 4096;
const FSGEN = 0x1234abcd;

function baseInode(blkno: number): Inode {
  return {
    blkno, fsGeneration: FSGEN, generation: 77, suballoc: { slot: 1, bit: 5, groupBlkno: blkno - 5 },
    mode: S_IFREG | 0o644, uid: 1000, gid: 100, links: 3, size: 123456789012, clusters: 42, flags: INODE_FL.valid, dyn: 0,
    xattrInlineBytes: 0, attr: 0x10, atime: { sec: 1700000000, nsec: 1 }, ctime: { sec: -5, nsec: 999999999 }, mtime: { sec: 2 ** 40, nsec: 5 },
    dtime: { sec: 0, nsec: 0 }, rdev: 0x0801, xattrBlkno: 0, orphanedSlot: NO_SLOT, sysFileId: 0, id1a: 7, id1b: 9, parentBlkno: 0,
    body: { kind: 'extents', list: { depth: 0, count: inodeExtentCapacity(BS, 0), records: [{ cpos: 0, clusters: 65535, flags: 1, blkno: 2 ** 40 }] } },
    inlineXattr: Buffer.alloc(0),
  };
}

function sampleSuper(): Superblock {
  return {
    fsGeneration: FSGEN, revMajor: 1, revMinor: 0, blockSizeBits: 12, clusterSizeBits: 16, totalBlocks: 16 * 1000, totalClusters: 1000,
    maxSlots: 8, featureCompat: 1, featureIncompat: 0x4650, featureRoCompat: 1, state: 0, rootBlkno: 10, systemDirBlkno: 7,
    firstGroupBlkno: 3, uuid: randomBytes(16), label: 'vøl', stack: 'o2cb', clusterName: 'alpha', lockProtoMajor: 1, lockProtoMinor: 0,
    errorsPolicy: 'continue', dirHashSeed: 99, mkfsTimeSec: 1, lastMountTimeSec: 2, lastCheckTimeSec: 3, mountCount: 4, xattrInlineBytes: 256, backupCount: 2,
  };
}

t.test('superblock round trip and geometry checks', async (t) => {
  const sb = sampleSuper();
  const buf = encodeSuperblock(sb, 2);
  t.same(decodeSuperblock(buf), sb);
  t.same(checkSuperblock(buf, 2, BS), sb);
  t.throws(() => checkSuperblock(buf, 2, 2048), CorruptionError, 'wrong block size');
  const bad = encodeSuperblock({ ...sb, totalBlocks: 12345 }, 2);
  t.throws(() => checkSuperblock(bad, 2, BS), /total blocks/);
  const future = encodeSuperblock({ ...sb, revMajor: 2 }, 2);
  t.throws(() => checkSuperblock(future, 2, BS), /revision 2\.0 is not supported/);
});

t.test('inode round trip for every body kind', async (t) => {
  const ino = baseInode(100);
  t.same(decodeInode(encodeInode(ino, BS)), ino, 'extent list');
  const inline = { ...baseInode(101), dyn: DYN.inlineData | DYN.inlineXattr, xattrInlineBytes: 256, size: 5, body: { kind: 'inline' as const, data: Buffer.from('hello') }, inlineXattr: Buffer.alloc(256) };
  encodeXattrList([{ prefix: 1, name: Buffer.from('k'), value: Buffer.from('v'), valueLen: 1, valueBlkno: 0 }], inline.inlineXattr, 0, 256);
  t.same(decodeInode(encodeInode(inline, BS)), inline, 'inline data + inline xattrs');
  const chain = { ...baseInode(102), flags: INODE_FL.valid | INODE_FL.chain, body: { kind: 'chain' as const, chain: { cpg: 32256, bpc: 1, count: chainCapacity(BS), recs: [{ free: 3, total: 10, blkno: 4 }] } } };
  t.same(decodeInode(encodeInode(chain, BS)), chain, 'chain list');
  const la = { ...baseInode(103), flags: INODE_FL.valid | INODE_FL.localAlloc, body: { kind: 'localAlloc' as const, la: { windowFirstCluster: 77, windowBits: 20, bitmap: Buffer.from([1, 2, 3]) } } };
  t.same(decodeInode(encodeInode(la, BS)), la, 'local alloc');
  const tl = { ...baseInode(104), flags: INODE_FL.valid | INODE_FL.dealloc, body: { kind: 'truncateLog' as const, count: truncateLogCapacity(BS), recs: [{ startCluster: 5, clusters: 6 }] } };
  t.same(decodeInode(encodeInode(tl, BS)), tl, 'truncate log');
  const sys = { ...baseInode(105), sysFileId: sysFileId(SYSFILE.journal, 3) };
  t.equal(sysFileNameOfId(decodeInode(encodeInode(sys, BS)).sysFileId), 'journal:0003');
});

t.test('every damaged block is detected', async (t) => {
  const good = encodeInode(baseInode(500), BS);
  t.doesNotThrow(() => verifyBlock(good, 500, SIG.inode, FSGEN));
  for (let i = 0; i < 64; i++) {
    const flipped = Buffer.from(good);
    const pos = Math.floor(Math.random() * BS);
    flipped[pos] ^= 1 << (i % 8);
    t.throws(() => verifyBlock(flipped, 500, SIG.inode, FSGEN), CorruptionError, `bit flip at byte ${pos}`);
  }
  t.throws(() => verifyBlock(good, 501, SIG.inode, FSGEN), /claims to be block 500/, 'misdirected write');
  t.throws(() => verifyBlock(good, 500, SIG.inode, FSGEN + 1), /another volume/, 'foreign volume');
  t.throws(() => verifyBlock(randomBytes(BS), 500, SIG.inode, FSGEN), /bad signature/, 'garbage');
  t.throws(() => verifyBlock(Buffer.alloc(BS), 500, SIG.inode, FSGEN), /bad signature/, 'zeroed block');
  t.throws(() => verifyBlock(good, 500, SIG.group, FSGEN), /expected O2GROUP1/, 'wrong structure');
  // A structurally impossible header with a valid checksum is still rejected on decode.
  const overfull = Buffer.from(good);
  overfull.writeUInt16LE(inodeExtentCapacity(BS, 0) + 1, 0xc0 + 4);
  sealBlock(overfull);
  t.throws(() => decodeInode(overfull), /extent list uses/);
});

t.test('extent block, group, slot map, heartbeat, journal superblock round trips', async (t) => {
  const eb = { blkno: 900, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 9, groupBlkno: 891 }, ownerBlkno: 100, list: { depth: 1, count: extentBlockCapacity(BS), records: [{ cpos: 0, clusters: 0, flags: 0, blkno: 950 }, { cpos: 4000, clusters: 0, flags: 0, blkno: 951 }] } };
  t.same(decodeExtentBlock(encodeExtentBlock(eb, BS)), eb);
  const bitmap = Buffer.alloc(BS - 0x40);
  for (const b of [0, 7, 8, 1000, 32255]) setBit(bitmap, b);
  const g = { blkno: 3, fsGeneration: FSGEN, generation: 5, bits: 32256, free: 32251, chain: 2, nextGroupBlkno: 9999, parentBlkno: 5, bitmap };
  t.same(decodeGroup(encodeGroup(g, BS)), g);
  t.equal(countSetBits(bitmap, 32256), 5);
  t.throws(() => decodeGroup(encodeGroup({ ...g, free: 40000 }, BS)), /claims 40000 free/);
  const recs = [{ inUse: true, nodeNum: 254, mountGeneration: 7 }, { inUse: false, nodeNum: 0, mountGeneration: 0 }];
  t.same(decodeSlotMapBlock(encodeSlotMapBlock(recs, 0, 50, FSGEN, BS)), { firstSlot: 0, recs });
  const hb = { blkno: 60, fsGeneration: FSGEN, seq: 2 ** 40, nodeNum: 17, deadMs: 8000, hbGeneration: 2 ** 50, timeMs: Date.now() };
  t.same(decodeHeartbeat(encodeHeartbeat(hb, BS)), hb);
  const js = { blkno: 70, fsGeneration: FSGEN, totalBlocks: 1024, firstLogBlock: 1, sequence: 12, start: 5, startSequence: 10 };
  t.same(decodeJournalSuper(encodeJournalSuper(js, BS)), js);
  t.throws(() => decodeJournalSuper(encodeJournalSuper({ ...js, start: 5000 }, BS)), CorruptionError);
});

t.test('directory entries: cookies, hashes, leaves and inline directories', async (t) => {
  const seed = 0xdeadbeef;
  t.equal(murmur3(Buffer.from(''), 0), 0, 'murmur3 of empty input with seed 0');
  t.equal(murmur3(Buffer.from('hello'), 0), 0x248bfa47, 'murmur3 reference vector');
  const names = Array.from({ length: 100 }, (_, i) => Buffer.from(`name-${i}`));
  const entries = names.map((name, i) => ({ ino: 1000 + i, cookie: nameCookie(name, seed), fileType: 1, name })).sort((a, b) => a.cookie - b.cookie);
  for (const e of entries) t.equal(majorOfCookie(e.cookie), nameMajorHash(e.name, seed));
  const leaf = { blkno: 77, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 1, groupBlkno: 76 }, ownerBlkno: 9, entries };
  t.same(decodeDirLeaf(encodeDirLeaf(leaf, BS)), leaf);
  // Kept beside its image, a leaf must view only that image: half the names come from a
  // decode of an older image, half are the caller's own buffers.
  const older = decodeDirLeaf(encodeDirLeaf(leaf, BS));
  const mixed = { ...leaf, entries: entries.map((e, i) => (i % 2 === 0 ? older.entries[i] : e)) };
  const image = encodeDirLeaf(mixed, BS);
  const viewed = viewDirLeafOverImage({ ...mixed, entries: mixed.entries.slice() }, image);
  t.ok(isDeepStrictEqual(viewed, decodeDirLeaf(image)), 'a leaf re-pointed at its image equals its decode');
  t.ok(viewed.entries.every((e) => e.name.buffer === image.buffer), 'every name is a view into the new image');
  const again = viewDirLeafOverImage({ ...viewed, entries: viewed.entries.slice() }, image);
  t.ok(again.entries.every((e, i) => e === viewed.entries[i]), 'entries already viewing their place are kept');
  const inline = encodeInlineDir(entries.slice(0, 10), Infinity);
  t.same(decodeInlineDir(inline, 9), entries.slice(0, 10));
  const swapped = [entries[1], entries[0]];
  t.throws(() => decodeInlineDir(encodeInlineDir(swapped, Infinity), 9), /out of order/);
  t.not(nameCookie(Buffer.from('a'), 1), nameCookie(Buffer.from('a'), 2), 'the seed changes the hash');
});

t.test('xattr block round trip, inline and external values', async (t) => {
  const entries: XattrEntry[] = [
    { prefix: 1, name: Buffer.from('small'), value: Buffer.from('abc'), valueLen: 3, valueBlkno: 0 },
    { prefix: 3, name: Buffer.from('selinux'), value: Buffer.alloc(0), valueLen: 0, valueBlkno: 0 },
    { prefix: 2, name: Buffer.from('big'), value: null, valueLen: 65536, valueBlkno: 123456 },
  ];
  const xb = { blkno: 88, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 3, groupBlkno: 85 }, ownerBlkno: 9, entries };
  t.same(decodeXattrBlock(encodeXattrBlock(xb, BS)), xb);
  const buf = encodeXattrBlock(xb, BS);
  buf.writeUInt16LE(5000, 0x38 + 2);
  sealBlock(buf);
  t.throws(() => decodeXattrBlock(buf), /claims 5000 bytes/);
  void S_IFDIR;
});

t.test('clones equal a decode of the encoding and share nothing that changes', async (t) => {
  const inline = { ...baseInode(110), dyn: DYN.inlineData | DYN.inlineXattr, xattrInlineBytes: 256, size: 5, body: { kind: 'inline' as const, data: Buffer.from('hello') }, inlineXattr: Buffer.alloc(256) };
  encodeXattrList([{ prefix: 1, name: Buffer.from('k'), value: Buffer.from('v'), valueLen: 1, valueBlkno: 0 }], inline.inlineXattr, 0, 256);
  const inodes: Inode[] = [
    baseInode(111),
    inline,
    { ...baseInode(112), flags: INODE_FL.valid | INODE_FL.chain, body: { kind: 'chain', chain: { cpg: 32256, bpc: 1, count: chainCapacity(BS), recs: [{ free: 3, total: 10, blkno: 4 }] } } },
    { ...baseInode(113), flags: INODE_FL.valid | INODE_FL.localAlloc, body: { kind: 'localAlloc', la: { windowFirstCluster: 77, windowBits: 20, bitmap: Buffer.from([1, 2, 3]) } } },
    { ...baseInode(114), flags: INODE_FL.valid | INODE_FL.dealloc, body: { kind: 'truncateLog', count: truncateLogCapacity(BS), recs: [{ startCluster: 5, clusters: 6 }] } },
  ];
  for (const ino of inodes) {
    const image = encodeInode(ino, BS);
    const c = cloneInode(ino);
    t.ok(isDeepStrictEqual(c, decodeInode(image)), `inode clone (${ino.body.kind})`);
    // Change every nested part of the clone: the original must still encode the same.
    c.atime.sec += 1;
    c.suballoc.bit += 1;
    c.inlineXattr.fill(0xee);
    if (c.body.kind === 'extents') c.body.list.records[0].clusters -= 1;
    if (c.body.kind === 'inline') c.body.data.fill(0x41);
    if (c.body.kind === 'chain') c.body.chain.recs[0].free += 1;
    if (c.body.kind === 'localAlloc') c.body.la.bitmap.fill(0xff);
    if (c.body.kind === 'truncateLog') c.body.recs[0].clusters += 1;
    t.ok(encodeInode(ino, BS).equals(image), `changing the clone leaves the original (${ino.body.kind})`);
    // A copy viewing its own image decodes the same and holds no bytes outside the image.
    const viewed = viewInodeOverImage(decodeInode(image), image);
    t.ok(isDeepStrictEqual(viewed, decodeInode(image)), `inode viewed over its image (${ino.body.kind})`);
    t.ok(encodeInode(viewed, BS).equals(image));
  }

  const bitmap = Buffer.alloc(BS - 0x40);
  setBit(bitmap, 0);
  const g = { blkno: 3, fsGeneration: FSGEN, generation: 5, bits: 32256, free: 32255, chain: 2, nextGroupBlkno: 9999, parentBlkno: 5, bitmap };
  const gImage = encodeGroup(g, BS);
  const gc = cloneGroup(g);
  t.ok(isDeepStrictEqual(gc, decodeGroup(gImage)), 'group clone');
  setBit(gc.bitmap, 1);
  t.ok(encodeGroup(g, BS).equals(gImage), 'the clone has its own bitmap');
  const gv = viewGroupOverImage(decodeGroup(gImage), gImage);
  t.ok(isDeepStrictEqual(gv, decodeGroup(gImage)) && gv.bitmap.buffer === gImage.buffer, 'group viewed over its image');

  const eb = { blkno: 900, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 9, groupBlkno: 891 }, ownerBlkno: 100, list: { depth: 0, count: extentBlockCapacity(BS), records: [{ cpos: 0, clusters: 8, flags: 0, blkno: 950 }] } };
  const ebc = cloneExtentBlock(eb);
  t.ok(isDeepStrictEqual(ebc, decodeExtentBlock(encodeExtentBlock(eb, BS))), 'extent block clone');
  ebc.list.records[0].clusters = 9;
  t.equal(eb.list.records[0].clusters, 8, 'the clone has its own records');

  const names = ['a', 'bb', 'ccc'].map((n) => Buffer.from(n));
  const entries = names.map((name, i) => ({ ino: 10 + i, cookie: nameCookie(name, 1), fileType: 1, name })).sort((a, b) => a.cookie - b.cookie);
  const leaf = { blkno: 77, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 1, groupBlkno: 76 }, ownerBlkno: 9, entries };
  const lc = cloneDirLeaf(leaf);
  t.ok(isDeepStrictEqual(lc, decodeDirLeaf(encodeDirLeaf(leaf, BS))), 'directory leaf clone');
  lc.entries.pop();
  t.equal(leaf.entries.length, 3, 'the clone has its own entries array');

  const xentries: XattrEntry[] = [{ prefix: 1, name: Buffer.from('small'), value: Buffer.from('abc'), valueLen: 3, valueBlkno: 0 }];
  const xb = { blkno: 88, fsGeneration: FSGEN, suballoc: { slot: 0, bit: 3, groupBlkno: 85 }, ownerBlkno: 9, entries: xentries };
  const xc = cloneXattrBlock(xb);
  t.ok(isDeepStrictEqual(xc, decodeXattrBlock(encodeXattrBlock(xb, BS))), 'xattr block clone');
  xc.entries[0].value!.fill(0x7a);
  t.equal(xb.entries[0].value!.toString(), 'abc', 'the clone has its own values');
});

t.test('block cache: a decoded form lives exactly as long as its image', async (t) => {
  const cache = new BlockCache(2);
  const a1 = Buffer.alloc(BS, 1);
  const a2 = Buffer.alloc(BS, 2);
  cache.set(10, a1);
  cache.setDecoded(10, a1, 'a1 decoded');
  t.equal(cache.decodedOf(10, a1), 'a1 decoded');
  t.equal(cache.decodedOf(10, a2), undefined, 'not for another image of the block');
  cache.setDecoded(10, a2, 'a2 decoded');
  t.equal(cache.decodedOf(10, a1), 'a1 decoded', 'an image that is not cached gets nothing kept');
  cache.set(10, a2);
  t.equal(cache.decodedOf(10, a2), undefined, 'a new image starts without one');
  cache.setDecoded(10, a2, 'a2 decoded');
  cache.clear();
  t.equal(cache.decodedOf(10, a2), undefined, 'dropped with the cache');
  cache.set(11, a1);
  cache.setDecoded(11, a1, 'x');
  cache.set(12, a2);
  cache.set(13, a2);
  t.equal(cache.size, 2);
  t.equal(cache.decodedOf(11, a1), undefined, 'evicted (the oldest, unreferenced) with its image');
  t.equal(cache.get(11), undefined);
});

t.test('block cache: owners drop exactly the blocks tagged with them, through every way a block leaves', async (t) => {
  const cache = new BlockCache(4);
  const img = (n: number): Buffer => Buffer.alloc(BS, n);
  cache.set(20, img(1), [20, 5]); // an inode block read in a scope holding 5
  cache.set(21, img(2), [21, 5, 20]); // a leaf of inode 20
  cache.set(22, img(3), [22, 7]);
  cache.set(23, img(4)); // untagged (a local mount)
  t.equal(cache.ownedBy(5), 2);
  t.equal(cache.ownedBy(20), 2);
  t.equal(cache.forgetOwnedBy(20), 2, 'both blocks tagged with inode 20');
  t.equal(cache.get(20), undefined);
  t.equal(cache.get(21), undefined);
  t.equal(cache.ownedBy(5), 0, 'the other owners forget them too');
  t.ok(cache.get(22) && cache.get(23), 'unrelated blocks stay');
  cache.set(22, img(9));
  t.equal(cache.ownedBy(7), 1, 'a new image without owners keeps the tags');
  cache.set(22, img(9), [22, 8]);
  t.equal(cache.ownedBy(7), 0, 'new owners replace the old');
  t.equal(cache.ownedBy(8), 1);
  cache.delete(22);
  t.equal(cache.ownedBy(8), 0, 'delete untags');
  cache.set(30, img(1), [1]);
  cache.set(31, img(1), [1]);
  cache.set(32, img(1), [1]);
  cache.set(33, img(1), [1]);
  t.equal(cache.size, 4);
  t.equal(cache.ownedBy(1), 3, 'eviction untags');
  t.equal(cache.forgetOwnedBy(1), 3);
  t.equal(cache.forgetOwnedBy(1), 0);
  cache.set(40, img(1), [2]);
  cache.clear();
  t.equal(cache.ownedBy(2), 0, 'clear untags');
});
