/**
 * The consistency rules of the lab's state in Redis, as pure functions of a snapshot
 * (snapshot.ts). Each broken rule is a finding with a stable code, the Redis key it was found
 * in and the objects involved. Later issues (reclaim, huge pages, KSM) add rules here.
 *
 * The rules (keys.ts states the same invariants where the keys are declared):
 *   frame-state        pfn 0 is the zero page; every pfn 1..frames is free or used; a free one
 *                      has refcount and mapcount 0, a used one refcount ≥ 1
 *   free-list-dup      a pfn appears once at most on the free list (the chain threaded through
 *                      {mem}:frames, then the frames never allocated: keys.ts)
 *   free-list-used     every pfn on the free list is a free frame of this memory
 *   free-list-missing  every free frame is on the free list (else it is lost for good)
 *   vma-corrupt        every VMA member parses; vma-overlap: VMAs of a process do not overlap
 *   pte-corrupt        every PTE parses
 *   pte-outside-vma    every PTE lies inside a VMA of its process
 *   pte-prot           no PTE allows more than its VMA: writable only in an rw VMA, present
 *                      (not PROT_NONE) only in an accessible one, PROT_NONE only in a none VMA;
 *                      the zero page is never writable
 *   pte-dead-frame     every PTE maps a used frame of the generation it names
 *   pte-no-pmd         every PTE's page-table page is in :pmds (page walks visit only those:
 *                      a PTE outside them is never unmapped, changed or freed)
 *   exited-mm-mapped   an exited (or never created) address space has no VMA and no PTE
 *   mapcount           a used frame's mapcount is the number of PTEs that map it
 *   refcount           a used frame's refcount is at least its mapcount (the rest are pins)
 *   pinned-vm          every process's pinned_vm is a count (≥ 0), and every pin is charged:
 *                      the references of used frames beyond their mapcounts, summed, are at
 *                      most the pinned_vm of all processes summed (see checkPins: Redis does
 *                      not say whose a pin is, so this is as far as fsck can check)
 *   pin-owner          every record of {mem}:pins (a device's pin, by <agent>@<pid>: gup with
 *                      pin) names a used frame of its gen, and a frame's recorded pins are at
 *                      most its references beyond its mappings
 *   sem-conflict       mmap_sem is not held for write and, by a reader whose lease lives, for
 *                      read at once (semWriteLock waits for every live reader, semReadLock for
 *                      the writer)
 *   mn-registry        every subscriber on an mm's :mn has the pid in its {sub}:regs (else
 *                      fencing it would leave it registered there), and none is fenced (mm
 *                      would call a device it detached)
 *   lease-dead-owner   no PT lock or mmap_sem lease — the writer, or a reader whose lease has
 *                      not expired — is held by a dead mm incarnation (or by no owner at all)
 *   inv-corrupt        :inv and :invown name the same invalidations, and each reads as
 *                      store.openInvalidations reads it (one it cannot read is never finished
 *                      for a dead sender: its subscribers keep the range active)
 *   inv-dead-owner     no open invalidation is owed by a dead mm incarnation
 *   intent-dead-owner  no multi-step operation (intent record) is left half done by a dead mm
 *                      incarnation (nor recorded without an owner)
 *   pending-dead-owner no frame is left pending ({mem}:pending: allocated by a fault or COW, not
 *                      known installed) by a dead mm incarnation; a live one's pending frame
 *                      that no PTE maps yet counts as its one mapping (mapcount)
 *   reserve-dead-owner no frame of a per-replica batch ({mem}:pending "gen|incarnation|reserve":
 *                      taken and charged by rmqueueBulk, not known installed) belongs to a dead
 *                      mm incarnation (the reaper gives a dead one's batch back); a live one's
 *                      batch frame that no PTE maps counts as its one mapping (mapcount)
 *   swap-slot          every swap slot record parses and is a slot of the device; its swap
 *                      cache page (if any) is a used frame of the gen it names, whose p<pfn>
 *                      entry names the slot back, and every p<pfn> entry is such a page's
 *   swap-count         a slot's count is the number of swap PTEs naming it (slot and gen), in
 *                      every address space; no swap PTE names a free or reused slot
 *   swap-free          nr_swap_free is the number of free slots (count 0, no cache page)
 *   lru                every frame on the LRU lists is used, and on one list only
 *   thp                transparent huge pages (thp.ts): every huge entry lies aligned in an
 *                      anonymous private VMA over no PTE and names a compound head of its gen
 *                      and order whose tails are consistent; a head's mapcount is its huge
 *                      entries, its refcount at least that plus its tails' pins; no compound
 *                      frame is free or mapped by a PTE (frame-state, mapcount, refcount and
 *                      pinned-vm leave compound frames to it)
 *   pagecache          every file record parses; every page-cache entry c<ino>:<i> names a used
 *                      frame whose p<pfn> names that page back (and vice versa), of a file that
 *                      exists and a page below its size; no frame is in the page cache and the
 *                      swap cache at once, or caches two pages; only a shmem object's entry may
 *                      hold a swap slot instead (swap-count counts it as the slot's reference).
 *                      XIP files (keys.ts): the blocks ("ino:i:x" entries) are exactly an XIP
 *                      file's pages, and on no LRU list; the sparse page is a used frame in no
 *                      cache and on no LRU list, with refcount = mapcount + 1 (the pointer's);
 *                      xs_busy is 0 (no sparse-page fault left xip_sparse_seq open); a shmem
 *                      object is mapped by some VMA (it goes with its last mapping: an orphan
 *                      is memory nobody can reach or free)
 *   hugetlb            the hugetlbfs pool and its huge entries (hugetlb.ts): pool counts,
 *                      free list vs mapped pages, compound flags, every huge entry names a used
 *                      pool head of its gen inside a hugetlb VMA, head mapcounts; the rules
 *                      above about frames leave the pool's frames to it
 *   ksm                KSM's stable tree ({mem}:ksm) and PG_ksm agree: p<pfn> = data iff
 *                      d<data> = "pfn:gen", such a frame is used, of that gen, holds that data
 *                      and has PG_ksm; every PG_ksm frame is in the tree; no PTE maps a KSM page
 *                      writable (a write to one must go through do_wp_page's copy)
 * A swap-cache or page-cache page's reference is the cache's: refcount ≥ mapcount + 1 (pinned-vm
 * counts it out of the pins); an XIP block's is its file's, and the sparse page's own one is
 * __xip_sparse_page's: no pins either.
 */
import { MnEvent, ZERO_PFN, pmdIndexOf } from '@mmlab/protocol';
import {
  MEM,
  PAGE_FLAGS,
  type Pte,
  type Vma,
  parsePte,
  parseVma,
  procKeys,
  subKeys,
} from '@mmlab/model';
import {
  type FsckSnapshot,
  type ProcessSnapshot,
  incarnationOfInvOwner,
  incarnationOfOwner,
  isReserveTag,
  pendingOwner,
} from './snapshot';
import { checkThp, isCompound, isTail } from './thp';
import { checkHugetlb, hugetlbPoolFrames } from './hugetlb';

export const FSCK_CODES = [
  'frame-state',
  'free-list-dup',
  'free-list-used',
  'free-list-missing',
  'vma-corrupt',
  'vma-overlap',
  'pte-corrupt',
  'pte-outside-vma',
  'pte-prot',
  'pte-dead-frame',
  'pte-no-pmd',
  'exited-mm-mapped',
  'mapcount',
  'refcount',
  'pinned-vm',
  'pin-owner',
  'sem-conflict',
  'mn-registry',
  'lease-dead-owner',
  'inv-corrupt',
  'inv-dead-owner',
  'intent-dead-owner',
  'pending-dead-owner',
  'reserve-dead-owner',
  'swap-slot',
  'swap-count',
  'swap-free',
  'lru',
  'pagecache',
  'thp',
  'hugetlb',
  'ksm',
] as const;
export type FsckCode = (typeof FSCK_CODES)[number];

export interface Finding {
  code: FsckCode;
  /** the Redis key the inconsistency was found in */
  key: string;
  message: string;
  /** what is involved: pid, vpn, pfn, the PTE, the lease, the inv ... */
  objects: Record<string, unknown>;
}

/** Every finding of the snapshot, memory first, then each process in pid order. */
export function fsck(s: FsckSnapshot): Finding[] {
  const out: Finding[] = [];
  const add = (code: FsckCode, key: string, message: string, objects: Record<string, unknown>) =>
    out.push({ code, key, message, objects });
  checkMemory(s, add);
  /** pfn → the PTEs mapping it (pid:vpn) */
  const mappers = new Map<number, string[]>();
  for (const p of s.processes) {
    checkProcess(s, p, mappers, add);
    checkRegistry(s, p, add);
    checkIntents(s, p, add);
  }
  checkCounts(s, mappers, add);
  checkPins(s, add);
  checkSwap(s, add);
  checkPagecache(s, add);
  checkHugetlb(s, add);
  checkKsm(s, add);
  checkThp(s, add, hugetlbPoolFrames(s));
  return out;
}

/** The ksm rule (see the top of this file). */
function checkKsm(s: FsckSnapshot, add: Add): void {
  const tree = s.ksm ?? {};
  const PG_KSM = PAGE_FLAGS.PG_ksm;
  const isKsm = (pfn: string) => ((s.frame[pfn]?.flags ?? 0) & PG_KSM) !== 0;
  for (const [f, v] of Object.entries(tree)) {
    if (f.startsWith('d')) {
      const data = f.slice(1);
      const m = /^(\d+):(\d+)$/.exec(v);
      if (!m || tree[`p${m[1]}`] !== data)
        add('ksm', MEM.ksm, `stable entry ${f} → ${v} has no matching p<pfn>`, { entry: f, v });
      continue;
    }
    const pfn = f.slice(1);
    const fr = s.frame[pfn];
    const back = tree[`d${v}`];
    const problem =
      back === undefined || back.split(':')[0] !== pfn
        ? `d${v} does not name it back (${back ?? 'absent'})`
        : fr?.state !== 'used' || String(fr.gen) !== back.split(':')[1]
          ? `its frame is ${fr ? `${fr.state} gen ${fr.gen}` : 'missing'}, not ${back}`
          : !isKsm(pfn)
            ? 'the frame has no PG_ksm'
            : String(fr.data ?? 0) !== v
              ? `the frame holds ${fr.data}, not ${v}`
              : null;
    if (problem)
      add('ksm', MEM.ksm, `KSM page pfn ${pfn}: ${problem}`, { pfn: Number(pfn), data: v });
  }
  for (const [pfn, fr] of Object.entries(s.frame))
    if (fr.state === 'used' && isKsm(pfn) && tree[`p${pfn}`] === undefined)
      add('ksm', MEM.frames, `pfn ${pfn} has PG_ksm but no stable-tree entry`, {
        pfn: Number(pfn),
      });
  for (const p of s.processes)
    for (const [vpn, raw] of Object.entries(p.ptes)) {
      const m = /^(\d+):(\d+):1$/.exec(raw);
      if (m && isKsm(m[1]))
        add(
          'ksm',
          procKeys(p.pid).pte,
          `pid ${p.pid} maps KSM page pfn ${m[1]} writable at vpn ${vpn}`,
          {
            pid: p.pid,
            vpn: Number(vpn),
            pte: raw,
          },
        );
    }
}

/** The page-cache frames of the snapshot (pfn → "ino:i"), as p<pfn> entries say. */
function pagecachePages(s: FsckSnapshot): Map<number, string> {
  const out = new Map<number, string>();
  for (const [f, v] of Object.entries(s.pagecache))
    if (f.startsWith('p')) out.set(Number(f.slice(1)), v.split(':').slice(0, 2).join(':'));
  return out;
}

function checkPagecache(s: FsckSnapshot, add: Add): void {
  const files = new Map<number, number>(); // ino → pages
  for (const [f, v] of Object.entries(s.pagecache)) {
    if (!f.startsWith('f')) continue;
    const m = /^(\d+)\|[01]$/.exec(v);
    if (!m) add('pagecache', MEM.pagecache, `file ${f.slice(1)} is ${JSON.stringify(v)}`, { f, v });
    else files.set(Number(f.slice(1)), Number(m[1]));
  }
  // shmem_evict_inode with the last mapping: a shmem object no VMA maps is leaked
  const mapped = new Set<number>();
  for (const p of s.processes)
    for (const m of p.vmas) {
      const r = /:(\d+):-?\d+$/.exec(m);
      if (r) mapped.add(Number(r[1]));
    }
  for (const f of Object.keys(s.pagecache)) {
    const m = /^m(\d+)$/.exec(f);
    if (m && !mapped.has(Number(m[1])))
      add('pagecache', MEM.pagecache, `shmem object ${m[1]} is mapped by no VMA: leaked`, {
        ino: Number(m[1]),
      });
  }
  const back = pagecachePages(s);
  const swap = swapCachePages(s);
  const cached = new Map<number, string>(); // pfn → the page naming it
  for (const [f, v] of Object.entries(s.pagecache)) {
    const c = /^c(\d+):(\d+)$/.exec(f);
    if (!c) continue;
    const page = `${c[1]}:${c[2]}`;
    if (v.startsWith('s')) {
      // a swapped-out shmem page (swap-count checks its slot)
      if (!(`m${c[1]}` in s.pagecache))
        add('pagecache', MEM.pagecache, `page ${page} of a file that is not shmem holds ${v}`, {
          page,
          entry: v,
        });
      continue;
    }
    const pfn = Number(v);
    const fr = s.frame[v];
    const pages = files.get(Number(c[1]));
    const problem =
      pages === undefined
        ? `file ${c[1]} does not exist`
        : Number(c[2]) >= pages
          ? `page ${c[2]} is past the end of file ${c[1]} (${pages} pages)`
          : fr?.state !== 'used'
            ? `its frame pfn ${v} is ${describe(fr)}`
            : back.get(pfn) !== page
              ? `pfn ${v} says it caches ${back.get(pfn) ?? 'nothing'}`
              : cached.has(pfn)
                ? `pfn ${v} caches ${cached.get(pfn)} too`
                : swap.has(pfn)
                  ? `pfn ${v} is in the swap cache too`
                  : undefined;
    cached.set(pfn, page);
    if (problem)
      add('pagecache', MEM.pagecache, `page ${page} is cached in pfn ${v}, but ${problem}`, {
        page,
        pfn,
        frame: fr ?? null,
      });
  }
  for (const [pfn, page] of back)
    if (cached.get(pfn) !== page)
      add('pagecache', MEM.pagecache, `pfn ${pfn} says it caches ${page}, which is not cached`, {
        page,
        pfn,
      });
  checkXip(s, add);
}

/** The XIP files (ino), as their f<ino> records say ("pages|1"). */
function xipFiles(s: FsckSnapshot): Set<number> {
  const out = new Set<number>();
  for (const [f, v] of Object.entries(s.pagecache))
    if (f.startsWith('f') && /^\d+\|1$/.test(v)) out.add(Number(f.slice(1)));
  return out;
}

/** The XIP sparse page's pfn (null: never allocated), as {mem}:pagecache sparse says. */
const xipSparsePfn = (s: FsckSnapshot): number | null =>
  s.pagecache.sparse === undefined ? null : Number(s.pagecache.sparse);

/** The pagecache rule's XIP part (keys.ts {mem}:pagecache): blocks, the sparse page, the seqcount. */
function checkXip(s: FsckSnapshot, add: Add): void {
  const xip = xipFiles(s);
  const lru = new Set([...s.lru, ...s.active].map(Number));
  for (const [f, v] of Object.entries(s.pagecache)) {
    if (!f.startsWith('p')) continue;
    const pfn = Number(f.slice(1));
    const m = /^(\d+):(\d+):([01x])$/.exec(v);
    const problem = !m
      ? `is ${JSON.stringify(v)}`
      : m[3] === 'x' && !xip.has(Number(m[1]))
        ? `is an XIP block of file ${m[1]}, which is not an XIP file`
        : m[3] !== 'x' && xip.has(Number(m[1]))
          ? `caches page ${m[1]}:${m[2]} of XIP file ${m[1]}, which has no page cache`
          : m[3] === 'x' && lru.has(pfn)
            ? `is an XIP block (page ${m[1]}:${m[2]}) on an LRU list: it is never reclaimed`
            : undefined;
    if (problem) add('pagecache', MEM.pagecache, `pfn ${pfn} ${problem}`, { pfn, entry: v });
  }
  const sparse = xipSparsePfn(s);
  if (sparse !== null) {
    const fr = s.frame[String(sparse)];
    const problem = !Number.isSafeInteger(sparse)
      ? `is ${JSON.stringify(s.pagecache.sparse)}`
      : fr?.state !== 'used'
        ? `is ${describe(fr)}`
        : s.pagecache[`p${sparse}`] !== undefined
          ? 'is in the page cache too'
          : swapCachePages(s).has(sparse)
            ? 'is in the swap cache too'
            : lru.has(sparse)
              ? 'is on an LRU list: it is never reclaimed'
              : fr.ref !== fr.map + 1
                ? `has refcount ${fr.ref}, not its mapcount ${fr.map} + 1 (__xip_sparse_page's)`
                : undefined;
    if (problem)
      add('pagecache', MEM.pagecache, `the XIP sparse page pfn ${sparse} ${problem}`, {
        pfn: sparse,
        frame: fr ?? null,
      });
  }
  const busy = s.pagecache.xs_busy ?? '0';
  if (busy !== '0')
    add(
      'pagecache',
      MEM.pagecache,
      `xs_busy is ${busy}: a sparse-page fault left xip_sparse_seq open (__xip_unmap waits for it)`,
      { xs_busy: busy },
    );
}

/** A swap slot record "gen|count|cpfn|cgen|data", parsed (null: corrupt). */
function parseSlot(v: string): { gen: number; count: number; cpfn: number; cgen: number } | null {
  const m = /^(\d+)\|(\d+)\|(\d+)\|(\d+)\|(-?\d+)$/.exec(v);
  return m ? { gen: +m[1], count: +m[2], cpfn: +m[3], cgen: +m[4] } : null;
}

/** The swap cache pages (pfn → slot) of the snapshot, as p<pfn> entries say. */
function swapCachePages(s: FsckSnapshot): Map<number, number> {
  const out = new Map<number, number>();
  for (const [f, v] of Object.entries(s.swap))
    if (f.startsWith('p')) out.set(Number(f.slice(1)), Number(v));
  return out;
}

function checkSwap(s: FsckSnapshot, add: Add): void {
  const slots = Number(s.swapSlots ?? 0);
  const cache = swapCachePages(s);
  /** "slot:gen" → swap PTEs naming it */
  const named = new Map<string, string[]>();
  for (const p of s.processes)
    for (const [vpn, raw] of Object.entries(p.ptes)) {
      let pte: Pte;
      try {
        pte = parsePte(raw);
      } catch {
        continue; // pte-corrupt
      }
      if (!pte.swap) continue;
      const k = `${pte.pfn}:${pte.gen}`;
      named.set(k, [...(named.get(k) ?? []), `${p.pid}:${vpn}`]);
    }
  // a shmem object's page that was swapped out: its page-cache entry holds the slot instead
  for (const [f, v] of Object.entries(s.pagecache)) {
    const m = /^s(\d+):(\d+)$/.exec(v);
    if (!f.startsWith('c') || !m) continue;
    const k = `${m[1]}:${m[2]}`;
    named.set(k, [...(named.get(k) ?? []), `shmem ${f.slice(1)}`]);
  }
  let free = 0;
  const seen = new Set<string>();
  for (const [f, v] of Object.entries(s.swap)) {
    if (!f.startsWith('s')) continue;
    const slot = Number(f.slice(1));
    const r = parseSlot(v);
    if (!r || !(slot >= 1 && slot <= slots)) {
      add('swap-slot', MEM.swap, `swap slot ${f.slice(1)} (${v}) is not a slot of this device`, {
        slot: f.slice(1),
        record: v,
      });
      continue;
    }
    if (r.count === 0 && r.cpfn === 0) free++;
    const key = `${slot}:${r.gen}`;
    seen.add(key);
    const by = named.get(key) ?? [];
    if (by.length !== r.count)
      add(
        'swap-count',
        MEM.swap,
        `swap slot ${slot} (gen ${r.gen}) has count ${r.count} but ${by.length} swap PTEs name it`,
        { slot, record: v, ptes: by },
      );
    if (r.cpfn !== 0) {
      const fr = s.frame[String(r.cpfn)];
      if (fr?.state !== 'used' || fr.gen !== r.cgen || cache.get(r.cpfn) !== slot)
        add(
          'swap-slot',
          MEM.swap,
          `swap slot ${slot} caches pfn ${r.cpfn} gen ${r.cgen}, which is ${describe(fr)}` +
            (cache.get(r.cpfn) === slot ? '' : ` and names slot ${cache.get(r.cpfn) ?? 'none'}`),
          { slot, record: v, frame: fr ?? null },
        );
    }
  }
  for (const [pfn, slot] of cache) {
    const r = parseSlot(s.swap[`s${slot}`] ?? '');
    if (!r || r.cpfn !== pfn)
      add(
        'swap-slot',
        MEM.swap,
        `pfn ${pfn} is in the swap cache of slot ${slot}, which does not cache it`,
        {
          pfn,
          slot,
        },
      );
  }
  for (const [key, by] of named)
    if (!seen.has(key))
      add(
        'swap-count',
        MEM.swap,
        `swap PTEs ${by.join(', ')} name slot:gen ${key}, which is no slot in use`,
        {
          entry: key,
          ptes: by,
        },
      );
  // slots never used are free too
  const used = Object.keys(s.swap).filter((f) => f.startsWith('s')).length;
  const expectFree = free + Math.max(0, slots - used);
  if (slots > 0 && Number(s.nrSwapFree ?? 0) !== expectFree)
    add('swap-free', MEM.meta, `nr_swap_free is ${s.nrSwapFree} but ${expectFree} slots are free`, {
      nrSwapFree: s.nrSwapFree,
      free: expectFree,
    });
  const inactive = new Set(s.lru);
  for (const [list, members] of [
    ['inactive', s.lru],
    ['active', s.active],
  ] as const)
    for (const m of members) {
      const fr = s.frame[m];
      if (fr?.state !== 'used')
        add(
          'lru',
          list === 'active' ? MEM.active : MEM.lru,
          `pfn ${m} is on the ${list} list but ${describe(fr)}`,
          {
            pfn: Number(m),
            frame: fr ?? null,
          },
        );
      if (list === 'active' && inactive.has(m))
        add('lru', MEM.active, `pfn ${m} is on both LRU lists`, { pfn: Number(m) });
    }
}

type Add = (code: FsckCode, key: string, message: string, objects: Record<string, unknown>) => void;

function checkMemory(s: FsckSnapshot, add: Add): void {
  if (s.frames === 0) return;
  const zero = s.frame[String(ZERO_PFN)];
  if (zero?.state !== 'zero')
    add('frame-state', MEM.frames, `pfn 0 is not the zero page (${zero?.state ?? 'absent'})`, {
      pfn: 0,
    });
  const seen = new Map<number, number>();
  for (const pfn of s.freeList) seen.set(pfn, (seen.get(pfn) ?? 0) + 1);
  for (const [pfn, n] of seen) {
    if (n > 1)
      add('free-list-dup', MEM.frames, `pfn ${pfn} is on the free list ${n} times`, { pfn, n });
    const f = s.frame[String(pfn)];
    if (pfn < 1 || pfn > s.frames || f?.state !== 'free')
      add('free-list-used', MEM.frames, `pfn ${pfn} is on the free list but ${describe(f)}`, {
        pfn,
        frame: f ?? null,
      });
  }
  const pool = hugetlbPoolFrames(s);
  for (let pfn = 1; pfn <= s.frames; pfn++) {
    if (pool.has(pfn)) continue; // the hugetlb rule's
    const f = s.frame[String(pfn)];
    if (!f || (f.state !== 'free' && f.state !== 'used')) {
      add('frame-state', MEM.frames, `pfn ${pfn} is ${describe(f)}`, { pfn, frame: f ?? null });
      continue;
    }
    if (f.state === 'free') {
      if (f.ref !== 0 || f.map !== 0)
        add('frame-state', MEM.frames, `free pfn ${pfn} has refcount ${f.ref}, mapcount ${f.map}`, {
          pfn,
          frame: f,
        });
      if (!seen.has(pfn))
        add('free-list-missing', MEM.frames, `free pfn ${pfn} is not on the free list (lost)`, {
          pfn,
        });
    } else if (!(f.ref >= 1) && !isTail(f))
      add('frame-state', MEM.frames, `used pfn ${pfn} has refcount ${f.ref}`, { pfn, frame: f });
  }
}

const describe = (f: FsckSnapshot['frame'][string] | undefined): string =>
  f ? `${f.state || 'without a state'} (gen ${f.gen}, ref ${f.ref}, map ${f.map})` : 'absent';

function checkProcess(
  s: FsckSnapshot,
  p: ProcessSnapshot,
  mappers: Map<number, string[]>,
  add: Add,
): void {
  const k = procKeys(p.pid);
  const vmas: Vma[] = [];
  for (const m of p.vmas) {
    try {
      vmas.push(parseVma(m));
    } catch {
      add('vma-corrupt', k.vma, `pid ${p.pid}: VMA ${JSON.stringify(m)} does not parse`, {
        pid: p.pid,
        vma: m,
      });
    }
  }
  vmas.sort((a, b) => a.start - b.start);
  for (let i = 1; i < vmas.length; i++)
    if (vmas[i].start < vmas[i - 1].end)
      add('vma-overlap', k.vma, `pid ${p.pid}: VMAs overlap`, {
        pid: p.pid,
        vmas: [vmas[i - 1], vmas[i]],
      });
  const ptes = Object.entries(p.ptes);
  if (p.state !== 'alive' && (vmas.length > 0 || ptes.length > 0))
    add(
      'exited-mm-mapped',
      k.mm,
      `pid ${p.pid} (${p.state ?? 'no mm'}) still has ${vmas.length} VMAs and ${ptes.length} PTEs`,
      { pid: p.pid, state: p.state, vmas: vmas.length, ptes: ptes.length },
    );
  const pmds = new Set(p.pmds);
  const vmaOf = (vpn: number): Vma | undefined => vmas.find((v) => v.start <= vpn && vpn < v.end);
  for (const [key, raw] of ptes) {
    const vpn = Number(key);
    let pte: Pte;
    try {
      if (!/^\d+$/.test(key)) throw new Error('vpn');
      pte = parsePte(raw);
    } catch {
      add(
        'pte-corrupt',
        k.pte,
        `pid ${p.pid}: PTE ${key} → ${JSON.stringify(raw)} does not parse`,
        {
          pid: p.pid,
          vpn: key,
          pte: raw,
        },
      );
      continue;
    }
    const objects = { pid: p.pid, vpn, pte: raw };
    if (!pmds.has(String(pmdIndexOf(vpn))))
      add(
        'pte-no-pmd',
        k.pmds,
        `pid ${p.pid}: PTE at vpn ${vpn} (${raw}) is in pmd ${pmdIndexOf(vpn)}, which no page walk visits`,
        { ...objects, pmd: pmdIndexOf(vpn) },
      );
    const vma = vmaOf(vpn);
    if (!vma)
      add(
        'pte-outside-vma',
        k.pte,
        `pid ${p.pid}: PTE at vpn ${vpn} (${raw}) is in no VMA`,
        objects,
      );
    if (pte.swap || pte.file) continue; // a swap entry (swap-count checks its slot), a file PTE
    if (vma) {
      const why =
        pte.writable && vma.prot !== 'rw'
          ? `writable in a ${vma.prot} VMA`
          : !pte.protnone && vma.prot === 'none'
            ? 'present in a PROT_NONE VMA'
            : pte.protnone && vma.prot !== 'none'
              ? `PROT_NONE in a ${vma.prot} VMA`
              : null;
      if (why)
        add('pte-prot', k.pte, `pid ${p.pid}: PTE at vpn ${vpn} (${raw}) is ${why}`, {
          ...objects,
          vma,
        });
    }
    if (pte.pfn === ZERO_PFN) {
      if (pte.writable)
        add('pte-prot', k.pte, `pid ${p.pid}: the zero page is writable at vpn ${vpn}`, objects);
      continue;
    }
    const f = s.frame[String(pte.pfn)];
    if (!f || f.state !== 'used' || f.gen !== pte.gen || pte.pfn > s.frames)
      add(
        'pte-dead-frame',
        k.pte,
        `pid ${p.pid}: PTE at vpn ${vpn} maps pfn ${pte.pfn} gen ${pte.gen}, which is ${describe(f)}`,
        { ...objects, frame: f ?? null },
      );
    const m = mappers.get(pte.pfn) ?? [];
    m.push(`${p.pid}:${vpn}`);
    mappers.set(pte.pfn, m);
  }
  for (const l of p.leases) {
    const it = incarnationOfOwner(l.owner);
    if (!l.owner || !s.incarnations[it])
      add(
        'lease-dead-owner',
        l.lock === 'mmap_sem' ? k.semW : k.ptl(l.lock),
        `pid ${p.pid}: ${l.lock} is held by ${l.owner || 'no owner'}, whose incarnation ${it || '(none)'} is dead`,
        { pid: p.pid, lease: l, incarnation: it },
      );
  }
  // mmap_sem's readers. One whose lease expired is no holder any more: every script takes it
  // for gone (a writer drops it, renew and up_read refuse it), as Redis does an expired PX key
  // it has not evicted yet; it is left in :sem:r until the next down_write, which is no
  // inconsistency. A reader still in force whose incarnation is dead is one: every writer
  // waits for it until it expires.
  //
  //   mm-0 (madvise)                        mm-1 (munmap of the same mm)
  //   down_read: :sem:r += mm-0.a/madvise
  //   ✗ killed                              down_write: BUSY (the reader's lease lives)
  //   {mm}:live:mm-0.a expires              ... fsck: lease-dead-owner :sem:r
  //   the reader's lease expires            down_write: drops it, OK
  const writer = p.leases.find((l) => l.lock === 'mmap_sem');
  const liveReaders = p.readers.filter((rd) => rd.expiresAt >= s.now);
  if (writer && liveReaders.length > 0)
    add(
      'sem-conflict',
      k.semR,
      `pid ${p.pid}: mmap_sem is held for write by ${writer.owner} and for read by ` +
        liveReaders.map((rd) => rd.owner || JSON.stringify(rd.member)).join(', '),
      { pid: p.pid, writer, readers: liveReaders },
    );
  for (const rd of liveReaders) {
    const it = incarnationOfOwner(rd.owner);
    if (!rd.owner || !s.incarnations[it])
      add(
        'lease-dead-owner',
        k.semR,
        `pid ${p.pid}: mmap_sem is held for read by ${rd.owner || JSON.stringify(rd.member)}, whose incarnation ${it || '(none)'} is dead (lease ends in ${rd.expiresAt - s.now} ms)`,
        { pid: p.pid, reader: rd, incarnation: it },
      );
  }
  for (const i of p.invs) {
    if (i.record === undefined || i.owner === undefined) {
      add(
        'inv-corrupt',
        i.record === undefined ? k.invown : k.inv,
        `pid ${p.pid}: inv ${i.inv} is only in ${i.record === undefined ? ':invown' : ':inv'}`,
        { pid: p.pid, ...i },
      );
      continue;
    }
    const bad = invUnreadable(i.record, i.owner);
    if (bad) {
      add(
        'inv-corrupt',
        bad === 'owner' ? k.invown : k.inv,
        `pid ${p.pid}: inv ${i.inv}'s ${bad} does not read: ${JSON.stringify(bad === 'owner' ? i.owner : i.record)}`,
        {
          pid: p.pid,
          ...i,
        },
      );
      continue;
    }
    const it = incarnationOfInvOwner(i.owner);
    if (!s.incarnations[it])
      add(
        'inv-dead-owner',
        k.invown,
        `pid ${p.pid}: open invalidation ${i.inv} is owed by ${it}, which is dead`,
        { pid: p.pid, ...i, incarnation: it },
      );
  }
}

/** What of an open invalidation store.openInvalidations could not read (and skips), if any. */
function invUnreadable(record: string, owner: string): 'record' | 'owner' | null {
  if (!/^.*\|(open|ending)$/.test(owner)) return 'owner';
  try {
    const r = JSON.parse(record) as Record<string, unknown>;
    const ok =
      typeof r.op === 'string' &&
      typeof r.start === 'number' &&
      typeof r.end === 'number' &&
      MnEvent.safeParse(r.event).success &&
      Array.isArray(r.subscribers);
    return ok ? null : 'record';
  } catch {
    return 'record';
  }
}

function checkRegistry(s: FsckSnapshot, p: ProcessSnapshot, add: Add): void {
  for (const name of p.mn) {
    const sub = s.subscribers[name];
    if (!sub?.regs.includes(p.pid))
      add(
        'mn-registry',
        subKeys(name).regs,
        `pid ${p.pid}: ${name} is registered on it (:mn) but its registrations do not name it: ` +
          `fencing ${name} would leave it registered here`,
        { pid: p.pid, subscriber: name, regs: sub?.regs ?? [] },
      );
    if (sub?.fenced)
      add(
        'mn-registry',
        procKeys(p.pid).mn,
        `pid ${p.pid}: ${name} is fenced but still registered: its callbacks go to a detached device`,
        { pid: p.pid, subscriber: name },
      );
  }
}

function checkIntents(s: FsckSnapshot, p: ProcessSnapshot, add: Add): void {
  for (const [id, owner] of Object.entries(p.intents))
    if (!owner || !s.incarnations[owner])
      add(
        'intent-dead-owner',
        procKeys(p.pid).intent(id),
        `pid ${p.pid}: operation ${id} is left half done by ${owner || 'no owner'}, which is dead`,
        { pid: p.pid, intent: id, owner },
      );
}

function checkPending(s: FsckSnapshot, add: Add): void {
  for (const [pfn, tag] of Object.entries(s.pending)) {
    const owner = pendingOwner(tag);
    if (s.incarnations[owner]) continue;
    if (isReserveTag(tag))
      add(
        'reserve-dead-owner',
        MEM.pending,
        `pfn ${pfn} is in the batch of ${owner || 'no owner'}, which is dead (${tag}): never given back`,
        { pfn: Number(pfn), tag },
      );
    else
      add(
        'pending-dead-owner',
        MEM.pending,
        `pfn ${pfn} is pending for ${owner || 'no owner'}, which is dead (${tag})`,
        { pfn: Number(pfn), tag },
      );
  }
}

function checkCounts(s: FsckSnapshot, mappers: Map<number, string[]>, add: Add): void {
  checkPending(s, add);
  const pool = hugetlbPoolFrames(s);
  for (let pfn = 1; pfn <= s.frames; pfn++) {
    const f = s.frame[String(pfn)];
    if (f?.state !== 'used' || pool.has(pfn) || isCompound(f)) continue; // a THP's: the thp rule
    const by = mappers.get(pfn) ?? [];
    // a live fault's frame allocated ahead and not installed, or a frame of a live replica's
    // batch no fault installed yet: its allocation is its mapping
    const ahead =
      by.length === 0 &&
      s.pending[String(pfn)] &&
      s.incarnations[pendingOwner(s.pending[String(pfn)])]
        ? 1
        : 0;
    if (f.map !== by.length + ahead)
      add(
        'mapcount',
        MEM.frames,
        `pfn ${pfn} has mapcount ${f.map} but ${by.length} PTEs map it` +
          (f.map > by.length ? ' (leaked)' : ''),
        { pfn, frame: f, ptes: by },
      );
    if (f.ref < f.map)
      add('refcount', MEM.frames, `pfn ${pfn} has refcount ${f.ref} below its mapcount ${f.map}`, {
        pfn,
        frame: f,
      });
  }
}

/**
 * pinned-vm. A pin is a reference without a mapping (get_user_pages with pin), charged to the
 * pinning process's pinned_vm first (ib_umem_get: RLIMIT_MEMLOCK) and given back after the pins
 * are dropped (ib_umem_release), so at rest, in pages:
 *
 *     Σ over used frames (refcount − mapcount)  =  Σ over processes pinned_vm  −  zero-page pins
 *
 * (a pin of the zero page is charged but not counted on it: pfn 0's refcount never moves).
 * Redis records neither who holds a pin nor how many pins are of the zero page — the HCA keeps
 * its pinned MRs, and their pages, in its own process, as the device does — so fsck can check
 * only the inequality: more references than pins charged to anyone is a finding (a pin never
 * charged, or uncharged with its pins still held; a reference leaked). pinned_vm above the pins
 * is not: it may be zero-page pins. Checking each process's pinned_vm for equality would need
 * the pins recorded per process in Redis (e.g. {p:<pid>}:pins: pfn:gen → count, written by the
 * gup and unpin scripts together with the frame's refcount and pinned_vm).
 */
function checkPins(s: FsckSnapshot, add: Add): void {
  const charged: Record<number, number> = {};
  let total = 0;
  for (const p of s.processes) {
    if (p.pinnedVm === null) continue;
    const n = Number(p.pinnedVm);
    if (!/^\d+$/.test(p.pinnedVm) || !Number.isSafeInteger(n)) {
      add(
        'pinned-vm',
        procKeys(p.pid).mm,
        `pid ${p.pid}: pinned_vm is ${JSON.stringify(p.pinnedVm)}, not a number of pages`,
        { pid: p.pid, pinnedVm: p.pinnedVm },
      );
      continue;
    }
    if (n > 0) charged[p.pid] = n;
    total += n;
  }
  const pinned: Record<number, number> = {};
  let pins = 0;
  const cache = swapCachePages(s);
  const files = pagecachePages(s);
  const sparse = xipSparsePfn(s);
  const pool = hugetlbPoolFrames(s);
  for (let pfn = 1; pfn <= s.frames; pfn++) {
    if (pool.has(pfn)) continue; // no pins on hugetlb memory: the hugetlb rule checks refcounts
    const f = s.frame[String(pfn)];
    // the swap cache's reference, or the page cache's (an XIP block's: its file's), is no pin;
    // nor is __xip_sparse_page's own reference of the sparse page
    const held = (cache.has(pfn) ? 1 : 0) + (files.has(pfn) ? 1 : 0) + (pfn === sparse ? 1 : 0);
    // a tail's pins are counted on its head too (the thp rule checks the two agree)
    const extra = f?.state === 'used' && !isTail(f) ? f.ref - f.map - held : 0;
    if (!(extra > 0)) continue;
    pinned[pfn] = extra;
    pins += extra;
  }
  // {mem}:pins: who holds a device's pin (gup with pin, recorded for its unpin)
  const owned: Record<string, number> = {};
  for (const [field, v] of Object.entries(s.pins ?? {})) {
    const m = /^([A-Za-z0-9_-]+)@(\d+)\|(\d+)\|(\d+)$/.exec(field);
    const f = m ? s.frame[m[3]] : undefined;
    const problem = !m
      ? 'is not <agent>@<pid>|<pfn>|<gen>'
      : !/^[1-9]\d*$/.test(v)
        ? `counts ${JSON.stringify(v)} pins`
        : f?.state !== 'used' || String(f.gen) !== m[4]
          ? `names pfn ${m[3]} gen ${m[4]}, which is ${f ? `${f.state} gen ${f.gen}` : 'missing'}`
          : null;
    if (problem) {
      add('pin-owner', MEM.pins, `pin record ${field} ${problem}`, { field, v });
      continue;
    }
    owned[m![3]] = (owned[m![3]] ?? 0) + Number(v);
  }
  for (const [pfn, n] of Object.entries(owned))
    if (n > (pinned[Number(pfn)] ?? 0))
      add(
        'pin-owner',
        MEM.pins,
        `pfn ${pfn}: ${n} pins recorded for devices, but the frame holds ${pinned[Number(pfn)] ?? 0} references beyond its mappings`,
        { pfn: Number(pfn), recorded: n, pins: pinned[Number(pfn)] ?? 0 },
      );
  if (pins > total)
    add(
      'pinned-vm',
      MEM.frames,
      `frames hold ${pins} references beyond their mappings (pins) but only ${total} pages are ` +
        `charged to pinned_vm`,
      { pins, pinnedVm: total, frames: pinned, charged },
    );
}

/** One line per finding: `code key: message`. */
export const formatFinding = (f: Finding): string => `${f.code} ${f.key}: ${f.message}`;
