import { describe, expect, it } from 'vitest';
import { FRAME_BYTES, FRAME_FIELDS } from '../keys';
import { decodeFrame, walkFreeList } from './frame';

/** A table of n records, next fields as given (pfn → next). */
function table(n: number, next: Record<number, number>): Buffer {
  const buf = Buffer.alloc(n * FRAME_BYTES);
  for (const [pfn, nx] of Object.entries(next))
    buf.writeUInt32BE(nx, Number(pfn) * FRAME_BYTES + FRAME_FIELDS.next.offset);
  return buf;
}

describe('walkFreeList', () => {
  it('gives the chain, then the frames never allocated', () => {
    expect(walkFreeList(table(9, { 3: 1, 1: 0 }), 3, 5, 8)).toEqual([3, 1, 6, 7, 8]);
    expect(walkFreeList(table(9, {}), 0, 0, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('ends a corrupt chain: a cycle lists its pfn twice, a pfn past the table ends it', () => {
    expect(walkFreeList(table(9, { 2: 4, 4: 2 }), 2, 8, 8)).toEqual([2, 4, 2]);
    expect(walkFreeList(table(9, { 2: 40 }), 2, 8, 8)).toEqual([2, 40]);
  });
});

describe('decodeFrame', () => {
  it('reads signed counts and data as BITFIELD writes them (big-endian), unknown states by number', () => {
    const buf = Buffer.alloc(2 * FRAME_BYTES);
    const at = FRAME_BYTES;
    buf.writeUInt32BE(2 ** 32 - 1, at + FRAME_FIELDS.gen.offset);
    buf.writeInt32BE(-1, at + FRAME_FIELDS.ref.offset);
    buf.writeInt32BE(2 ** 31 - 1, at + FRAME_FIELDS.map.offset);
    buf.writeUInt8(9, at + FRAME_FIELDS.state.offset);
    buf.writeBigInt64BE(BigInt(Number.MIN_SAFE_INTEGER), at + FRAME_FIELDS.data.offset);
    buf.writeUInt8(16, at + FRAME_FIELDS.flags.offset);
    buf.writeUInt16BE(3, at + FRAME_FIELDS.reserved.offset);
    expect(decodeFrame(buf, 1)).toEqual({
      gen: 2 ** 32 - 1,
      ref: -1,
      map: 2 ** 31 - 1,
      state: 'state 9',
      data: Number.MIN_SAFE_INTEGER,
      flags: 16,
      reserved: 3,
    });
    expect(decodeFrame(buf, 0)).toEqual({
      gen: 0,
      ref: 0,
      map: 0,
      state: 'free',
      data: 0,
      flags: 0,
      reserved: 0,
    });
  });
});
