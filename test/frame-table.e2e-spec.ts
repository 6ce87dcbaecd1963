/**
 * The packed frame table ({mem}:frames, keys.ts) against a real redis-server: the byte image of
 * a record, fields at their limits, the flags byte left alone by every frame script, the last
 * pfn of the table, the free list threaded through the records (LIFO, then the frames never
 * allocated), and memFormat at 1M frames (idempotent, one zero-filled string).
 */
import { describe, expect, it } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import { FRAME_BYTES, MEM, PAGE_FLAGS, Store } from '@mmlab/model';
import { withRedisStore } from './support/redis-store';

let store: Store;

withRedisStore(8, (s) => (store = s));

/** The raw bytes of pfn's record, as hex. */
const record = async (pfn: number): Promise<string> =>
  (
    await store.redis.getrangeBuffer(MEM.frames, pfn * FRAME_BYTES, (pfn + 1) * FRAME_BYTES - 1)
  ).toString('hex');

/** Allocate frames until pfn comes out; → its gen. */
async function allocUntil(pfn: number): Promise<number> {
  for (;;) {
    const f = await store.allocPage(null);
    if (!f) throw new Error(`pfn ${pfn} never came out`);
    if (f.pfn === pfn) return f.gen;
  }
}

describe('the frame record', () => {
  it('is laid out as keys.ts says: gen, refcount, mapcount, next, prev, state, flags, data', async () => {
    // the zero page: gen 1, refcount 1, state zero (2), the rest 0
    expect(await record(0)).toBe(
      '00000001' +
        '00000001' +
        '00000000' +
        '00000000' +
        '00000000' +
        '02' +
        '00' +
        '0000' +
        '0000000000000000',
    );
    const a = (await store.allocPage(null, 3))!;
    await store.frameAccess(a.pfn, 'write', 0x0102030405, 'cpu0');
    expect(await record(a.pfn)).toBe(
      '00000001' +
        '00000001' +
        '00000003' +
        '00000000' +
        '00000000' +
        '01' +
        '00' +
        '0000' +
        '0000000102030405',
    );
    // freed: counts 0, state free, and it heads the free list (next: the chain was empty)
    await store.putPages([a], 'ref');
    expect((await record(a.pfn)).slice(0, 48)).toBe(
      '00000001' + '00000000' + '00000000' + '00000000' + '00000000' + '00' + '00' + '0000',
    );
  });

  it('holds every field at its limit without spilling into its neighbours', async () => {
    const gen = await allocUntil(8); // the last pfn of the table
    expect(gen).toBe(1);
    const max = Number.MAX_SAFE_INTEGER;
    const min = Number.MIN_SAFE_INTEGER;
    // the data word: any Value a cpu.write or an RDMA write may carry (a safe integer)
    expect(await store.frameAccess(8, 'write', max, 'cpu0')).toMatchObject({ value: max, gen: 1 });
    expect(await store.frameAccess(7, 'write', min, 'cpu0')).toMatchObject({ value: min });
    await store.copyPage(8, 6); // read back and written again inside Lua: no digits lost
    const f = await store.frames();
    expect(f.get(6)!.data).toBe(max);
    expect(f.get(7)!.data).toBe(min);
    expect(f.get(8)).toEqual({
      gen: 1,
      ref: 1,
      map: 1,
      state: 'used',
      flags: 0,
      reserved: 0,
      data: max,
    });
    // gen at the top of u32: the next allocation of pfn 8 gives 2^32 - 1
    await store.putPages([{ pfn: 8, gen: 1 }]);
    await store.frameSet(8, { gen: 2 ** 32 - 2 });
    expect(await store.allocPage(null)).toEqual({ pfn: 8, gen: 2 ** 32 - 1 });
    // counts at the top of i32 (atomic_t): get_page adds, put_page takes away, exactly
    await store.frameSet(8, { ref: 2 ** 31 - 2, map: 2 ** 31 - 3 });
    expect(await store.getPages([{ pfn: 8, gen: 2 ** 32 - 1 }], 'map')).toEqual([]);
    expect(await store.pageCounts(8)).toEqual({
      ref: 2 ** 31 - 1,
      map: 2 ** 31 - 2,
      gen: 2 ** 32 - 1,
    });
    // the neighbours of pfn 8 in the string are untouched: pfn 7 before it, nothing after it
    expect((await store.frames()).get(7)).toEqual({
      gen: 1,
      ref: 1,
      map: 1,
      state: 'used',
      flags: 0,
      reserved: 0,
      data: min,
    });
    expect(await store.redis.strlen(MEM.frames)).toBe(9 * FRAME_BYTES);
    // past the last pfn there is no frame: an access faults, a put is a bad pfn, nothing grows
    expect(await store.frameAccess(9, 'write', 1, 'cpu0')).toBeNull();
    expect(await store.putPages([{ pfn: 9, gen: 0 }])).toEqual({ freed: [], bad: [9] });
    expect(await store.putPages([{ pfn: -1, gen: 0 }])).toEqual({ freed: [], bad: [-1] });
    expect(await store.redis.strlen(MEM.frames)).toBe(9 * FRAME_BYTES);
  });

  it('keeps the flags byte through alloc, get, put and accesses, and the flags clobber nothing', async () => {
    const a = (await store.allocPage(null))!;
    const b = (await store.allocPage(null))!;
    const every = Object.values(PAGE_FLAGS).reduce((x, y) => x | y, 0) | 0xc0;
    expect(every).toBe(0xff);
    // every bit but the compound ones: PG_head/PG_tail make the frame part of a huge page,
    // whose order reserved gives (THP), and a tail's accesses go through its head
    const all = every & ~(PAGE_FLAGS.PG_head | PAGE_FLAGS.PG_tail);
    await store.frameSet(a.pfn, { flags: all, reserved: 0xffff });
    // every field around the flags byte still reads as before, the flags and reserved as set
    expect((await store.frames()).get(a.pfn)).toEqual({
      gen: 1,
      ref: 1,
      map: 1,
      state: 'used',
      flags: 0xcf,
      reserved: 0xffff,
      data: 0,
    });
    await store.frameAccess(a.pfn, 'write', -1, 'cpu0');
    expect(await store.getPages([a], 'map')).toEqual([]);
    await store.putPages([a], 'map');
    await store.copyPage(a.pfn, b.pfn);
    const raw = await record(a.pfn);
    expect(raw.slice(40, 48)).toBe('01cfffff'); // state used, flags 0xcf, reserved 0xffff
    expect(raw.slice(48)).toBe('ffffffffffffffff'); // data -1
    expect((await store.frames()).get(b.pfn)).toEqual({
      gen: 1,
      ref: 1,
      map: 1,
      state: 'used',
      flags: 0,
      reserved: 0,
      data: -1,
    });
    expect((await record(b.pfn)).slice(42, 48)).toBe('000000'); // b's flags were not set
  });
});

describe('the free list in the table', () => {
  it('is LIFO for freed frames, then the frames never allocated, in order', async () => {
    expect(await store.freeList()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const [a, b, c] = [
      await store.allocPage(null),
      await store.allocPage(null),
      await store.allocPage(null),
    ];
    expect([a!.pfn, b!.pfn, c!.pfn]).toEqual([1, 2, 3]);
    await store.putPages([b!]);
    await store.putPages([a!]);
    expect(await store.freeList()).toEqual([1, 2, 4, 5, 6, 7, 8]);
    expect(await store.memInfo()).toEqual({ frames: 8, free: 7 });
    expect(await store.allocPage(null)).toEqual({ pfn: 1, gen: 2 }); // the last freed, at once
    expect(await store.allocPage(null)).toEqual({ pfn: 2, gen: 2 });
    expect(await store.allocPage(null)).toEqual({ pfn: 4, gen: 1 });
    expect(await store.memInfo()).toEqual({ frames: 8, free: 4 });
  });

  it('refuses to hand out a frame from a corrupt list, and changes nothing', async () => {
    const a = (await store.allocPage(null))!;
    await store.freeListPush(a.pfn); // a used frame on the list
    await expect(store.allocPage(null)).rejects.toThrow(/free list corrupt: pfn 1 on it is used/);
    expect((await store.frames()).get(1)).toEqual({
      gen: 1,
      ref: 1,
      map: 1,
      state: 'used',
      flags: 0,
      reserved: 0,
      data: 0,
    });
    expect(await store.memInfo()).toEqual({ frames: 8, free: 7 });
  });
});

describe('memFormat', () => {
  it('formats 1M frames as one zero-filled string, once', async () => {
    await store.redis.flushall();
    expect(await store.memFormat(1_000_000)).toBe(1_000_000);
    expect(await store.redis.strlen(MEM.frames)).toBe(1_000_001 * FRAME_BYTES);
    expect(await store.memInfo()).toEqual({ frames: 1_000_000, free: 1_000_000 });
    const f = (await store.allocPage(null))!;
    expect(f).toEqual({ pfn: 1, gen: 1 });
    await store.frameAccess(1_000_000, 'write', 5, 'cpu0');
    expect(await store.memFormat(1_000_000)).toBe(1_000_000); // idempotent: nothing reset
    expect(await store.pageCounts(1)).toEqual({ ref: 1, map: 1, gen: 1 });
    expect(await store.frameAccess(1_000_000, 'read', undefined, 'cpu0')).toMatchObject({
      value: 5,
    });
    expect(await store.memInfo()).toEqual({ frames: 1_000_000, free: 999_999 });
  });

  it('refuses memory formatted with another layout, and bad arguments', async () => {
    await store.redis.hset(MEM.meta, 'layout', 'frames/24B/v0');
    await expect(store.memFormat(8)).rejects.toThrow(/another frame layout \(frames\/24B\/v0/);
    await expect(store.memFormat(-1)).rejects.toThrow(MmlabError);
    await expect(store.frameAccess(1, 'write', 1.5, 'cpu0')).rejects.toThrow(MmlabError);
    expect(await store.redis.hget(MEM.meta, 'frames')).toBe('8');
  });
});
