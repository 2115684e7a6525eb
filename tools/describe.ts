// Human names for on-disk values, shared by the tools: feature and flag bits by name, ls-style
// mode strings, times, UUIDs. Names come from the constant tables in fs/format/constants.ts
// (camelCase keys printed kebab-case), so a new flag shows up here without an edit.
import {
  DYN, FEATURE_COMPAT, FEATURE_INCOMPAT, FEATURE_RO_COMPAT, INODE_FL, JOURNAL_FL, SB_STATE, SIG,
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
} from '../fs/format/constants';
import type { Timespec } from '../fs/format/inode';
import type { Superblock } from '../fs/format/superblock';

/** "backupSuper" -> "backup-super". */
export function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/** Names of the bits set in `mask`; bits the table lacks come out as "0x..". */
export function bitNames(mask: number, table: Readonly<Record<string, number>>): string[] {
  const out: string[] = [];
  let rest = mask >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if ((rest & bit) !== 0) {
      out.push(kebab(name));
      rest = (rest & ~bit) >>> 0;
    }
  }
  for (let bit = 1; rest !== 0 && bit !== 0; bit = (bit << 1) >>> 0) {
    if ((rest & bit) !== 0) {
      out.push('0x' + bit.toString(16));
      rest = (rest & ~bit) >>> 0;
    }
  }
  return out;
}

export interface FeatureNames {
  compat: string[];
  incompat: string[];
  roCompat: string[];
}

export function featureNames(sb: Superblock): FeatureNames {
  return {
    compat: bitNames(sb.featureCompat, FEATURE_COMPAT),
    incompat: bitNames(sb.featureIncompat, FEATURE_INCOMPAT),
    roCompat: bitNames(sb.featureRoCompat, FEATURE_RO_COMPAT),
  };
}

export function stateNames(state: number): string[] {
  return bitNames(state, SB_STATE);
}

export function inodeFlagNames(flags: number): string[] {
  return bitNames(flags, INODE_FL);
}

export function dynFeatureNames(dyn: number): string[] {
  return bitNames(dyn, DYN);
}

export function journalFlagNames(flags: number): string[] {
  return bitNames(flags, JOURNAL_FL);
}

/** "none" for an empty list, else the names joined by spaces. */
export function joinNames(names: string[]): string {
  return names.length === 0 ? 'none' : names.join(' ');
}

export type FileTypeName = 'regular' | 'directory' | 'symlink' | 'char-device' | 'block-device' | 'fifo' | 'socket' | 'unknown';

export function fileTypeName(mode: number): FileTypeName {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'regular';
    case S_IFDIR: return 'directory';
    case S_IFLNK: return 'symlink';
    case S_IFCHR: return 'char-device';
    case S_IFBLK: return 'block-device';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'socket';
    default: return 'unknown';
  }
}

/** ls -l style: "drwxr-xr-x", with setuid/setgid/sticky as s/S and t/T. */
export function modeString(mode: number): string {
  const typeChar: Record<number, string> = { [S_IFREG]: '-', [S_IFDIR]: 'd', [S_IFLNK]: 'l', [S_IFCHR]: 'c', [S_IFBLK]: 'b', [S_IFIFO]: 'p', [S_IFSOCK]: 's' };
  const t = typeChar[mode & S_IFMT] ?? '?';
  const rwx = (bits: number, special: boolean, specialChar: string): string => {
    const x = bits & 1;
    const xChar = special ? (x ? specialChar : specialChar.toUpperCase()) : x ? 'x' : '-';
    return (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + xChar;
  };
  return t + rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') + rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') + rwx(mode & 7, (mode & 0o1000) !== 0, 't');
}

/** "0100644": the full mode in octal, type bits included. */
export function modeOctal(mode: number): string {
  return '0' + (mode >>> 0).toString(8).padStart(6, '0');
}

/** Upper-case hex without dashes, as mkfs.ocfs2 and debugfs.ocfs2 print UUIDs. */
export function uuidHex(uuid: Buffer): string {
  return uuid.toString('hex').toUpperCase();
}

export function hex32(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** Local time "YYYY-MM-DD HH:MM:SS" (what a person at this host wants to read). */
export function localTime(sec: number): string {
  const d = new Date(sec * 1000);
  if (Number.isNaN(d.getTime())) return `(invalid time ${sec})`;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Local time with nanoseconds and the zone offset, for stat. */
export function localTimeNs(ts: Timespec): string {
  const d = new Date(ts.sec * 1000);
  if (Number.isNaN(d.getTime())) return `(invalid time ${ts.sec}.${ts.nsec})`;
  const offMin = -d.getTimezoneOffset();
  const sign = offMin < 0 ? '-' : '+';
  const abs = Math.abs(offMin);
  return `${localTime(ts.sec)}.${String(ts.nsec).padStart(9, '0')} ${sign}${pad2(Math.floor(abs / 60))}${pad2(abs % 60)}`;
}

/** ISO 8601 UTC with nanoseconds: "2024-05-01T12:00:00.123456789Z" (JSON output). */
export function isoTimeNs(ts: Timespec): string | null {
  const d = new Date(ts.sec * 1000);
  if (Number.isNaN(d.getTime())) return null;
  return d.toISOString().replace(/\.\d{3}Z$/, `.${String(ts.nsec).padStart(9, '0')}Z`);
}

/** ISO time for a seconds count, null for 0 ("never"). */
export function isoOrNever(sec: number): string | null {
  if (sec === 0) return null;
  const d = new Date(sec * 1000);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/** "64 MiB", "1.5 GiB", "512 bytes". */
export function humanBytes(n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  if (n < 1024) return `${n} bytes`;
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1).replace(/\.0$/, '');
  return `${text} ${units[u]}`;
}

/** What a metadata block with this signature is, for "block N is a ..., not an inode". */
export function signatureName(sig: string): string | null {
  const names: Record<string, string> = {
    [SIG.super]: 'superblock',
    [SIG.inode]: 'inode',
    [SIG.extentBlock]: 'extent block',
    [SIG.group]: 'group descriptor',
    [SIG.dirLeaf]: 'directory leaf',
    [SIG.xattrBlock]: 'xattr block',
    [SIG.slotMap]: 'slot map block',
    [SIG.heartbeat]: 'heartbeat block',
    [SIG.journalSuper]: 'journal superblock',
  };
  return names[sig] ?? null;
}
