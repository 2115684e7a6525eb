// A tiny seeded PRNG (mulberry32) for deterministic simulations and tests: the same seed always
// gives the same sequence, on every machine and Node version, so a failing seed can be replayed
// (STYLE.md §3 "Simulate"). Not for cryptography.
import assert from 'node:assert/strict';

export class Prng {
  private state: number;

  constructor(seed: number) {
    assert(Number.isFinite(seed), `Prng seed must be a finite number, got ${seed}`);
    // Any number is accepted; only its low 32 bits matter.
    this.state = Math.trunc(seed) >>> 0;
  }

  /** The next unsigned 32-bit integer. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (z ^ (z >>> 14)) >>> 0;
  }

  /** A float in [0, 1) with 32 bits of randomness. */
  float(): number {
    return this.next() / 0x1_0000_0000;
  }

  /** An integer in [lo, hiExclusive); the range may span at most 2^32 values. */
  int(lo: number, hiExclusive: number): number {
    assert(Number.isSafeInteger(lo) && Number.isSafeInteger(hiExclusive), `Prng.int bounds must be integers: ${lo}, ${hiExclusive}`);
    const span = hiExclusive - lo;
    assert(span > 0 && span <= 0x1_0000_0000, `Prng.int: empty or too wide range [${lo}, ${hiExclusive})`);
    // Rejection sampling keeps the result unbiased; each try succeeds with probability > 1/2,
    // so the loop is bounded in practice; the hard cap turns a broken generator into a crash.
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % span);
    for (let tries = 0; tries < 1000; tries++) {
      const x = this.next();
      if (x < limit) return lo + (x % span);
    }
    assert.fail('Prng.int: rejection sampling did not terminate');
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }
}
