// An async reader/writer lock: many readers or one writer, writers first (a waiting
// writer holds back new readers, so a stream of reads cannot starve it). The mount uses
// one for its metadata: operations that only read take it shared; anything that changes
// blocks takes it exclusive, so transactions never interleave.
export class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: Array<{ write: boolean; grant: () => void }> = [];

  async read<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(false);
    try {
      return await fn();
    } finally {
      this.readers -= 1;
      this.pump();
    }
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire(true);
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.pump();
    }
  }

  private acquire(write: boolean): Promise<void> {
    if (this.queue.length === 0 && !this.writer && (!write || this.readers === 0)) {
      if (write) this.writer = true;
      else this.readers += 1;
      return Promise.resolve();
    }
    return new Promise((grant) => this.queue.push({ write, grant }));
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.writer) {
      const next = this.queue[0];
      if (next.write) {
        if (this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        next.grant();
        return;
      }
      this.queue.shift();
      this.readers += 1;
      next.grant();
    }
  }
}
