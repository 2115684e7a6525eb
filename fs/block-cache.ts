// The metadata block cache: a bounded map from block number to the newest verified image,
// evicted by CLOCK (second chance) rather than strict LRU. A hit only sets a flag; strict LRU
// moved the entry to the back of the Map on every hit, which cost more than the lookup it
// served. Images are immutable once sealed (Volume.readMeta), so the cache hands out the
// stored buffer itself. Beside an image a slot can keep its decoded form (Transaction's), so
// a block is decoded once per image rather than once per reader; it goes with the image.
//
// Owners (cluster mounts): each block can be tagged with the inodes whose locks covered it
// when it entered the cache (a superset of the one inode it belongs to), so that when one
// inode's lock goes, forgetOwnedBy() drops exactly what that lock may have covered and
// nothing else (fs/inode-locks.ts).
interface Slot {
  image: Buffer;
  referenced: boolean;
  /** What `image` decodes to (opaque here), or undefined. */
  decoded: unknown;
  owners: readonly number[];
}

const NO_OWNERS: readonly number[] = Object.freeze([]);

export class BlockCache {
  private readonly slots = new Map<number, Slot>();
  /** Owner inode -> the cached blocks tagged with it (only blocks in `slots`). */
  private readonly byOwner = new Map<number, Set<number>>();

  constructor(readonly capacityBlocks: number) {
    if (!(Number.isInteger(capacityBlocks) && capacityBlocks > 0)) throw new RangeError(`cache capacity ${capacityBlocks}`);
  }

  get size(): number {
    return this.slots.size;
  }

  has(blkno: number): boolean {
    return this.slots.has(blkno);
  }

  get(blkno: number): Buffer | undefined {
    const s = this.slots.get(blkno);
    if (!s) return undefined;
    s.referenced = true;
    return s.image;
  }

  /** Stores the newest image; `owners` replaces the block's tags (omitted: they stay). */
  set(blkno: number, image: Buffer, owners?: readonly number[]): void {
    const s = this.slots.get(blkno);
    if (s) {
      s.image = image;
      s.decoded = undefined;
      s.referenced = true;
      if (owners) this.tag(blkno, s, owners);
      return;
    }
    const slot: Slot = { image, referenced: false, decoded: undefined, owners: NO_OWNERS };
    this.slots.set(blkno, slot);
    if (owners) this.tag(blkno, slot, owners);
    if (this.slots.size > this.capacityBlocks) this.evictOne();
  }

  /** The decoded form kept beside `image`, if `image` is still this block's cached image. */
  decodedOf(blkno: number, image: Buffer): unknown {
    const s = this.slots.get(blkno);
    return s && s.image === image ? s.decoded : undefined;
  }

  /** Keeps the decoded form of `image` beside it, if `image` is this block's cached image. */
  setDecoded(blkno: number, image: Buffer, decoded: unknown): void {
    const s = this.slots.get(blkno);
    if (s && s.image === image) s.decoded = decoded;
  }

  delete(blkno: number): void {
    const s = this.slots.get(blkno);
    if (!s) return;
    this.slots.delete(blkno);
    this.untag(blkno, s);
  }

  /** Drops every block tagged with `owner`; returns how many. */
  forgetOwnedBy(owner: number): number {
    const blocks = this.byOwner.get(owner);
    if (!blocks) return 0;
    const n = blocks.size;
    for (const blkno of [...blocks]) this.delete(blkno);
    if (this.byOwner.has(owner)) throw new Error(`assertion: blocks of owner ${owner} left in the cache`);
    return n;
  }

  /** How many cached blocks carry `owner`'s tag (tests). */
  ownedBy(owner: number): number {
    return this.byOwner.get(owner)?.size ?? 0;
  }

  clear(): void {
    this.slots.clear();
    this.byOwner.clear();
  }

  private tag(blkno: number, s: Slot, owners: readonly number[]): void {
    this.untag(blkno, s);
    s.owners = owners;
    for (const o of owners) {
      let set = this.byOwner.get(o);
      if (!set) this.byOwner.set(o, (set = new Set()));
      set.add(blkno);
    }
  }

  private untag(blkno: number, s: Slot): void {
    for (const o of s.owners) {
      const set = this.byOwner.get(o);
      if (!set) continue;
      set.delete(blkno);
      if (set.size === 0) this.byOwner.delete(o);
    }
    s.owners = NO_OWNERS;
  }

  /** The hand sweeps from the oldest entry: referenced ones get a second chance at the back. */
  private evictOne(): void {
    // Each step clears a flag or evicts, so one pass over the map always finds a victim.
    for (let steps = 0; steps <= this.slots.size; steps++) {
      const [blkno, s] = this.slots.entries().next().value as [number, Slot];
      this.slots.delete(blkno);
      if (!s.referenced) {
        this.untag(blkno, s);
        return;
      }
      s.referenced = false;
      this.slots.set(blkno, s);
    }
    throw new Error('assertion: CLOCK sweep found no block to evict');
  }
}
