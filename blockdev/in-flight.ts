// Counts I/O under way on a device so close() and power cuts can wait until it is quiet.
import assert from 'node:assert/strict';

export class InFlight {
  private count = 0;
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.count;
  }

  async track<T>(op: () => Promise<T>): Promise<T> {
    this.count++;
    try {
      return await op();
    } finally {
      this.count--;
      assert(this.count >= 0);
      if (this.count === 0) {
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      }
    }
  }

  /** Resolves true once nothing is in flight, or false after timeoutMs (Infinity: never). */
  drained(timeoutMs = Infinity): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = Number.isFinite(timeoutMs) ? setTimeout(() => resolve(false), timeoutMs) : null;
      this.waiters.push(() => {
        if (timer) clearTimeout(timer);
        resolve(true);
      });
    });
  }
}
