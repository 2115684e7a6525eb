// fsck.o2fs as a person runs it: the must-show sequence on a 1 GiB image made by
// mkfs.o2fs, exit statuses for damage found / repaired / clean, and clear operational
// errors (no stack trace) for images that are not volumes or are cut short.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { STACK_LINE, runTool, tempDir } from './run';

const dir = tempDir(t, 'o2fs-fsck-cli-');

async function damage(img: string, byteOffset: number, bytes: Buffer): Promise<void> {
  const fh = await fsp.open(img, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, byteOffset);
  } finally {
    await fh.close();
  }
}

t.test('mkfs --size 1G, fsck -n clean, debugfs stats', async (t) => {
  const img = path.join(dir, 'vol.img');
  const mk = runTool('mkfs', ['-q', '--size', '1G', img]);
  t.equal(mk.status, 0, mk.err);
  const ck = runTool('fsck', ['-n', img]);
  t.equal(ck.status, 0, ck.out + ck.err);
  t.match(ck.out, /clean/);
  const st = runTool('debugfs', [img, '-R', 'stats']);
  t.equal(st.status, 0, st.err);
  t.match(st.out, /slots/i);
});

t.test('damaged superblock and bitmap: -n exits 4, -y exits 1, then -n exits 0', async (t) => {
  const img = path.join(dir, 'dmg.img');
  t.equal(runTool('mkfs', ['-q', '--size', '300M', img]).status, 0);
  // Garbage over the primary superblock (block 2) and the first bitmap group (block 3).
  await damage(img, 2 * 4096, Buffer.alloc(8192, 0xa5));
  const check = runTool('fsck', ['-n', img]);
  t.equal(check.status, 4, check.out);
  t.match(check.out, /superblock/);
  const fix = runTool('fsck', ['-y', img]);
  t.equal(fix.status, 1, fix.out);
  t.match(fix.out, /fixed/);
  const again = runTool('fsck', ['-n', img]);
  t.equal(again.status, 0, again.out);
  const json = runTool('fsck', ['-n', '--json', img]);
  const doc = JSON.parse(json.out);
  t.equal(doc.exitCode, 0);
  t.equal(doc.found, 0);
});

t.test('operational errors: no device, not a volume, truncated, bad usage', async (t) => {
  const missing = runTool('fsck', ['-n', path.join(dir, 'nope.img')]);
  t.equal(missing.status, 8);
  t.match(missing.err, /no such file/);
  const junk = path.join(dir, 'junk.img');
  await fsp.writeFile(junk, Buffer.alloc(4 << 20, 7));
  const nv = runTool('fsck', ['-y', junk]);
  t.equal(nv.status, 8);
  t.match(nv.out + nv.err, /not an o2fs volume/);
  const img = path.join(dir, 'trunc.img');
  t.equal(runTool('mkfs', ['-q', '--size', '300M', img]).status, 0);
  await fsp.truncate(img, 100 << 20);
  const tr = runTool('fsck', ['-n', img]);
  t.equal(tr.status, 8);
  t.match(tr.out + tr.err, /truncated/);
  const usage = runTool('fsck', ['-n', '-y', img]);
  t.equal(usage.status, 8);
  t.match(usage.err, /exclude each other/);
  for (const r of [missing, nv, tr, usage]) t.notMatch(r.err, STACK_LINE, 'no stack trace');
});
