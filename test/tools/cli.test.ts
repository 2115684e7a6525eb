// tools/cli.ts and the debugfs tokenizer in-process: option errors, sizes, error messages,
// the progress bar's terminal rules.
import t from 'tap';
import { BlockDeviceError } from '../../blockdev/types';
import { CorruptionError, FsError } from '../../fs/errors';
import { Progress, UsageError, errorText, isExpectedError, parseCommandLine, parseInteger, parseSize, progressWanted } from '../../tools/cli';
import { tokenize } from '../../tools/debugfs';
import { bitNames, modeString } from '../../tools/describe';

t.test('parseCommandLine turns parseArgs errors into readable usage errors', async (t) => {
  const opts = { size: { type: 'string' }, force: { type: 'boolean', short: 'F' } } as const;
  t.same(parseCommandLine(['-F', '--size', '4K', 'dev'], opts), { values: { force: true, size: '4K' }, positionals: ['dev'] });
  t.throws(() => parseCommandLine(['--foo'], opts), new UsageError('unknown option --foo; see --help'));
  t.throws(() => parseCommandLine(['-z'], opts), new UsageError('unknown option -z; see --help'));
  t.throws(() => parseCommandLine(['--size'], opts), new UsageError('option --size needs a value; see --help'));
  t.throws(() => parseCommandLine(['--force=yes'], opts), new UsageError('option --force does not take a value; see --help'));
});

t.test('parseSize takes bytes and binary units', async (t) => {
  t.equal(parseSize('512', 'x'), 512);
  t.equal(parseSize('4K', 'x'), 4096);
  t.equal(parseSize('4k', 'x'), 4096);
  t.equal(parseSize('512M', 'x'), 512 * 2 ** 20);
  t.equal(parseSize('1G', 'x'), 2 ** 30);
  t.equal(parseSize('1.5G', 'x'), 1.5 * 2 ** 30);
  t.equal(parseSize('2TiB', 'x'), 2 * 2 ** 40);
  t.equal(parseSize('64MB', 'x'), 64 * 2 ** 20);
  t.throws(() => parseSize('12Q', '--size'), /bad size "12Q" for --size/);
  t.throws(() => parseSize('-1', '--size'), /bad size/);
  t.throws(() => parseSize('', '--size'), /bad size/);
  t.throws(() => parseSize('1.3K', '--size'), /not a whole number of bytes/);
  t.throws(() => parseSize('99999999P', '--size'), /too large/);
  t.equal(parseInteger('8', '--slots', 1, 255), 8);
  t.throws(() => parseInteger('8x', '--slots', 1, 255), /bad number "8x" for --slots/);
  t.throws(() => parseInteger('256', '--slots', 1, 255), /--slots must be 1\.\.255, got 256/);
});

t.test('errorText says what went wrong once, without errno clutter', async (t) => {
  t.equal(errorText(new FsError('ENOENT', '/a/b')), '/a/b: no such file or directory');
  t.equal(errorText(new FsError('ENOTDIR')), 'not a directory');
  t.equal(errorText(new FsError('ENOSPC', 'device too small: 5 bytes')), 'device too small: 5 bytes');
  t.equal(errorText(new CorruptionError(7, 'bad signature')), 'corrupt metadata at block 7: bad signature');
  t.equal(errorText(new BlockDeviceError('ENOENT', 'x.img: no such file or block device')), 'x.img: no such file or block device');
  t.ok(isExpectedError(new UsageError('x')));
  t.ok(isExpectedError(Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', syscall: 'open' })));
  t.notOk(isExpectedError(new TypeError('bug')));
});

t.test('the progress bar draws only on a terminal, after a delay, and erases itself', async (t) => {
  const out: string[] = [];
  let now = 0;
  const stream = { isTTY: true, columns: 80, write: (s: string) => out.push(s) > 0 };
  const p = new Progress({ enabled: true, stream, delayMs: 100, intervalMs: 50, now: () => now });
  p.update('system files', 1, 4);
  t.same(out, [], 'nothing before the delay');
  now = 150;
  p.update('system files', 2, 4);
  t.equal(out.length, 1);
  t.match(out[0], /^\rsystem files +\[#+\.+\]  50%\x1b\[K$/);
  now = 160;
  p.update('system files', 3, 4);
  t.equal(out.length, 1, 'rate limited');
  p.update('system files', 4, 4);
  t.match(out[1], /\[#+\] 100%/, 'the last step always draws');
  p.finish();
  t.equal(out[2], '\r\x1b[K');

  const off = new Progress({ enabled: false, stream, delayMs: 0 });
  off.update('x', 1, 2);
  off.finish();
  t.equal(out.length, 3, 'disabled draws nothing');
  t.equal(progressWanted(false, { isTTY: false, write: () => true }), false, 'not a terminal');
  t.equal(progressWanted(true, { isTTY: true, write: () => true }), false, 'quiet');
});

t.test('debugfs tokenizer: quotes and escapes', async (t) => {
  t.same(tokenize('ls -l /'), ['ls', '-l', '/']);
  t.same(tokenize('  stat   "/my dir/a b"  '), ['stat', '/my dir/a b']);
  t.same(tokenize("cat 'it''s'"), ['cat', 'its']);
  t.same(tokenize('cat a\\ b "q\\"x"'), ['cat', 'a b', 'q"x']);
  t.same(tokenize('dump "" x'), ['dump', '', 'x']);
  t.same(tokenize(''), []);
  t.throws(() => tokenize('ls "/x'), /unterminated " quote/);
});

t.test('names for modes and bits', async (t) => {
  t.equal(modeString(0o40755), 'drwxr-xr-x');
  t.equal(modeString(0o100644), '-rw-r--r--');
  t.equal(modeString(0o104755), '-rwsr-xr-x');
  t.equal(modeString(0o102644), '-rw-r-Sr--');
  t.equal(modeString(0o41777), 'drwxrwxrwt');
  t.equal(modeString(0o120777), 'lrwxrwxrwx');
  t.same(bitNames(0x1 | 0x10 | 0x100000, { valid: 0x1, system: 0x10 }), ['valid', 'system', '0x100000']);
});
