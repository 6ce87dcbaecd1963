/**
 * Reading the packed frame table ({mem}:frames, layout in keys.ts) on the Node side: the decoder
 * of a record and the walk of the free list threaded through it. Read-only: every write goes
 * through the Lua helpers of mem/lua.ts (or, for tests that corrupt on purpose, MemStore.frameSet).
 */
import { FRAME_BYTES, FRAME_FIELDS, FRAME_STATE, type FrameField } from '../keys';

/** One frame as frames() returns it (state by name: free | used | zero | "state <n>"). */
export interface FrameView {
  gen: number;
  ref: number;
  map: number;
  state: string;
  data: number;
  /** page->flags (keys.ts PAGE_FLAGS) */
  flags: number;
  /** the compound order of a head page (PG_head: hugetlbfs's pool, THP) and of a THP tail (PG_tail), else 0 */
  reserved: number;
}

const STATE_NAMES = new Map<number, string>(
  Object.entries(FRAME_STATE).map(([name, code]) => [code, name]),
);
export const frameStateName = (code: number): string => STATE_NAMES.get(code) ?? `state ${code}`;

/** Field f of the record at byte offset at (BITFIELD's big-endian integers). */
export function readField(buf: Buffer, at: number, f: FrameField): number {
  const { type, offset } = FRAME_FIELDS[f];
  const o = at + offset;
  switch (type) {
    case 'u8':
      return buf.readUInt8(o);
    case 'u16':
      return buf.readUInt16BE(o);
    case 'u32':
      return buf.readUInt32BE(o);
    case 'i32':
      return buf.readInt32BE(o);
    case 'i64':
      return Number(buf.readBigInt64BE(o));
  }
}

/** How many whole records the table holds (pfns 0..n-1). */
export const recordsIn = (buf: Buffer): number => Math.floor(buf.length / FRAME_BYTES);

export function decodeFrame(buf: Buffer, pfn: number): FrameView {
  const at = pfn * FRAME_BYTES;
  return {
    gen: readField(buf, at, 'gen'),
    ref: readField(buf, at, 'ref'),
    map: readField(buf, at, 'map'),
    state: frameStateName(readField(buf, at, 'state')),
    data: readField(buf, at, 'data'),
    flags: readField(buf, at, 'flags'),
    reserved: readField(buf, at, 'reserved'),
  };
}

/**
 * The free list in allocation order: the chain from head through the next fields, then the
 * frames never allocated (hwm+1..frames). A corrupt chain still ends: a pfn seen twice is listed
 * a second time and the walk stops there (a duplicate for fsck), a pfn outside the table is
 * listed and ends it.
 */
export function walkFreeList(buf: Buffer, head: number, hwm: number, frames: number): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  const n = recordsIn(buf);
  for (let p = head; p !== 0;) {
    out.push(p);
    if (seen.has(p) || p < 0 || p >= n) break;
    seen.add(p);
    p = readField(buf, p * FRAME_BYTES, 'next');
  }
  for (let p = hwm + 1; p <= frames; p++) out.push(p);
  return out;
}
