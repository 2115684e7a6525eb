// The slot map: which node occupies which slot. Read and written only under the
// superblock lock (S) at EX, at mount, umount and recovery.
import { FsError } from './errors';
import { SIG, SYSFILE } from './format/constants';
import { SlotRecord, decodeSlotMapBlock, encodeSlotMapBlock, slotsPerBlock } from './format/slot-map';
import type { Transaction } from './transaction';

async function firstBlock(tx: Transaction): Promise<number> {
  const ino = await tx.getInode(await tx.vol.systemInode(SYSFILE.slotMap));
  if (ino.body.kind !== 'extents' || ino.body.list.records.length === 0) throw new FsError('EIO', 'slot map has no blocks');
  return ino.body.list.records[0].blkno;
}

export async function readSlotMap(tx: Transaction): Promise<SlotRecord[]> {
  const first = await firstBlock(tx);
  const per = slotsPerBlock(tx.bs);
  const out: SlotRecord[] = [];
  for (let i = 0; i * per < tx.vol.sb.maxSlots; i++) {
    const { recs } = decodeSlotMapBlock(await tx.read(first + i, SIG.slotMap));
    out.push(...recs);
  }
  if (out.length !== tx.vol.sb.maxSlots) throw new FsError('EIO', `slot map holds ${out.length} slots, superblock says ${tx.vol.sb.maxSlots}`);
  return out;
}

/**
 * The slot map as on disk now, not as cached: for readers that do not hold S (a cluster
 * mount asking which mounts are alive while it holds only inode locks).
 */
export async function readSlotMapFresh(tx: Transaction): Promise<SlotRecord[]> {
  const first = await firstBlock(tx);
  for (let i = 0; i * slotsPerBlock(tx.bs) < tx.vol.sb.maxSlots; i++) tx.vol.forget(first + i);
  return readSlotMap(tx);
}

export async function writeSlotMap(tx: Transaction, slots: SlotRecord[]): Promise<void> {
  const first = await firstBlock(tx);
  const per = slotsPerBlock(tx.bs);
  for (let i = 0; i * per < slots.length; i++) {
    tx.put(first + i, encodeSlotMapBlock(slots.slice(i * per, (i + 1) * per), i * per, first + i, tx.vol.fsGeneration, tx.bs));
  }
}

/**
 * Chooses a slot for `nodeNum`: the one it already holds (it crashed and came back), else
 * the preferred slot if free, else the first free one. ENOSPC when every slot is taken.
 */
export function pickSlot(slots: SlotRecord[], nodeNum: number, preferred?: number): number {
  const mine = slots.findIndex((s) => s.inUse && s.nodeNum === nodeNum);
  if (mine >= 0) return mine;
  if (preferred !== undefined && preferred >= 0 && preferred < slots.length && !slots[preferred].inUse) return preferred;
  const free = slots.findIndex((s) => !s.inUse);
  if (free < 0) throw new FsError('ENOSPC', `all ${slots.length} slots are in use; add slots with tunefs.o2fs or unmount a node`);
  return free;
}
