/**
 * fsck's hugetlb rule over hand-built snapshots: a clean pool has no finding (from any rule: the
 * frame rules leave pool frames to it), and each breaking state is one `hugetlb` finding.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_FLAGS } from '@mmlab/model';
import { fsck } from './checks';
import type { FsckSnapshot, ProcessSnapshot } from './snapshot';

const HEAD = PAGE_FLAGS.PG_head;
const TAIL = PAGE_FLAGS.PG_tail;

/**
 * 16 frames; a pool of order 2 (4 frames a page) at pfns 4..11: page 4 in use (gen 2), mapped
 * read-only by pid 1 and pid 2 at vpn 100 (forked, private: mapcount 2), page 8 free. pfns 1..3
 * are on the buddy free list's chain, 12..16 never allocated.
 */
function clean(): FsckSnapshot {
  const frame: FsckSnapshot['frame'] = { 0: { gen: 1, ref: 1, map: 0, state: 'zero' } };
  for (let pfn = 1; pfn <= 16; pfn++) frame[pfn] = { gen: 0, ref: 0, map: 0, state: 'free' };
  frame[4] = { gen: 2, ref: 2, map: 2, state: 'used', flags: HEAD, reserved: 2 };
  for (const t of [5, 6, 7]) frame[t] = { gen: 2, ref: 0, map: 0, state: 'used', flags: TAIL };
  frame[8] = { gen: 1, ref: 0, map: 0, state: 'free', flags: HEAD, reserved: 2 };
  for (const t of [9, 10, 11]) frame[t] = { gen: 1, ref: 0, map: 0, state: 'free', flags: TAIL };
  const proc = (pid: number): ProcessSnapshot => ({
    pid,
    state: 'alive',
    vmas: ['100:108:rw:hugetlb'],
    ptes: {},
    pmds: [],
    leases: [],
    readers: [],
    pinnedVm: null,
    mn: [],
    invs: [],
    intents: {},
    huge: { 100: '4:2:0' },
  });
  return {
    frames: 16,
    freeList: [1, 2, 3, 12, 13, 14, 15, 16],
    frame,
    processes: [proc(1), proc(2)],
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
    hugetlb: { order: '2', base: '4', nr_hugepages: '2', free_huge_pages: '1', free: '8' },
  };
}

/** The findings' messages; every one must be the hugetlb rule's. */
function findings(s: FsckSnapshot): string[] {
  const f = fsck(s);
  expect(f.map((x) => x.code)).toEqual(f.map(() => 'hugetlb'));
  return f.map((x) => `${x.key}: ${x.message}`);
}

describe('fsck hugetlb', () => {
  it('a clean pool: no finding from any rule', () => {
    expect(fsck(clean())).toEqual([]);
  });

  it('free_huge_pages that is not the free list length', () => {
    const s = clean();
    s.hugetlb!.free_huge_pages = '2';
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: free_huge_pages is 2 but the free list holds 1 pages',
    ]);
  });

  it('a page shared by fork that one private mapping can still write (the COW would be skipped)', () => {
    const s = clean();
    s.processes[0].huge = { 100: '4:2:1' };
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: huge page 4: it is mapped 2 times and writable in the private mapping 1:100',
    ]);
  });

  it('an entry hugetlb_cow cleared (w = 3, its holder dead): still a mapping in a private VMA, not in a shared one', () => {
    const s = clean();
    s.processes[0].huge = { 100: '4:2:3' };
    expect(fsck(s)).toEqual([]);
    s.processes[0].vmas = ['100:108:rw:hugetlbshared'];
    s.processes[1].vmas = ['100:108:rw:hugetlbshared'];
    expect(findings(s)).toEqual([
      '{p:1}:hugetlb: pid 1: huge entry at vpn 100 (4:2:3) is not a present entry of an accessible VMA',
      '{mem}:hugetlb: huge page 4: its head has mapcount 2, refcount 2 but 1 huge entries map it',
    ]);
  });

  it('a head whose mapcount counts an entry that is gone (leaked)', () => {
    const s = clean();
    s.processes[1].huge = {};
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: huge page 4: its head has mapcount 2, refcount 2 but 1 huge entries map it',
    ]);
  });

  it('a page in use that no entry maps and is not back in the pool', () => {
    const s = clean();
    s.processes[0].huge = {};
    s.processes[1].huge = {};
    s.frame[4] = { ...s.frame[4], ref: 0, map: 0 };
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: huge page 4: its head has mapcount 0, refcount 0 but 0 huge entries map it (leaked: not back in the pool)',
    ]);
  });

  it('an entry naming a free pool page, or a stale gen', () => {
    const s = clean();
    s.processes[1].huge = { 100: '8:1:0' };
    s.frame[4] = { ...s.frame[4], ref: 1, map: 1 };
    expect(findings(s)).toEqual([
      '{p:2}:hugetlb: pid 2: huge entry at vpn 100 (8:1:0) names pfn 8 gen 1, which is free (gen 1)',
    ]);
    const t = clean();
    t.processes[1].huge = { 100: '4:1:0' };
    expect(findings(t)).toEqual([
      '{p:2}:hugetlb: pid 2: huge entry at vpn 100 (4:1:0) names pfn 4 gen 1, which is used (gen 2)',
      '{mem}:hugetlb: huge page 4: its head has mapcount 2, refcount 2 but 1 huge entries map it',
    ]);
  });

  it('an entry outside a hugetlb VMA, or not at a huge page boundary', () => {
    const s = clean();
    s.processes[1].vmas = ['100:108:rw:'];
    expect(findings(s)[0]).toBe(
      '{p:2}:hugetlb: pid 2: huge entry at vpn 100 (4:2:0) is not inside a hugetlb VMA',
    );
    const t = clean();
    t.processes[1].huge = { 102: '4:2:0' };
    expect(findings(t)[0]).toBe(
      '{p:2}:hugetlb: pid 2: huge entry at vpn 102 (4:2:0) is not at a huge page boundary (4 pages)',
    );
  });

  it('an entry left in an exited address space', () => {
    const s = clean();
    s.processes[1].state = 'dead';
    s.processes[1].vmas = [];
    expect(findings(s)[0]).toBe(
      '{p:2}:hugetlb: pid 2: huge entry at vpn 100 (4:2:0) is in an address space that is dead',
    );
  });

  it('compound flags lost, and a tail with counts of its own', () => {
    const s = clean();
    s.frame[6] = { ...s.frame[6], flags: 0, ref: 1 };
    s.frame[8] = { ...s.frame[8], reserved: 3 };
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: huge page 4: pfn 6 is not marked PG_tail',
      '{mem}:hugetlb: huge page 4: tail pfn 6 has ref 1, map 0',
      '{mem}:hugetlb: huge page 8: its head has order 3, not 2',
    ]);
  });

  it('a pool frame on the buddy free list or an LRU list, or a free page frame in use', () => {
    const s = clean();
    s.freeList = [...s.freeList, 9];
    s.lru = ['5'];
    s.frame[10] = { ...s.frame[10], state: 'used', ref: 1 };
    expect(findings(s)).toEqual([
      '{mem}:hugetlb: huge page 4: pfn 5 is on an LRU list',
      "{mem}:hugetlb: huge page 8: pfn 9 is on the buddy allocator's free list",
      '{mem}:hugetlb: huge page 8: pfn 10 is used (ref 1, map 0) in a free huge page',
    ]);
  });

  it('a pool record that does not parse, and entries with no pool', () => {
    const s = clean();
    s.hugetlb = { order: 'x' };
    // (the frame rules then take the pool's frames for ordinary ones, and report them too)
    expect(fsck(s).filter((x) => x.code === 'hugetlb')).toHaveLength(1);
    expect(fsck(s).find((x) => x.code === 'hugetlb')!.message).toMatch(
      /^the pool record does not parse/,
    );
    const t = clean();
    delete t.hugetlb;
    const f = fsck(t);
    expect(f.filter((x) => x.code === 'hugetlb').map((x) => x.message)).toEqual([
      'pid 1: huge entry at vpn 100 (4:2:0) exists, but no hugetlb pool was reserved',
      'pid 2: huge entry at vpn 100 (4:2:0) exists, but no hugetlb pool was reserved',
    ]);
  });
});
