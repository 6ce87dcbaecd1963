/**
 * fsck's `hugetlb` rule (keys.ts {mem}:hugetlb and {p:<pid>}:hugetlb): the hugetlbfs pool and
 * the huge entries that map its pages. The other frame rules (frame-state, free-list-missing,
 * mapcount, refcount, pinned-vm) leave the pool's frames to this one (hugetlbPoolFrames):
 *   - the pool record parses; its free list names distinct heads of the pool, and
 *     free_huge_pages is its length;
 *   - every pool page is compound: the head PG_head with the pool's order, the tails PG_tail;
 *   - a free pool page (on the pool's free list): every frame free with counts 0; a page in
 *     use: every frame used, of the head's gen, the tails' counts 0, the head's mapcount the
 *     number of huge entries naming it (≥ 1: the last one gone, it is back in the pool) and its
 *     refcount equal to it (no pins on hugetlb memory);
 *   - no pool frame is on the buddy allocator's free list or an LRU list (never reclaimed);
 *   - every huge entry parses, is at a huge-page aligned vpn inside a hugetlb VMA of its process
 *     (which is alive), allows no more than the VMA (writable only in rw), and names a used pool
 *     head of its gen; a private huge page mapped more than once is read-only in every private
 *     mapping (copy_hugetlb_page_range's write-protect: else a write skips hugetlb_cow). An
 *     entry hugetlb_cow cleared (w = 3: its old page kept until the copy is set, or put back
 *     read-only by the next fault when that COW died) is legal in a private mapping only, and
 *     still maps its page.
 */
import { PAGE_FLAGS, type Pte, type Vma, hugetlbKey, parsePte, parseVma } from '@mmlab/model';
import type { FsckSnapshot } from './snapshot';

const POOL_KEY = '{mem}:hugetlb';

type AddHugetlb = (
  code: 'hugetlb',
  key: string,
  message: string,
  objects: Record<string, unknown>,
) => void;

interface Pool {
  order: number;
  n: number;
  base: number;
  nr: number;
  nfree: number;
  free: number[];
}

function parsePool(raw: Record<string, string> | undefined): Pool | null | 'corrupt' {
  if (!raw || Object.keys(raw).length === 0) return null;
  const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : NaN);
  const order = num(raw.order);
  const base = num(raw.base);
  const nr = num(raw.nr_hugepages);
  const nfree = num(raw.free_huge_pages);
  const free = (raw.free ?? '').split(' ').filter(Boolean).map(Number);
  if ([order, base, nr, nfree].some(Number.isNaN) || free.some((p) => !Number.isSafeInteger(p)))
    return 'corrupt';
  return { order, n: 2 ** order, base, nr, nfree, free };
}

/** The pfns of the pool's frames (empty without a pool): the other frame rules skip them. */
export function hugetlbPoolFrames(s: FsckSnapshot): Set<number> {
  const p = parsePool(s.hugetlb);
  const out = new Set<number>();
  if (!p || p === 'corrupt') return out;
  for (let pfn = p.base; pfn < p.base + p.nr * p.n; pfn++) out.add(pfn);
  return out;
}

export function checkHugetlb(s: FsckSnapshot, add: AddHugetlb): void {
  const pool = parsePool(s.hugetlb);
  if (pool === 'corrupt') {
    add('hugetlb', POOL_KEY, `the pool record does not parse: ${JSON.stringify(s.hugetlb)}`, {
      pool: s.hugetlb,
    });
    return;
  }
  /** head pfn → the entries naming it, "pid:hvpn" (private: in a private mapping) */
  const mappers = new Map<number, Array<{ at: string; writable: boolean; shared: boolean }>>();
  for (const p of s.processes) {
    const key = hugetlbKey(p.pid);
    const vmas: Vma[] = [];
    for (const m of p.vmas)
      try {
        vmas.push(parseVma(m));
      } catch {
        // vma-corrupt
      }
    for (const [hv, raw] of Object.entries(p.huge ?? {})) {
      const hvpn = Number(hv);
      const at = `${p.pid}:${hv}`;
      let e: Pte;
      try {
        if (!/^\d+$/.test(hv)) throw new Error('hvpn');
        e = parsePte(raw);
      } catch {
        add(
          'hugetlb',
          key,
          `pid ${p.pid}: huge entry ${hv} → ${JSON.stringify(raw)} does not parse`,
          {
            pid: p.pid,
            hvpn: hv,
            entry: raw,
          },
        );
        continue;
      }
      const vma = vmas.find((v) => v.start <= hvpn && hvpn < v.end);
      const fr = s.frame[String(e.pfn)];
      const problem =
        p.state !== 'alive'
          ? `is in an address space that is ${p.state ?? 'gone'}`
          : !pool
            ? 'exists, but no hugetlb pool was reserved'
            : hvpn % pool.n !== 0
              ? `is not at a huge page boundary (${pool.n} pages)`
              : !vma?.hugetlb || hvpn + pool.n > vma.end
                ? 'is not inside a hugetlb VMA'
                : e.writable && vma.prot !== 'rw'
                  ? `is writable in a ${vma.prot} VMA`
                  : vma.prot === 'none' ||
                      e.protnone ||
                      e.swap ||
                      e.file ||
                      (e.cowCleared && vma.shared)
                    ? 'is not a present entry of an accessible VMA'
                    : e.pfn < pool.base ||
                        e.pfn >= pool.base + pool.nr * pool.n ||
                        (e.pfn - pool.base) % pool.n !== 0
                      ? `names pfn ${e.pfn}, which is no head of the pool`
                      : fr?.state !== 'used' || fr.gen !== e.gen
                        ? `names pfn ${e.pfn} gen ${e.gen}, which is ${fr ? `${fr.state} (gen ${fr.gen})` : 'absent'}`
                        : undefined;
      if (problem) {
        add('hugetlb', key, `pid ${p.pid}: huge entry at vpn ${hv} (${raw}) ${problem}`, {
          pid: p.pid,
          hvpn,
          entry: raw,
          frame: fr ?? null,
        });
        continue;
      }
      const l = mappers.get(e.pfn) ?? [];
      l.push({ at, writable: e.writable, shared: vma!.shared });
      mappers.set(e.pfn, l);
    }
  }
  if (!pool) return;
  const end = pool.base + pool.nr * pool.n;
  const seen = new Set<number>();
  for (const h of pool.free) {
    if (seen.has(h) || h < pool.base || h >= end || (h - pool.base) % pool.n !== 0)
      add('hugetlb', POOL_KEY, `the pool's free list names ${h}: no head of the pool, or twice`, {
        pfn: h,
        free: pool.free,
      });
    seen.add(h);
  }
  if (pool.nfree !== pool.free.length)
    add(
      'hugetlb',
      POOL_KEY,
      `free_huge_pages is ${pool.nfree} but the free list holds ${pool.free.length} pages`,
      { nfree: pool.nfree, free: pool.free },
    );
  if (pool.base < 1 || end - 1 > s.frames)
    add('hugetlb', POOL_KEY, `the pool [${pool.base}, ${end}) is not inside memory`, {
      base: pool.base,
      end,
      frames: s.frames,
    });
  const buddy = new Set(s.freeList);
  const lru = new Set([...s.lru, ...s.active].map(Number));
  for (let h = pool.base; h < end; h += pool.n) {
    const head = s.frame[String(h)];
    const free = seen.has(h);
    const by = mappers.get(h) ?? [];
    const bad: string[] = [];
    for (let pfn = h; pfn < h + pool.n; pfn++) {
      const f = s.frame[String(pfn)];
      const tail = pfn !== h;
      if (!f) {
        bad.push(`pfn ${pfn} is absent`);
        continue;
      }
      const flags = f.flags ?? 0;
      if (tail ? !(flags & PAGE_FLAGS.PG_tail) : !(flags & PAGE_FLAGS.PG_head))
        bad.push(`pfn ${pfn} is not marked ${tail ? 'PG_tail' : 'PG_head'}`);
      if (!tail && (f.reserved ?? 0) !== pool.order)
        bad.push(`its head has order ${f.reserved ?? 0}, not ${pool.order}`);
      if (buddy.has(pfn)) bad.push(`pfn ${pfn} is on the buddy allocator's free list`);
      if (lru.has(pfn)) bad.push(`pfn ${pfn} is on an LRU list`);
      if (free) {
        if (f.state !== 'free' || f.ref !== 0 || f.map !== 0)
          bad.push(`pfn ${pfn} is ${f.state} (ref ${f.ref}, map ${f.map}) in a free huge page`);
      } else if (f.state !== 'used' || f.gen !== head?.gen)
        bad.push(`pfn ${pfn} is ${f.state} gen ${f.gen} in a huge page of gen ${head?.gen}`);
      else if (tail && (f.ref !== 0 || f.map !== 0))
        bad.push(`tail pfn ${pfn} has ref ${f.ref}, map ${f.map}`);
    }
    if (!free && head) {
      if (head.map !== by.length || head.ref !== head.map || head.map < 1)
        bad.push(
          `its head has mapcount ${head.map}, refcount ${head.ref} but ${by.length} huge entries map it` +
            (by.length === 0 ? ' (leaked: not back in the pool)' : ''),
        );
      const privates = by.filter((m) => !m.shared);
      if (by.length > 1 && privates.some((m) => m.writable))
        bad.push(
          `it is mapped ${by.length} times and writable in the private mapping ` +
            privates
              .filter((m) => m.writable)
              .map((m) => m.at)
              .join(', '),
        );
    }
    if (free && by.length)
      bad.push(`it is on the pool's free list but mapped by ${by.map((m) => m.at).join(', ')}`);
    for (const b of bad)
      add('hugetlb', POOL_KEY, `huge page ${h}: ${b}`, {
        head: h,
        frame: head ?? null,
        mappers: by,
      });
  }
}
