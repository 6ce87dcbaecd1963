/**
 * fsck's rules over hand-built snapshots: a clean one has no finding, and each rule's breaking
 * state is found with its code, its key and the objects involved (and nothing else is).
 */
import { describe, expect, it } from 'vitest';
import { type FsckCode, fsck } from './checks';
import type { FsckSnapshot, ProcessSnapshot } from './snapshot';

/**
 * 8 frames; pid 1 has an rw VMA [100, 104) with pfn 1 at vpn 100 and pfn 2 at vpn 101 (pfn 2
 * shared with pid 2, forked: read-only in both), pfn 3 pinned only (ref 1, map 0), the zero
 * page at vpn 102; pid 1's pinned_vm is 2 (pfn 3, and a pin of the zero page, which no refcount
 * shows). mm-0.a is alive and holds pid 1's mmap_sem, and pid 2's for read; a reader of pid 2
 * left by the dead mm-7.z has expired (every script takes it for gone). hca0 is registered on
 * pid 1.
 */
const NOW = 1_000_000;
function clean(): FsckSnapshot {
  const frame: FsckSnapshot['frame'] = { 0: { gen: 1, ref: 1, map: 0, state: 'zero' } };
  for (let pfn = 1; pfn <= 8; pfn++) frame[pfn] = { gen: 0, ref: 0, map: 0, state: 'free' };
  frame[1] = { gen: 1, ref: 1, map: 1, state: 'used' };
  frame[2] = { gen: 3, ref: 2, map: 2, state: 'used' };
  frame[3] = { gen: 1, ref: 1, map: 0, state: 'used' };
  const p1: ProcessSnapshot = {
    pid: 1,
    state: 'alive',
    vmas: ['100:104:rw:'],
    ptes: { 100: '1:1:1', 101: '2:3:0', 102: '0:1:0' },
    pmds: ['0'],
    leases: [{ lock: 'mmap_sem', owner: 'mm-0.a/mm-0/munmap#1', token: 4 }],
    readers: [],
    pinnedVm: '2',
    mn: ['hca0'],
    invs: [
      {
        inv: 'mm-0/munmap#1~a.1',
        record: '{"op":"mm-0/munmap#1","start":0,"end":4096,"event":"unmap","subscribers":[]}',
        owner: 'mm-0.a|open',
      },
    ],
    intents: { 'mm-0.a/mm-0/munmap#1': 'mm-0.a' },
  };
  const p2: ProcessSnapshot = {
    pid: 2,
    state: 'alive',
    vmas: ['100:104:rw:'],
    ptes: { 101: '2:3:0' },
    pmds: ['0'],
    leases: [],
    readers: [
      {
        member: 'mm-0.a/mm-0/madvise#2|5',
        owner: 'mm-0.a/mm-0/madvise#2',
        token: 5,
        expiresAt: NOW + 500,
      },
      {
        member: 'mm-7.z/mm-7/madvise#1|3',
        owner: 'mm-7.z/mm-7/madvise#1',
        token: 3,
        expiresAt: NOW - 1,
      },
    ],
    pinnedVm: null,
    mn: [],
    invs: [],
    intents: {},
  };
  const p3: ProcessSnapshot = {
    pid: 3,
    state: 'dead',
    vmas: [],
    ptes: {},
    pmds: [],
    leases: [],
    readers: [],
    pinnedVm: '0',
    mn: [],
    invs: [],
    intents: {},
  };
  return {
    frames: 8,
    freeList: [4, 5, 6, 7, 8],
    frame,
    processes: [p1, p2, p3],
    pending: {},
    swap: {},
    swapSlots: '0',
    nrSwapFree: '0',
    pagecache: {},
    lru: ['1', '2'],
    active: ['3'],
    incarnations: { 'mm-0.a': true, 'mm-7.z': false },
    now: NOW,
    subscribers: { hca0: { regs: [1], fenced: false } },
  };
}

const codes = (s: FsckSnapshot): FsckCode[] => fsck(s).map((f) => f.code);

/**
 * clean() with swap: 4 slots; slot 1 (gen 2) is named by the swap PTEs of pid 1 and pid 2 at
 * vpn 200 (a second VMA of both, swapped out after the fork) and caches pfn 8 (the swap cache's
 * reference only: read back by a fault that was then unmapped); pfn 8 on the inactive list.
 */
function withSwap(): FsckSnapshot {
  const s = clean();
  for (const p of s.processes.slice(0, 2)) {
    p.vmas.push('200:201:rw:');
    p.ptes[200] = '1:2:4';
  }
  s.frame[8] = { gen: 1, ref: 1, map: 0, state: 'used' };
  s.freeList = [4, 5, 6, 7];
  s.swap = { s1: '2|2|8|1|42', p8: '1' };
  s.swapSlots = '4';
  s.nrSwapFree = '3';
  s.lru.push('8');
  return s;
}

describe('fsck', () => {
  it('finds nothing in a consistent state', () => {
    expect(fsck(clean())).toEqual([]);
  });

  it('a PTE outside every VMA (munmap died after detaching the VMA)', () => {
    const s = clean();
    s.processes[0].vmas = ['100:101:rw:', '102:104:rw:'];
    const f = fsck(s);
    expect(f).toEqual([
      expect.objectContaining({
        code: 'pte-outside-vma',
        key: '{p:1}:pte',
        objects: { pid: 1, vpn: 101, pte: '2:3:0' },
      }),
    ]);
  });

  it('a PTE that allows more than its VMA (mprotect died half way)', () => {
    const s = clean();
    s.processes[0].vmas = ['100:104:r:'];
    expect(fsck(s)).toMatchObject([{ code: 'pte-prot', objects: { vpn: 100 } }]);
    s.processes[0].vmas = ['100:104:none:'];
    expect(codes(s)).toEqual(['pte-prot', 'pte-prot', 'pte-prot']);
    const t = clean();
    t.processes[0].ptes[100] = '1:1:2';
    expect(codes(t)).toEqual(['pte-prot']);
    const z = clean();
    z.processes[0].ptes[102] = '0:1:1';
    expect(codes(z)).toEqual(['pte-prot']);
  });

  it('a mapcount with no PTE behind it (a frame leaked by a dead fault or munmap)', () => {
    const s = clean();
    s.frame[4] = { gen: 1, ref: 1, map: 1, state: 'used' };
    s.freeList = [5, 6, 7, 8];
    expect(fsck(s)).toMatchObject([
      { code: 'mapcount', key: '{mem}:frames', objects: { pfn: 4, ptes: [] } },
    ]);
    const t = clean();
    t.frame[2].map = 1;
    expect(fsck(t)).toMatchObject([
      { code: 'mapcount', objects: { pfn: 2, ptes: ['1:101', '2:101'] } },
    ]);
  });

  it('a refcount below the mapcount', () => {
    const s = clean();
    s.frame[2].ref = 1;
    expect(codes(s)).toEqual(['refcount']);
  });

  it('a PTE mapping a freed or reused frame', () => {
    const s = clean();
    s.frame[1] = { gen: 1, ref: 0, map: 0, state: 'free' };
    s.freeList = [1, 4, 5, 6, 7, 8];
    s.lru = ['2']; // freed: off the LRU
    expect(codes(s)).toEqual(['pte-dead-frame']);
    const t = clean();
    t.frame[1].gen = 2;
    expect(codes(t)).toEqual(['pte-dead-frame']);
  });

  it('the free list: duplicates, used frames on it, free frames off it, bad states', () => {
    const dup = clean();
    dup.freeList = [4, 5, 5, 6, 7, 8];
    expect(codes(dup)).toEqual(['free-list-dup']);
    const used = clean();
    used.freeList = [1, 4, 5, 6, 7, 8];
    expect(fsck(used)).toMatchObject([
      { code: 'free-list-used', key: '{mem}:frames', objects: { pfn: 1 } },
    ]);
    const lost = clean();
    lost.freeList = [4, 5, 6, 7];
    expect(fsck(lost)).toEqual([
      expect.objectContaining({ code: 'free-list-missing', objects: { pfn: 8 } }),
    ]);
    const bad = clean();
    bad.frame[5] = { gen: 0, ref: 1, map: 0, state: 'free' };
    bad.frame[6] = { gen: 0, ref: 0, map: 0, state: 'weird' };
    // pfn 6 is on the free list but not free, and in no known state
    expect(codes(bad)).toEqual(['free-list-used', 'frame-state', 'frame-state']);
  });

  it('a lease held by a dead incarnation', () => {
    const s = clean();
    s.incarnations['mm-0.a'] = false;
    const f = fsck(s);
    expect(f.map((x) => x.code)).toEqual([
      'lease-dead-owner',
      'inv-dead-owner',
      'intent-dead-owner',
      'lease-dead-owner',
    ]);
    expect(f[0]).toMatchObject({
      key: '{p:1}:sem:w',
      objects: { pid: 1, incarnation: 'mm-0.a' },
    });
    expect(f[1]).toMatchObject({
      key: '{p:1}:invown',
      objects: { pid: 1, inv: 'mm-0/munmap#1~a.1', incarnation: 'mm-0.a' },
    });
    // pid 2's reader of mmap_sem: in :sem:r, not in :sem:w
    expect(f[3]).toMatchObject({
      key: '{p:2}:sem:r',
      objects: { pid: 2, incarnation: 'mm-0.a', reader: { token: 5 } },
    });
  });

  it('a reader of mmap_sem held by a dead incarnation, until its lease expires', () => {
    const s = clean();
    s.processes[1].readers[0].owner = 'mm-8.q/mm-8/madvise#9';
    s.incarnations['mm-8.q'] = false;
    expect(fsck(s)).toMatchObject([
      { code: 'lease-dead-owner', key: '{p:2}:sem:r', objects: { pid: 2, incarnation: 'mm-8.q' } },
    ]);
    // expired: no holder any more (the next down_write drops it)
    s.processes[1].readers[0].expiresAt = NOW - 1;
    expect(fsck(s)).toEqual([]);
    // expiring right now is still held (a writer drops only scores below now)
    s.processes[1].readers[0].expiresAt = NOW;
    expect(codes(s)).toEqual(['lease-dead-owner']);
    // a member that names no owner
    const t = clean();
    t.processes[1].readers.push({ member: 'junk', owner: '', token: NaN, expiresAt: NOW + 9 });
    const f = fsck(t);
    expect(f).toMatchObject([{ code: 'lease-dead-owner', key: '{p:2}:sem:r' }]);
    expect(f[0].message).toMatch(/held for read by "junk"/);
  });

  it('a writer of mmap_sem with no owner', () => {
    const s = clean();
    s.processes[1].readers = [];
    s.processes[1].leases.push({ lock: 'mmap_sem', owner: '', token: NaN });
    expect(fsck(s)).toMatchObject([{ code: 'lease-dead-owner', key: '{p:2}:sem:w' }]);
  });

  it('mmap_sem held for write and for read at once', () => {
    const s = clean();
    const reader = { ...s.processes[1].readers[0] };
    s.processes[0].readers.push(reader);
    expect(fsck(s)).toMatchObject([
      { code: 'sem-conflict', key: '{p:1}:sem:r', objects: { pid: 1, readers: [reader] } },
    ]);
    // a reader whose lease expired is no holder: no conflict
    s.processes[0].readers[0].expiresAt = NOW - 1;
    expect(fsck(s)).toEqual([]);
  });

  it('a subscriber registered where its registrations do not say, or registered and fenced', () => {
    const s = clean();
    s.subscribers.hca0.regs = [2];
    expect(fsck(s)).toEqual([
      expect.objectContaining({
        code: 'mn-registry',
        key: '{sub}:regs:hca0',
        objects: { pid: 1, subscriber: 'hca0', regs: [2] },
      }),
    ]);
    const t = clean();
    t.subscribers.hca0.fenced = true;
    expect(fsck(t)).toEqual([
      expect.objectContaining({
        code: 'mn-registry',
        key: '{p:1}:mn',
        objects: { pid: 1, subscriber: 'hca0' },
      }),
    ]);
  });

  it('pins not charged to any pinned_vm: an uncharged pin, a leaked reference', () => {
    const s = clean();
    s.processes[0].pinnedVm = '0';
    expect(fsck(s)).toEqual([
      expect.objectContaining({
        code: 'pinned-vm',
        key: '{mem}:frames',
        objects: { pins: 1, pinnedVm: 0, frames: { 3: 1 }, charged: {} },
      }),
    ]);
    // pid 2's pinned_vm counts too (pinned_vm is per process; who holds a pin is not recorded)
    s.processes[1].pinnedVm = '1';
    expect(fsck(s)).toEqual([]);
    const leak = clean();
    leak.frame[1].ref = 3; // mapped once, two references nobody charged
    expect(fsck(leak)).toMatchObject([
      { code: 'pinned-vm', objects: { pins: 3, pinnedVm: 2, frames: { 1: 2, 3: 1 } } },
    ]);
    // more pinned_vm than pins is no finding: zero-page pins are charged but not counted
    const zero = clean();
    zero.processes[0].pinnedVm = '5';
    expect(fsck(zero)).toEqual([]);
  });

  it('pin records ({mem}:pins): each names a used frame of its gen, no more pins than it holds', () => {
    const s = clean();
    s.pins = { 'hca0@1|3|1': '1' }; // frame 3's one pin, by hca0 for pid 1
    expect(fsck(s)).toEqual([]);
    const more = clean();
    more.pins = { 'hca0@1|3|1': '1', 'kvm0@1|3|1': '1' }; // two recorded, one held
    expect(fsck(more)).toEqual([
      expect.objectContaining({
        code: 'pin-owner',
        key: '{mem}:pins',
        objects: { pfn: 3, recorded: 2, pins: 1 },
      }),
    ]);
    for (const [field, v] of [
      ['hca0@1|3|2', '1'], // another gen: the frame was freed and reused
      ['hca0@1|4|0', '1'], // a free frame
      ['hca0|3|1', '1'], // no pid
      ['hca0@1|3|1', '0'], // no pins
    ]) {
      const bad = clean();
      bad.pins = { [field]: v };
      expect(codes(bad), field).toEqual(['pin-owner']);
    }
  });

  it('a pinned_vm that is no count of pages', () => {
    for (const bad of ['-1', 'x', '1.5', '']) {
      const s = clean();
      s.processes[2].pinnedVm = bad;
      expect(fsck(s)).toEqual([
        expect.objectContaining({
          code: 'pinned-vm',
          key: '{p:3}:mm',
          objects: { pid: 3, pinnedVm: bad },
        }),
      ]);
    }
  });

  it('a PTE in a page-table page no walk visits (:pmds)', () => {
    const s = clean();
    s.processes[1].pmds = ['1'];
    expect(fsck(s)).toEqual([
      expect.objectContaining({
        code: 'pte-no-pmd',
        key: '{p:2}:pmds',
        objects: { pid: 2, vpn: 101, pte: '2:3:0', pmd: 0 },
      }),
    ]);
  });

  it('an operation left half done by a dead incarnation, or with no owner', () => {
    const s = clean();
    s.processes[1].intents['mm-1.b/mm-1/mremap#4'] = 'mm-1.b';
    s.processes[1].intents['x'] = '';
    s.incarnations['mm-1.b'] = false;
    expect(fsck(s)).toMatchObject([
      {
        code: 'intent-dead-owner',
        key: '{p:2}:intent:mm-1.b/mm-1/mremap#4',
        objects: { pid: 2, owner: 'mm-1.b' },
      },
      { code: 'intent-dead-owner', key: '{p:2}:intent:x' },
    ]);
  });

  it("a fault's frame allocated ahead: its allocation is its mapping while its owner lives", () => {
    const s = clean();
    s.frame[4] = { gen: 2, ref: 1, map: 1, state: 'used' };
    s.freeList = [5, 6, 7, 8];
    s.pending[4] = '2|mm-0.a|1|103|';
    expect(codes(s)).toEqual([]);
    // the owner died: the frame is left pending (not reaped), and counted as leaked
    s.pending[4] = '2|mm-9.z|1|103|';
    s.incarnations['mm-9.z'] = false;
    expect(fsck(s)).toMatchObject([
      { code: 'pending-dead-owner', key: '{mem}:pending', objects: { pfn: 4 } },
      { code: 'mapcount', objects: { pfn: 4 } },
    ]);
  });

  it("a replica's batch frame: legal while its owner lives, installed or not; a dead owner's is a finding", () => {
    const s = clean();
    // pfn 4 taken into mm-0.a's batch (charged), in no PTE; pfn 5 taken and installed at vpn 103
    s.frame[4] = { gen: 2, ref: 1, map: 1, state: 'used' };
    s.frame[5] = { gen: 1, ref: 1, map: 1, state: 'used' };
    s.freeList = [6, 7, 8];
    s.processes[0].ptes[103] = '5:1:1';
    s.pending[4] = '2|mm-0.a|reserve';
    s.pending[5] = '1|mm-0.a|reserve';
    expect(codes(s)).toEqual([]);
    // the owner died and its batch was never given back: the untouched frame leaked
    s.pending[4] = '2|mm-9.z|reserve';
    s.pending[5] = '1|mm-9.z|reserve';
    s.incarnations['mm-9.z'] = false;
    expect(fsck(s)).toMatchObject([
      { code: 'reserve-dead-owner', key: '{mem}:pending', objects: { pfn: 4 } },
      { code: 'reserve-dead-owner', key: '{mem}:pending', objects: { pfn: 5 } },
      { code: 'mapcount', objects: { pfn: 4 } },
    ]);
  });

  it('a PTE a COW cleared (w = 3) still maps its old page', () => {
    const s = clean();
    s.processes[0].ptes[100] = '1:1:3';
    expect(codes(s)).toEqual([]);
  });

  it('an open invalidation recorded in one hash only', () => {
    const s = clean();
    delete s.processes[0].invs[0].owner;
    expect(fsck(s)).toEqual([expect.objectContaining({ code: 'inv-corrupt', key: '{p:1}:inv' })]);
  });

  it('an open invalidation the recovery cannot read (it would never be finished)', () => {
    for (const record of [
      '{}',
      'junk',
      '{"op":"x","start":0,"end":1,"event":"nope","subscribers":[]}',
    ]) {
      const s = clean();
      s.processes[0].invs[0].record = record;
      expect(fsck(s)).toMatchObject([
        { code: 'inv-corrupt', key: '{p:1}:inv', objects: { pid: 1, record } },
      ]);
    }
    const t = clean();
    t.processes[0].invs[0].owner = 'mm-0.a';
    expect(fsck(t)).toMatchObject([{ code: 'inv-corrupt', key: '{p:1}:invown' }]);
  });

  it('corrupt records, overlapping VMAs and an exited mm with mappings', () => {
    const s = clean();
    s.processes[1].vmas = ['100:104:rw:', '103:110:r:', 'junk'];
    s.processes[1].ptes['x'] = '1:1:1';
    s.processes[1].ptes[101] = 'junk';
    s.frame[2].map = 1;
    s.frame[2].ref = 1;
    expect(codes(s).sort()).toEqual(['pte-corrupt', 'pte-corrupt', 'vma-corrupt', 'vma-overlap']);
    const e = clean();
    e.processes[2].ptes = { 100: '1:1:1' };
    e.processes[2].pmds = ['0'];
    e.frame[1].map = 2;
    e.frame[1].ref = 2;
    expect(codes(e)).toEqual(['exited-mm-mapped', 'pte-outside-vma']);
  });
  it('finds nothing in a consistent state with pages in swap and in the swap cache', () => {
    expect(fsck(withSwap())).toEqual([]);
  });

  it('a swap count that is not the number of swap PTEs naming the slot', () => {
    const s = withSwap();
    delete s.processes[1].ptes[200]; // a zap that did not swap_free
    expect(fsck(s).map((f) => [f.code, f.key, f.objects.slot])).toEqual([
      ['swap-count', '{mem}:swap', 1],
    ]);
  });

  it('a swap PTE naming a slot that was freed or reused (a stale gen)', () => {
    const s = withSwap();
    s.processes[0].ptes[200] = '1:1:4';
    expect(codes(s)).toEqual(['swap-count', 'swap-count']);
    expect(fsck(s)[1].message).toMatch(/name slot:gen 1:1, which is no slot in use/);
  });

  it('a swap cache page that was freed, or that names another slot', () => {
    const s = withSwap();
    s.frame[8] = { gen: 1, ref: 0, map: 0, state: 'free' };
    s.freeList = [4, 5, 6, 7, 8];
    s.lru = ['1', '2'];
    expect(codes(s)).toEqual(['swap-slot']);
    const t = withSwap();
    t.swap.p8 = '2';
    expect(codes(t)).toEqual(['swap-slot', 'swap-slot']);
  });

  it('nr_swap_free that is not the number of free slots', () => {
    const s = withSwap();
    s.nrSwapFree = '4';
    expect(fsck(s).map((f) => [f.code, f.key])).toEqual([['swap-free', '{mem}:meta']]);
  });

  /** clean() with pfn 2 (mapped read-only by pids 1 and 2) a KSM page holding 7. */
  function withKsm(): FsckSnapshot {
    const s = clean();
    s.frame[2] = { ...s.frame[2], flags: 8, data: 7 };
    s.ksm = { d7: '2:3', p2: '7' };
    return s;
  }

  it('KSM: a consistent stable tree; a KSM page mapped writable; PG_ksm and the tree apart', () => {
    expect(fsck(withKsm())).toEqual([]);
    const writable = withKsm();
    writable.processes[1].ptes[101] = '2:3:1';
    expect(fsck(writable).map((f) => [f.code, f.key, f.objects.pid])).toEqual([
      ['ksm', '{p:2}:pte', 2],
    ]);
    const noFlag = withKsm();
    noFlag.frame[2].flags = 0;
    expect(fsck(noFlag).map((f) => [f.code, f.objects.pfn])).toEqual([['ksm', 2]]);
    const noEntry = withKsm();
    noEntry.ksm = {};
    expect(fsck(noEntry).map((f) => [f.code, f.key])).toEqual([['ksm', '{mem}:frames']]);
    const freed = withKsm();
    freed.ksm = { d7: '5:1', p5: '7' }; // a KSM page freed while the tree still names it
    expect(fsck(freed).map((f) => [f.code, f.objects.pfn])).toEqual([
      ['ksm', 5],
      ['ksm', 2],
    ]);
  });

  it('a free frame on an LRU list, a frame on both lists', () => {
    const s = withSwap();
    s.lru.push('6');
    s.active.push('1');
    expect(fsck(s).map((f) => [f.code, f.objects.pfn])).toEqual([
      ['lru', 6],
      ['lru', 1],
    ]);
  });

  /**
   * withSwap() and a file: ino 2 of 3 pages, page 1 cached in pfn 7 (the page cache's reference
   * and pid 1's shared mapping of it at vpn 300), page 0 on the store only.
   */
  function withFile(): FsckSnapshot {
    const s = withSwap();
    s.processes[0].vmas.push('300:301:rw:shared:2:-299');
    s.processes[0].ptes[300] = '7:1:1';
    s.frame[7] = { gen: 1, ref: 2, map: 1, state: 'used' };
    s.freeList = [4, 5, 6];
    s.pagecache = { ino_next: '2', f2: '3|0', 'c2:1': '7', p7: '2:1:1', 'd2:0': '5' };
    s.lru.push('7');
    return s;
  }

  it("a file's pages: consistent, and the page cache's reference is no pin", () => {
    expect(fsck(withFile())).toEqual([]);
    const s = withFile();
    s.processes[0].pinnedVm = '1'; // pfn 3's pin; pfn 7's extra reference is the page cache's
    expect(codes(s)).toEqual([]);
    s.frame[7].ref = 3; // one more: a pin nobody charged
    expect(codes(s)).toEqual(['pinned-vm']);
  });

  it('a page-cache entry whose frame was freed, or names another page, or is past the end', () => {
    const freed = withFile();
    delete freed.processes[0].ptes[300];
    freed.frame[7] = { gen: 1, ref: 0, map: 0, state: 'free' };
    freed.freeList = [4, 5, 6, 7];
    freed.lru = freed.lru.filter((p) => p !== '7');
    expect(fsck(freed).map((f) => [f.code, f.message])).toEqual([
      [
        'pagecache',
        'page 2:1 is cached in pfn 7, but its frame pfn 7 is free (gen 1, ref 0, map 0)',
      ],
    ]);
    const other = withFile();
    other.pagecache.p7 = '2:2:0';
    expect(codes(other)).toEqual(['pagecache', 'pagecache']);
    const past = withFile();
    past.pagecache.f2 = '1|0';
    expect(fsck(past).map((f) => f.message)).toEqual([
      'page 2:1 is cached in pfn 7, but page 1 is past the end of file 2 (1 pages)',
    ]);
  });

  it('a frame in the page cache and the swap cache at once; a dangling p<pfn>', () => {
    const s = withFile();
    s.swap.p7 = '1';
    expect(codes(s)).toContain('pagecache');
    const t = withFile();
    delete t.pagecache['c2:1'];
    expect(fsck(t).map((f) => [f.code, f.message])).toEqual([
      ['pagecache', 'pfn 7 says it caches 2:1, which is not cached'],
    ]);
  });

  /**
   * withSwap() and an XIP file: ino 3 of 2 pages, page 0's block in pfn 6 (the file's reference
   * and pid 1's shared mapping at vpn 300), page 1 a hole that pid 1's read-only mapping at vpn
   * 301 maps to the sparse page, pfn 7 (__xip_sparse_page's reference and the PTE's).
   */
  function withXip(): FsckSnapshot {
    const s = withSwap();
    s.processes[0].vmas.push('300:301:rw:shared:3:-300', '301:302:r:shared:3:-300');
    s.processes[0].ptes[300] = '6:1:1';
    s.processes[0].ptes[301] = '7:1:0';
    s.frame[6] = { gen: 1, ref: 2, map: 1, state: 'used' };
    s.frame[7] = { gen: 1, ref: 2, map: 1, state: 'used' };
    s.freeList = [4, 5];
    s.pagecache = { ino_next: '3', f3: '2|1', 'c3:0': '6', p6: '3:0:x', sparse: '7', xs_seq: '4' };
    return s;
  }

  it("XIP: a block's file reference and the sparse page's own are no pins", () => {
    expect(fsck(withXip())).toEqual([]);
    const s = withXip();
    s.processes[0].pinnedVm = '1'; // pfn 3's pin; pfn 6's and pfn 7's extra references are not
    expect(codes(s)).toEqual([]);
    s.frame[7].ref = 3; // the sparse page with one more reference: a pin nobody charged
    expect(codes(s)).toEqual(['pinned-vm', 'pagecache']);
    const b = withXip();
    b.processes[0].pinnedVm = '1';
    b.frame[6].ref = 3; // the block with one more reference than its file's and its PTE's
    expect(codes(b)).toEqual(['pinned-vm']);
  });

  it('XIP: a block of a file that is not XIP, a page cache page of an XIP file, a block on the LRU', () => {
    const notXip = withXip();
    notXip.pagecache.f3 = '2|0';
    expect(fsck(notXip).map((f) => f.message)).toEqual([
      'pfn 6 is an XIP block of file 3, which is not an XIP file',
    ]);
    const cached = withXip();
    cached.pagecache.p6 = '3:0:1';
    expect(fsck(cached).map((f) => f.message)).toEqual([
      'pfn 6 caches page 3:0 of XIP file 3, which has no page cache',
    ]);
    const lru = withXip();
    lru.active.push('6');
    expect(fsck(lru).map((f) => f.message)).toEqual([
      'pfn 6 is an XIP block (page 3:0) on an LRU list: it is never reclaimed',
    ]);
  });

  it('XIP: the sparse page freed, cached, on the LRU, or short of its own reference; xs_busy left open', () => {
    const freed = withXip();
    delete freed.processes[0].ptes[301];
    freed.frame[7] = { gen: 1, ref: 0, map: 0, state: 'free' };
    freed.freeList = [4, 5, 7];
    expect(fsck(freed).map((f) => f.message)).toEqual([
      'the XIP sparse page pfn 7 is free (gen 1, ref 0, map 0)',
    ]);
    const cached = withXip();
    cached.swap.p7 = '1';
    expect(fsck(cached).map((f) => f.message)).toContain(
      'the XIP sparse page pfn 7 is in the swap cache too',
    );
    const lru = withXip();
    lru.lru.push('7');
    expect(fsck(lru).map((f) => f.message)).toEqual([
      'the XIP sparse page pfn 7 is on an LRU list: it is never reclaimed',
    ]);
    const short = withXip();
    short.frame[7].ref = 1; // the PTE's reference only: the next unmap would free it
    expect(fsck(short).map((f) => f.message)).toEqual([
      "the XIP sparse page pfn 7 has refcount 1, not its mapcount 1 + 1 (__xip_sparse_page's)",
    ]);
    const busy = withXip();
    busy.pagecache.xs_busy = '1';
    expect(fsck(busy).map((f) => f.message)).toEqual([
      'xs_busy is 1: a sparse-page fault left xip_sparse_seq open (__xip_unmap waits for it)',
    ]);
  });

  it("a swapped-out shmem page: its page-cache entry is the slot's reference", () => {
    const s = withFile();
    s.pagecache = { ...s.pagecache, f3: '2|0', m3: '1', 'c3:0': 's2:1' };
    s.swap.s2 = '1|1|0|0|9';
    s.nrSwapFree = '2';
    s.processes[1].vmas.push('400:402:rw:shared:3:-400'); // pid 2 maps the object
    expect(fsck(s)).toEqual([]);
    s.processes[1].vmas.pop(); // its last mapping went, the object did not: leaked
    expect(fsck(s).map((f) => f.message)).toEqual(['shmem object 3 is mapped by no VMA: leaked']);
    s.processes[1].vmas.push('400:402:rw:shared:3:-400');
    delete s.pagecache.m3; // not shmem: a file's page never goes to swap
    expect(codes(s)).toEqual(['pagecache']);
    const t = withFile();
    t.pagecache = { ...t.pagecache, f3: '2|0', m3: '1', 'c3:0': 's2:1' };
    t.swap.s2 = '1|0|0|0|9'; // the slot does not count the entry
    t.nrSwapFree = '2';
    expect(codes(t)).toContain('swap-count');
  });

  it("the swap cache's reference is no pin", () => {
    const s = withSwap();
    s.processes[0].pinnedVm = '1'; // pfn 3's pin; pfn 8's extra reference is the swap cache's
    expect(codes(s)).toEqual([]);
    s.frame[8].ref = 2; // one more: a pin nobody charged
    expect(codes(s)).toEqual(['pinned-vm']);
  });
});
