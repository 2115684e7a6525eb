#!/usr/bin/env node
// fsck.o2fs: checks an o2fs volume and repairs it. Exit statuses follow e2fsck.
import { openDevice } from '../blockdev/open';
import { fsck } from '../fs/fsck/index';
import { EXIT_OPERATIONAL } from '../fs/fsck/report';
import { Tool, UsageError, main, parseCommandLine } from './cli';

const HELP = `Usage: fsck.o2fs [-n | -y | -p] [-f] [--json] DEVICE

Checks an o2fs volume: superblock and backups, checksums and signatures of every
metadata block, allocator bitmaps against what is in use (both directions), link
counts, directory structure and hash index, extent trees, inline data, xattrs,
orphans, and unattached inodes (moved to /lost+found).

  -n          check only; open the device read-only and change nothing
  -y          repair everything that can be repaired, without asking
  -p          the same as -y (preen: automatic repair)
  -f          force: check even if the slot map says nodes have it mounted
              (only when those nodes are down; a live node would be corrupted)
  --json      print the findings and the result as one JSON document
  -h, --help  this text

Exit status (as e2fsck):
  0  no errors
  1  errors were found and corrected
  4  errors were left uncorrected
  8  operational error (cannot open or read the device, not an o2fs volume,
     volume in use, bad usage)
`;

const tool: Tool = {
  name: 'fsck.o2fs',
  exitUsage: EXIT_OPERATIONAL,
  exitError: EXIT_OPERATIONAL,
  async run(argv) {
    const { values, positionals } = parseCommandLine(argv, {
      n: { type: 'boolean', short: 'n' },
      y: { type: 'boolean', short: 'y' },
      p: { type: 'boolean', short: 'p' },
      f: { type: 'boolean', short: 'f' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError('expected exactly one DEVICE; see --help');
    const modes = [values.n, values.y, values.p].filter(Boolean).length;
    if (modes > 1) throw new UsageError('-n, -y and -p exclude each other');
    // Without a mode e2fsck asks interactively; o2fs does not prompt, so it checks only.
    const repair = Boolean(values.y || values.p);
    const dev = await openDevice(positionals[0], { readOnly: !repair });
    try {
      const log = values.json ? () => undefined : (line: string) => process.stdout.write(`${line}\n`);
      const { exitCode, report } = await fsck(dev, { repair, force: Boolean(values.f), log });
      if (values.json) {
        process.stdout.write(JSON.stringify({ device: positionals[0], repair, exitCode, found: report.found, fixed: report.fixed, uncorrected: report.uncorrected, messages: report.lines }, null, 2) + '\n');
      } else if (exitCode !== EXIT_OPERATIONAL) {
        const summary = report.found === 0 ? 'clean' : `${report.found} problems, ${report.fixed} fixed, ${report.uncorrected} left`;
        process.stdout.write(`${positionals[0]}: ${summary}\n`);
      }
      return exitCode;
    } finally {
      await dev.close();
    }
  },
};

export default tool;
if (require.main === module) main(tool);
