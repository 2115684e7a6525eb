#!/usr/bin/env node
// mkfs.o2fs: creates an o2fs volume on a block device or an image file. The layout is
// fs/mkfs.ts's; this file is the command line around it: options, creating or resizing an
// image file, refusing to overwrite a filesystem it recognises (tools/probe.ts) without -F,
// and the summary mkfs.ocfs2 users expect.
import { promises as fsp, type Stats } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openFileDevice } from '../blockdev/file';
import { openDevice } from '../blockdev/open';
import { BlockDevice, BlockDeviceError } from '../blockdev/types';
import { FsError } from '../fs/errors';
import { STACKS, StackLabel } from '../fs/format/constants';
import { groupBitmapCapacityBits } from '../fs/format/group';
import type { Superblock } from '../fs/format/superblock';
import { MkfsOptions, MkfsPlan, mkfs, planMkfs } from '../fs/mkfs';
import { backupSuperOffsets, findPrimarySuper } from '../fs/volume';
import {
  Progress, Tool, UsageError, errorText, main, packageVersion, parseCommandLine, parseInteger, parseSize,
  progressWanted, writeOut,
} from './cli';
import { featureNames, humanBytes, uuidHex } from './describe';
import { probeFilesystem } from './probe';

const NAME = 'mkfs.o2fs';
export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
export const EXIT_ERROR = 8;
/** Image files are made in whole sectors of the file device. */
const IMAGE_SIZE_UNIT_BYTES = 512;

const HELP = `Usage: ${NAME} [options] DEVICE

Creates an o2fs volume on DEVICE: a block device, an image file, or file:///path.
Refuses to overwrite a filesystem it recognises (o2fs, ext2/3/4, XFS, btrfs, OCFS2,
swap, LUKS) unless -F is given.

Options:
  -b, --block-size SIZE      block size: 512, 1K, 2K or 4K (default 4K)
  -C, --cluster-size SIZE    cluster size, a power of two from 4K to 1M (default 4K,
                             larger when the volume would need over 2^32 clusters)
  -N, --slots N              node slots (nodes that may mount at once), 1..255;
                             default 2 below 2G, 4 below 10G, 8 below 1T, else 16
  -L, --label LABEL          volume label, at most 64 bytes
  -J, --journal-size SIZE    journal size per slot, at least 4M ("size=64M" works too);
                             default 4M below 128M, 16M below 1G, else volume/160
                             within 64M..256M
      --cluster-stack STACK  local (one node, no cluster stack), o2cb or user
                             (default local)
      --cluster-name NAME    cluster name, required with o2cb and user
                             (1-16 characters of A-Z a-z 0-9 _ -)
      --size SIZE            size of the image file DEVICE: creates it if it does not
                             exist; an existing file of another size is resized only
                             with -F
  -F, --force                overwrite an existing filesystem; resize an image file
  -q, --quiet                print nothing on success
      --json                 print the new volume's summary as one JSON document
  -h, --help                 show this help

SIZE is a byte count, or a number with K, M, G or T (binary units): 4K, 512M, 1.5G.
A progress bar appears on standard error when it is a terminal.

Exit status:
  ${EXIT_OK}  the volume was created
  ${EXIT_USAGE}  bad usage, or refused: DEVICE holds a filesystem (use -F), DEVICE is too
     small, or an image file's size differs from --size (use -F)
  ${EXIT_ERROR}  operational error: DEVICE cannot be opened, read or written

Examples:
  ${NAME} --size 1G -L data disk.img
  ${NAME} -N 4 --cluster-stack o2cb --cluster-name web /dev/sdb
`;

const OPTIONS = {
  'block-size': { type: 'string', short: 'b' },
  'cluster-size': { type: 'string', short: 'C' },
  slots: { type: 'string', short: 'N' },
  label: { type: 'string', short: 'L' },
  'journal-size': { type: 'string', short: 'J' },
  'cluster-stack': { type: 'string' },
  'cluster-name': { type: 'string' },
  size: { type: 'string' },
  force: { type: 'boolean', short: 'F' },
  quiet: { type: 'boolean', short: 'q' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseCommandLine<typeof OPTIONS>>['values'];

/** Turns the options into MkfsOptions, checking what fs/mkfs.ts would reject later. */
function mkfsOptionsFrom(v: Values): MkfsOptions {
  const o: MkfsOptions = {};
  if (v['block-size'] !== undefined) o.blockSize = parseSize(v['block-size'], '--block-size');
  if (v['cluster-size'] !== undefined) o.clusterSize = parseSize(v['cluster-size'], '--cluster-size');
  if (v.slots !== undefined) o.slots = parseInteger(v.slots, '--slots', 1, 255);
  if (v['journal-size'] !== undefined) o.journalBytes = parseSize(v['journal-size'].replace(/^size=/, ''), '--journal-size');
  if (v.label !== undefined) {
    if (Buffer.byteLength(v.label, 'utf8') > 64) throw new UsageError(`label ${JSON.stringify(v.label)} is longer than 64 bytes`);
    o.label = v.label;
  }
  const stack = v['cluster-stack'] ?? 'local';
  if (!(STACKS as readonly string[]).includes(stack)) throw new UsageError(`unknown cluster stack ${JSON.stringify(stack)} (expected ${STACKS.join(', ')})`);
  o.stack = stack as StackLabel;
  const clusterName = v['cluster-name'];
  if (clusterName !== undefined) {
    if (!/^[A-Za-z0-9_-]{1,16}$/.test(clusterName)) throw new UsageError(`cluster name ${JSON.stringify(clusterName)} must be 1-16 characters of A-Z a-z 0-9 _ -`);
    o.clusterName = clusterName;
  } else if (o.stack !== 'local') {
    throw new UsageError(`--cluster-name is required with --cluster-stack=${o.stack}`);
  }
  return o;
}

/** planMkfs, with its complaints (bad sizes, too small a device) as refusals. */
function planOrRefuse(sizeBytes: number, o: MkfsOptions): MkfsPlan {
  try {
    return planMkfs(sizeBytes, o);
  } catch (err) {
    if (err instanceof FsError) throw new UsageError(errorText(err));
    throw err;
  }
}

/** The local path of a device spec (plain path or file:// URL), or null (iscsi://, ...). */
function localPath(spec: string): string | null {
  if (/^file:\/\//i.test(spec)) {
    try {
      return fileURLToPath(spec);
    } catch {
      throw new UsageError(`${spec}: bad file URL`);
    }
  }
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(spec) ? null : spec;
}

async function statOrNull(p: string): Promise<Stats | null> {
  try {
    return await fsp.stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

interface Target {
  dev: BlockDevice;
  /** The image file this run created (removed again if mkfs fails). */
  createdPath: string | null;
}

/** Opens DEVICE for writing, creating or resizing an image file as --size and -F say. */
async function openTarget(spec: string, sizeBytes: number | undefined, force: boolean): Promise<Target> {
  if (sizeBytes === undefined) {
    try {
      // exclusive: on a block device the kernel refuses if it is mounted or held.
      return { dev: await openDevice(spec, { exclusive: true }), createdPath: null };
    } catch (err) {
      if (err instanceof BlockDeviceError && err.code === 'ENOENT') throw new UsageError(`${spec}: no such file or block device (add --size SIZE to create an image file)`);
      throw err;
    }
  }
  const p = localPath(spec);
  if (p === null) throw new UsageError(`--size applies to image files only, not ${spec}`);
  const st = await statOrNull(p);
  if (st === null) return { dev: await openFileDevice(p, { create: { sizeBytes } }), createdPath: p };
  if (!st.isFile()) throw new UsageError(`${spec} is not a regular file; --size applies to image files only`);
  if (st.size === sizeBytes) return { dev: await openFileDevice(p, {}), createdPath: null };
  if (!force) throw new UsageError(`${spec} is ${st.size} bytes (${humanBytes(st.size)}), not the ${sizeBytes} bytes (${humanBytes(sizeBytes)}) --size asks for; use -F to resize it`);
  return { dev: await openFileDevice(p, { create: { sizeBytes, resize: true } }), createdPath: null };
}

export interface MkfsSummary {
  device: string;
  label: string;
  uuid: string;
  blockSize: number;
  clusterSize: number;
  totalBlocks: number;
  totalClusters: number;
  volumeBytes: number;
  clusterGroups: number;
  clustersPerGroup: number;
  slots: number;
  journalBytes: number;
  stack: StackLabel;
  clusterName: string;
  features: { compat: string[]; incompat: string[]; roCompat: string[] };
  backupSuperblockOffsets: number[];
}

function summarize(spec: string, sb: Superblock, plan: MkfsPlan): MkfsSummary {
  const bs = 2 ** sb.blockSizeBits;
  const cs = 2 ** sb.clusterSizeBits;
  return {
    device: spec,
    label: sb.label,
    uuid: uuidHex(sb.uuid),
    blockSize: bs,
    clusterSize: cs,
    totalBlocks: sb.totalBlocks,
    totalClusters: sb.totalClusters,
    volumeBytes: sb.totalClusters * cs,
    clusterGroups: plan.groups,
    clustersPerGroup: Math.min(groupBitmapCapacityBits(bs), 0xffff),
    slots: sb.maxSlots,
    journalBytes: plan.journalBytes,
    stack: sb.stack,
    clusterName: sb.clusterName,
    features: featureNames(sb),
    backupSuperblockOffsets: backupSuperOffsets(sb.totalBlocks, bs),
  };
}

function summaryText(s: MkfsSummary): string {
  const f = s.features;
  const tail = s.totalClusters - (s.clusterGroups - 1) * s.clustersPerGroup;
  const lines = [
    `${NAME} ${packageVersion()}`,
    `Cluster stack: ${s.stack}`,
    ...(s.clusterName ? [`Cluster name: ${s.clusterName}`] : []),
    `Label: ${s.label}`,
    `UUID: ${s.uuid}`,
    `Features: ${[...f.compat, ...f.incompat, ...f.roCompat].join(' ')}`,
    `Block size: ${s.blockSize} (${Math.log2(s.blockSize)} bits)`,
    `Cluster size: ${s.clusterSize} (${Math.log2(s.clusterSize)} bits)`,
    `Volume size: ${s.volumeBytes} (${s.totalClusters} clusters) (${s.totalBlocks} blocks)`,
    s.clusterGroups === 1
      ? `Cluster groups: 1 (covers ${s.totalClusters} clusters)`
      : `Cluster groups: ${s.clusterGroups} (tail covers ${tail} clusters, rest cover ${s.clustersPerGroup} clusters)`,
    `Journal size: ${s.journalBytes} (${humanBytes(s.journalBytes)} per slot)`,
    `Node slots: ${s.slots}`,
    `Backup superblocks: ${s.backupSuperblockOffsets.length}${s.backupSuperblockOffsets.length ? ` (at ${s.backupSuperblockOffsets.map(humanBytes).join(', ')})` : ''}`,
    `${NAME} successful`,
  ];
  return lines.join('\n') + '\n';
}

async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommandLine(argv, OPTIONS);
  if (v.help) {
    await writeOut(process.stdout, HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new UsageError('no DEVICE given; see --help');
  if (positionals.length > 1) throw new UsageError(`one DEVICE expected, got ${positionals.length}: ${positionals.join(' ')}; see --help`);
  const spec = positionals[0];
  const force = v.force === true;
  const quiet = v.quiet === true;
  const opts = mkfsOptionsFrom(v);
  let sizeBytes: number | undefined;
  if (v.size !== undefined) {
    sizeBytes = parseSize(v.size, '--size');
    if (sizeBytes <= 0 || sizeBytes % IMAGE_SIZE_UNIT_BYTES !== 0) throw new UsageError(`--size must be a positive multiple of ${IMAGE_SIZE_UNIT_BYTES} bytes, got ${v.size}`);
    // Refuse a too-small --size before a file is created or resized.
    planOrRefuse(sizeBytes, opts);
  }

  const { dev, createdPath } = await openTarget(spec, sizeBytes, force);
  let ok = false;
  try {
    const plan = planOrRefuse(dev.sizeBytes, opts);
    if (createdPath === null) {
      const found = await probeFilesystem(dev);
      if (found && !force) throw new UsageError(`${spec} contains ${found.description}; use -F to overwrite it`);
      if (found && !quiet && !v.json) process.stderr.write(`${NAME}: overwriting ${found.description} (-F)\n`);
    }
    const progress = new Progress({ enabled: progressWanted(quiet || v.json === true) });
    let sb: Superblock;
    try {
      sb = await mkfs(dev, { ...opts, onProgress: (phase, done, total) => progress.update(phase, done, total) });
    } finally {
      progress.finish();
    }
    // Read the superblock back: what the next mount will find must be what we wrote.
    const back = await findPrimarySuper(dev);
    if (!back.sb.uuid.equals(sb.uuid)) throw new Error(`the superblock read back from ${spec} is not the one just written`);
    await dev.close();
    ok = true;
    const summary = summarize(spec, sb, plan);
    if (v.json) await writeOut(process.stdout, JSON.stringify(summary) + '\n');
    else if (!quiet) await writeOut(process.stdout, summaryText(summary));
    return EXIT_OK;
  } finally {
    if (!ok) {
      await dev.close().catch(() => undefined);
      if (createdPath !== null) await fsp.rm(createdPath, { force: true }).catch(() => undefined);
    }
  }
}

export const tool: Tool = { name: NAME, exitUsage: EXIT_USAGE, exitError: EXIT_ERROR, run };

if (require.main === module) main(tool);
