// The umbrella command: dispatch to mkfs/debugfs/fsck, "not implemented yet" for the rest.
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

t.test('mount and umount are not implemented yet; unknown commands are usage errors', async (t) => {
  for (const cmd of ['mount', 'umount']) {
    const r = runTool('o2fs', [cmd, 'x', '/mnt']);
    t.equal(r.status, 1);
    t.equal(r.err, `o2fs: ${cmd}: not implemented yet\n`);
  }
  const unknown = runTool('o2fs', ['frobnicate']);
  t.equal(unknown.status, 1);
  t.equal(unknown.err, 'o2fs: unknown command "frobnicate"; see o2fs --help\n');
  t.notMatch(unknown.err, STACK_LINE);
  const none = runTool('o2fs', []);
  t.equal(none.status, 1);
  t.match(none.err, /^Usage: o2fs COMMAND/);
  const help = runTool('o2fs', ['--help']);
  t.equal(help.status, 0);
  t.match(help.out, /^ {2}mount +mount a volume \(not implemented yet\)$/m);
  t.match(runTool('o2fs', ['help', 'debugfs']).out, /^Usage: debugfs\.o2fs/);
});
