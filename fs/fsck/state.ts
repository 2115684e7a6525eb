// What fsck learns while walking the volume: which clusters and metadata blocks are
// really in use, and who links to which inode. The allocator pass compares this with the
// on-disk bitmaps.
import type { Suballoc } from '../format/header';
import type { Inode } from '../format/inode';
import type { Transaction } from '../transaction';
import type { Volume } from '../volume';
import type { Report } from './report';

export interface InodeInfo {
  ino: Inode;
  /** Directory entries naming this inode (outside orphan directories). */
  refs: number;
  /** For directories: subdirectories found in it. */
  subdirs: number;
  /** The directory whose entry reached it first. */
  parent: number;
  orphan: boolean;
}

export class FsckState {
  readonly vol: Volume;
  readonly tx: Transaction;
  readonly report: Report;
  readonly usedClusters: Uint8Array;
  /** Metadata blocks handed out by suballocators, with the triple they carry. */
  readonly metaRefs = new Map<number, Suballoc>();
  readonly inodes = new Map<number, InodeInfo>();
  /** Blocks already known to be unreadable garbage (not to be counted as in use). */
  readonly badBlocks = new Set<number>();
  /** Directories whose entries have been walked. */
  readonly walkedDirs = new Set<number>();

  constructor(vol: Volume, tx: Transaction, report: Report) {
    this.vol = vol;
    this.tx = tx;
    this.report = report;
    this.usedClusters = new Uint8Array(Math.ceil(vol.geo.totalClusters / 8));
  }

  get repair(): boolean {
    return this.report.repair;
  }

  clusterUsed(c: number): boolean {
    return (this.usedClusters[Math.floor(c / 8)] & (1 << c % 8)) !== 0;
  }

  /** Marks clusters in use; returns false (after reporting) when any was already in use. */
  claimClusters(start: number, count: number, what: string): boolean {
    if (start < 0 || count < 1 || start + count > this.vol.geo.totalClusters) {
      this.report.problem(`${what}: clusters ${start}+${count} lie outside the volume`, true);
      return false;
    }
    for (let c = start; c < start + count; c++) {
      if (this.clusterUsed(c)) {
        // Undo the part claimed so far, so the caller can drop the whole run.
        for (let u = start; u < c; u++) this.usedClusters[Math.floor(u / 8)] &= ~(1 << u % 8);
        this.report.problem(`${what}: cluster ${c} is also used by another object (cross-linked)`, true);
        return false;
      }
      // Cluster numbers reach 2^32: no 32-bit shifts on them.
      this.usedClusters[Math.floor(c / 8)] |= 1 << c % 8;
    }
    return true;
  }

  /** Marks the clusters holding blocks [blkno, blkno+blocks) in use. */
  claimBlocks(blkno: number, blocks: number, what: string): boolean {
    const bpc = this.vol.geo.blocksPerCluster;
    if (blkno % bpc !== 0) {
      this.report.problem(`${what}: block ${blkno} is not cluster aligned`, true);
      return false;
    }
    return this.claimClusters(blkno / bpc, Math.ceil(blocks / bpc), what);
  }

  /** Records a suballocated metadata block; false if it is already referenced. */
  claimMeta(blkno: number, s: Suballoc, what: string): boolean {
    if (this.metaRefs.has(blkno)) {
      this.report.problem(`${what}: block ${blkno} is referenced twice`, true);
      return false;
    }
    this.metaRefs.set(blkno, s);
    return true;
  }
}
