// Memory-aligned bounce buffers for O_DIRECT I/O.
//
// O_DIRECT needs the user buffer's *memory address* aligned (to the device's dma_alignment,
// at most its logical block size; we use 4 KiB, the page size, which satisfies every device).
// Node exposes no buffer addresses, so "allocate size+alignment and subarray at an aligned
// byteOffset" does not work: byteOffset is relative to the ArrayBuffer, whose backing store
// comes from malloc and is only 16-byte aligned. WebAssembly memory is different: V8 maps it
// with the OS page allocator, so its backing store starts on a page boundary and every
// byteOffset that is a multiple of 4096 is a page-aligned address. The store never moves
// while the memory is not grown (we never grow it), so slots carved out of it stay aligned.
//
// One pool per device (one owner): a fixed number of fixed-size slots; an I/O larger than a
// slot is done in slot-sized pieces. Callers wait FIFO for a free slot, which also bounds the
// number of direct I/Os in flight per device.
import assert from 'node:assert/strict';
import { BlockDeviceError } from './types';

export const DIRECT_ALIGNMENT_BYTES = 4096;
const WASM_PAGE_BYTES = 65536;

// The project compiles with lib ES2022 and no DOM lib, which is where TypeScript keeps the
// WebAssembly types; Node has the global at runtime. Declare the one constructor we use.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
declare const WebAssembly: { Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory };
/** Queued waiters beyond this mean a caller is issuing I/O without bound: refuse. */
const WAITERS_MAX = 100_000;

export class AlignedBufferPool {
  readonly slotBytes: number;
  readonly slotCount: number;
  private readonly free: Buffer[] = [];
  private readonly waiters: ((slot: Buffer) => void)[] = [];
  // Kept so the memory (and thus every slot's backing store) lives as long as the pool.
  private readonly memory: WasmMemory;

  constructor(slotBytes: number, slotCount: number) {
    assert(Number.isSafeInteger(slotBytes) && slotBytes > 0 && slotBytes % DIRECT_ALIGNMENT_BYTES === 0,
      `slotBytes must be a positive multiple of ${DIRECT_ALIGNMENT_BYTES}: ${slotBytes}`);
    assert(Number.isSafeInteger(slotCount) && slotCount > 0 && slotCount <= 1024, `slotCount out of range: ${slotCount}`);
    this.slotBytes = slotBytes;
    this.slotCount = slotCount;
    const pages = Math.ceil((slotBytes * slotCount) / WASM_PAGE_BYTES);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    for (let i = 0; i < slotCount; i++) {
      const slot = Buffer.from(this.memory.buffer, i * slotBytes, slotBytes);
      assert(slot.byteOffset % DIRECT_ALIGNMENT_BYTES === 0);
      this.free.push(slot);
    }
  }

  /** Resolves with a free slot (exactly `slotBytes` long); give it back with release(). */
  acquire(): Promise<Buffer> {
    const slot = this.free.pop();
    if (slot !== undefined) return Promise.resolve(slot);
    if (this.waiters.length >= WAITERS_MAX) {
      return Promise.reject(new BlockDeviceError('EBUSY', `more than ${WAITERS_MAX} direct I/Os queued on one device`));
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(slot: Buffer): void {
    assert(slot.buffer === this.memory.buffer && slot.length === this.slotBytes, 'released a buffer that is not a slot of this pool');
    assert(this.free.length < this.slotCount && !this.free.includes(slot), 'slot released twice');
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter(slot);
    else this.free.push(slot);
  }
}
