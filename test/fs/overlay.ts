// Test helper: a copy-on-write BlockDevice over a read-only one. Writes land in memory,
// so many destructive cases can share one base image without copying it.
import type { BlockDevice } from '../../blockdev/types';
import { BlockDeviceError, checkRange } from '../../blockdev/types';

export class OverlayDevice implements BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  readonly sectorSize: number;
  readonly readOnly = false;
  private readonly lower: BlockDevice;
  private readonly sectors = new Map<number, Buffer>();
  private closed = false;

  constructor(lower: BlockDevice) {
    this.lower = lower;
    this.name = `overlay(${lower.name})`;
    this.sizeBytes = lower.sizeBytes;
    this.sectorSize = lower.sectorSize;
  }

  async read(offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.check(offsetBytes, lengthBytes);
    const out = await this.lower.read(offsetBytes, lengthBytes, into);
    for (let o = 0; o < lengthBytes; o += this.sectorSize) {
      const s = this.sectors.get(offsetBytes + o);
      if (s) s.copy(out, o);
    }
    return out;
  }

  async write(offsetBytes: number, data: Buffer): Promise<void> {
    this.check(offsetBytes, data.length);
    for (let o = 0; o < data.length; o += this.sectorSize) this.sectors.set(offsetBytes + o, Buffer.from(data.subarray(o, o + this.sectorSize)));
  }

  async flush(): Promise<void> {
    this.check(0, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private check(off: number, len: number): void {
    if (this.closed) throw new BlockDeviceError('ECLOSED', `${this.name} is closed`);
    checkRange(this, off, len);
  }
}
