// The umbrella command: dispatch to mkfs/debugfs/fsck/mount/umount, usage errors otherwise.
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { STACK_LINE, TOOLS_DIR, runTool, tempDir } from './run';

const dir = tempDir(t, 'o2fs-umbrella-');

t.test('o2fs mkfs and o2fs debugfs are the same tools', async (t) => {
  const img = path.join(dir, 'u.img');
  const mk = runTool('o2fs', ['mkfs', '-q', '--size', '64M', '-L', 'umbrella', img]);
  t.equal(mk.status, 0, mk.err);
  const dbg = runTool('o2fs', ['debugfs', img, '-R', 'stats']);
  t.equal(dbg.status, 0, dbg.err);
  t.match(dbg.out, /Label: umbrella/);
  const again = runTool('o2fs', ['mkfs', img]);
  t.equal(again.status, 1, 'exit status of the subcommand');
  t.match(again.err, /^mkfs\.o2fs: .* contains an o2fs volume/);
});

t.test('fsck dispatches to fsck.o2fs when it is built', { skip: existsSync(path.join(TOOLS_DIR, 'fsck.js')) ? false : 'dist/tools/fsck.js is not built' }, async (t) => {
  const r = runTool('o2fs', ['fsck', '--help']);
  t.equal(r.status, 0, r.err);
  t.match(r.out, /fsck\.o2fs/);
});

t.test('mount and umount check their arguments; unknown commands are usage errors', async (t) => {
  const m = runTool('o2fs', ['mount', 'only-one-arg']);
  t.equal(m.status, 1);
  t.match(m.err, /expected DEVICE and MOUNTPOINT/);
  const u = runTool('o2fs', ['umount', '/definitely/not/a/mount']);
  t.equal(u.status, 32);
  t.match(u.err, /is not a FUSE mount/);
  const unknown = runTool('o2fs', ['frobnicate']);
  t.equal(unknown.status, 1);
  t.equal(unknown.err, 'o2fs: unknown command "frobnicate"; see o2fs --help\n');
  t.notMatch(unknown.err, STACK_LINE);
  const none = runTool('o2fs', []);
  t.equal(none.status, 1);
  t.match(none.err, /^Usage: o2fs COMMAND/);
  const help = runTool('o2fs', ['--help']);
  t.equal(help.status, 0);
  t.match(help.out, /^ {2}mount +mount a volume/m);
  t.match(runTool('o2fs', ['help', 'debugfs']).out, /^Usage: debugfs\.o2fs/);
});
