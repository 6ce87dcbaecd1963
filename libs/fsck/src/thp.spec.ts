/**
 * fsck's thp rule over hand-built snapshots: a huge page (order 2, pfns 4..7) mapped by one huge
 * entry of pid 1 and one of pid 2 (forked: read-only in both), a subpage pinned once, is clean;
 * each breaking state is found as `thp` (and by no other rule).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_FLAGS } from '@mmlab/model';
import { fsck } from './checks';
import type { FsckSnapshot, ProcessSnapshot } from './snapshot';

const H = PAGE_FLAGS.PG_head;
const T = PAGE_FLAGS.PG_tail;

function proc(pid: number, huge: Record<string, string>): ProcessSnapshot {
  return {
    pid,
    state: 'alive',
    vmas: ['100:112:rw:'],
    ptes: pid === 1 ? { 110: '1:1:1' } : {},
    pmds: ['0'],
    leases: [],
    readers: [],
    pinnedVm: pid === 1 ? '1' : null,
    mn: [],
    invs: [],
    intents: {},
    pmdhuge: huge,
  };
}

function clean(): FsckSnapshot {
  const frame: FsckSnapshot['frame'] = { 0: { gen: 1, ref: 1, map: 0, state: 'zero' } };
  for (let pfn = 1; pfn <= 8; pfn++) frame[pfn] = { gen: 0, ref: 0, map: 0, state: 'free' };
  frame[1] = { gen: 1, ref: 1, map: 1, state: 'used' };
  // head: two huge entries + the pin of subpage 2 (counted on the tail and the head)
  frame[4] = { gen: 5, ref: 3, map: 2, state: 'used', flags: H, reserved: 2 };
  frame[5] = { gen: 5, ref: 0, map: 0, state: 'used', flags: T, reserved: 2 };
  frame[6] = { gen: 5, ref: 1, map: 0, state: 'used', flags: T, reserved: 2 };
  frame[7] = { gen: 5, ref: 0, map: 0, state: 'used', flags: T, reserved: 2 };
  return {
    frames: 8,
    freeList: [2, 3, 8],
    frame,
    processes: [proc(1, { o: '2', 104: '4:5:0' }), proc(2, { o: '2', 104: '4:5:0' })],
    pending: {},
    swap: {},
    swapSlots: null,
    nrSwapFree: null,
    pagecache: {},
    lru: [],
    active: [],
    incarnations: {},
    now: 0,
    subscribers: {},
  };
}

const codes = (s: FsckSnapshot) => fsck(s).map((f) => `${f.code} ${f.key}`);

describe('fsck thp rule', () => {
  it('a shared, pinned huge page is clean', () => {
    expect(fsck(clean())).toEqual([]);
  });

  it('a head whose mapcount is not its huge entries is found (leaked)', () => {
    const s = clean();
    s.processes[1].pmdhuge = undefined;
    const f = fsck(s);
    expect(f.map((x) => x.code)).toEqual(['thp']);
    expect(f[0].message).toMatch(/mapcount 2 but 1 huge entries.*leaked/);
  });

  it('a PTE inside a huge range, and a PTE mapping a tail, are found', () => {
    const s = clean();
    s.processes[0].ptes[105] = '5:5:0';
    s.frame[5] = { ...s.frame[5], map: 0 };
    expect(codes(s)).toEqual(['thp {p:1}:pmdhuge', 'thp {p:1}:pte']);
  });

  it('a tail of another gen, and a free frame with compound flags, are found', () => {
    const s = clean();
    s.frame[7] = { ...s.frame[7], gen: 4 };
    s.frame[8] = { gen: 0, ref: 0, map: 0, state: 'free', flags: T, reserved: 2 };
    const f = fsck(s).map((x) => x.message);
    expect(f, f.join('; ')).toHaveLength(3);
    expect(
      f.some((m) => /pfn 7 .order 2. has no compound head of its gen/.test(m)),
      f.join('; '),
    ).toBe(true);
    expect(
      f.some((m) => /pfn 7 is not its tail/.test(m)),
      f.join('; '),
    ).toBe(true);
    expect(f.some((m) => /pfn 8 is free with compound flags/.test(m))).toBe(true);
  });

  it('a huge entry over a shared VMA, unaligned, or naming a small page is found', () => {
    const s = clean();
    s.processes[0].vmas = ['100:112:rw:shared'];
    expect(codes(s)).toEqual(['thp {p:1}:pmdhuge']);
    const u = clean();
    u.processes[1].pmdhuge = { o: '2', 102: '4:5:0' };
    expect(codes(u)).toEqual(['thp {p:2}:pmdhuge']);
    const small = clean();
    small.processes[1].pmdhuge = { o: '2', 104: '1:1:0', 108: '4:5:0' };
    expect(codes(small).filter((c) => c.startsWith('thp'))).toContain('thp {mem}:frames');
  });

  it("a head whose refcount is below its mappings and its tails' pins is found", () => {
    const s = clean();
    s.frame[4] = { ...s.frame[4], ref: 2 };
    expect(fsck(s).map((x) => x.message)).toEqual([
      "huge page 4 has refcount 2, below its mapcount 2 + its tails' pins 1",
    ]);
  });
});
