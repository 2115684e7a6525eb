// The metadata block cache: a bounded map from block number to the newest verified image,
// evicted by CLOCK (second chance) rather than strict LRU. A hit only sets a flag; strict LRU
// moved the entry to the back of the Map on every hit, which cost more than the lookup it
// served. Images are immutable once sealed (Volume.readMeta), so the cache hands out the
// stored buffer itself. Beside an image a slot can keep its decoded form (Transaction's), so
// a block is decoded once per image rather than once per reader; it goes with the image.
interface Slot {
  image: Buffer;
  referenced: boolean;
  /** What `image` decodes to (opaque here), or undefined. */
  decoded: unknown;
}

export class BlockCache {
  private readonly slots = new Map<number, Slot>();

  constructor(readonly capacityBlocks: number) {
    if (!(Number.isInteger(capacityBlocks) && capacityBlocks > 0)) throw new RangeError(`cache capacity ${capacityBlocks}`);
  }

  get size(): number {
    return this.slots.size;
  }

  get(blkno: number): Buffer | undefined {
    const s = this.slots.get(blkno);
    if (!s) return undefined;
    s.referenced = true;
    return s.image;
  }

  set(blkno: number, image: Buffer): void {
    const s = this.slots.get(blkno);
    if (s) {
      s.image = image;
      s.decoded = undefined;
      s.referenced = true;
      return;
    }
    this.slots.set(blkno, { image, referenced: false, decoded: undefined });
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
    this.slots.delete(blkno);
  }

  clear(): void {
    this.slots.clear();
  }

  /** The hand sweeps from the oldest entry: referenced ones get a second chance at the back. */
  private evictOne(): void {
    // Each step clears a flag or evicts, so one pass over the map always finds a victim.
    for (let steps = 0; steps <= this.slots.size; steps++) {
      const [blkno, s] = this.slots.entries().next().value as [number, Slot];
      this.slots.delete(blkno);
      if (!s.referenced) return;
      s.referenced = false;
      this.slots.set(blkno, s);
    }
    throw new Error('assertion: CLOCK sweep found no block to evict');
  }
}
