/**
 * Typed calls of the hugetlbfs scripts (hugetlb-scripts.ts): the pool ({mem}:hugetlb) and the
 * huge entries of an address space ({p:<pid>}:hugetlb). keys.ts documents both keys.
 */
import { MmlabError, PAGE_SIZE, type Prot, TASK_SIZE } from '@mmlab/protocol';
import { MEM, PAGE_TABLE_LOCK, procKeys } from '../keys';
import { parsePte, type Pte } from '../pte';
import type { StoreBase } from '../store-base';
import { type HugeRecordArgs, NO_RECORD } from './thp-store';

/** The pool's hash (hugetlb_hstate, its free lists and counts). */
export const HUGETLB_POOL = '{mem}:hugetlb';
/** The huge entries of pid (one per huge page: field its first vpn → "pfn:gen:w"). */
export const hugetlbKey = (pid: number): string => `{p:${pid}}:hugetlb`;

/** A huge entry: the huge page's first vpn and the entry (pfn: the head). */
export interface HugeEntry extends Pte {
  hvpn: number;
}

/** "hvpn:pfn:gen:w" → HugeEntry */
export const parseHugeEntry = (c: string): HugeEntry => {
  const i = c.indexOf(':');
  return { hvpn: Number(c.slice(0, i)), ...parsePte(c.slice(i + 1)) };
};

/** An entry as the scripts take it: "pfn:gen:w" ('' none). */
export const hugeEntryText = (p: { pfn: number; gen: number; writable: boolean } | null): string =>
  p ? `${p.pfn}:${p.gen}:${p.writable ? 1 : 0}` : '';

/** The pool as {mem}:hugetlb holds it (raw: fsck reads it too). */
export interface HugetlbPool {
  order: number;
  base: number;
  nr: number;
  free: number;
  freeList: number[];
}

const POOL_KEYS = { meta: MEM.meta, frames: MEM.frames, pool: HUGETLB_POOL };

/** The hugetlbfs side of the Store: built on any StoreBase (the mm's Store). */
export class HugetlbStore {
  constructor(private readonly s: StoreBase) {}

  /** Reserve the pool once (idempotent); → nr_hugepages. */
  format(nr: number, order: number): Promise<number> {
    return this.s.call('hugetlbFormat', POOL_KEYS, { nr, order });
  }

  /** The pool, or null when none was reserved. */
  async pool(): Promise<HugetlbPool | null> {
    const h = await this.s.redis.hgetall(HUGETLB_POOL);
    if (h.order === undefined) return null;
    return {
      order: Number(h.order),
      base: Number(h.base),
      nr: Number(h.nr_hugepages),
      free: Number(h.free_huge_pages),
      freeList: (h.free ?? '').split(' ').filter(Boolean).map(Number),
    };
  }

  /** alloc_huge_page(): a zeroed huge page, or a copy of head `from`; null: the pool is empty. */
  async alloc(
    from?: { pfn: number; gen: number },
    record: HugeRecordArgs = NO_RECORD,
  ): Promise<{ pfn: number; gen: number } | null> {
    const r = await this.s.call(
      'hugetlbAlloc',
      { ...POOL_KEYS, pending: MEM.pending },
      { copyFrom: from?.pfn ?? '', copyGen: from?.gen ?? '', ...record },
    );
    if (r.r === 'STALE')
      throw new MmlabError('EINTERNAL', `copy of huge page ${from?.pfn} gen ${from?.gen}: stale`);
    return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen } : null;
  }

  /** get_page + page_dup_rmap of heads; → the bad ones. */
  get(pages: Array<{ pfn: number; gen: number }>): Promise<number[]> {
    return this.s.call('hugetlbGet', POOL_KEYS, { pages });
  }

  /** page_remove_rmap + put_page of heads; → the heads back in the pool, and the bad ones. */
  put(
    pages: Array<{ pfn: number; gen: number }>,
    /** a {mem}:once batch id: applied once ('' none) */
    batch = '',
  ): Promise<{ freed: number[]; bad: number[] }> {
    if (pages.length === 0) return Promise.resolve({ freed: [], bad: [] });
    return this.s.call(
      'hugetlbPut',
      { ...POOL_KEYS, once: MEM.once },
      { batch, pages: pages.map((p) => ({ pfn: p.pfn, gen: p.gen })) },
    );
  }

  /** page_mapcount() of a head (-1: not a used head of that gen). */
  mapcount(p: { pfn: number; gen: number }): Promise<number> {
    return this.s.call('hugetlbMapcount', POOL_KEYS, { pfn: p.pfn, gen: p.gen });
  }

  /** do_mmap_pgoff(MAP_HUGETLB): a VMA aligned to the huge page. */
  mmap(pid: number, pages: number, prot: Prot, shared: boolean, order: number) {
    const k = procKeys(pid);
    return this.s.call(
      'hugetlbMmap',
      { mm: k.mm, vma: k.vma, semW: k.semW, semR: k.semR },
      { pages, prot, shared: shared ? 1 : 0, order, limitVpn: TASK_SIZE / PAGE_SIZE },
    );
  }

  /** hugetlb_fault()'s look at vpn's VMA and the entry at hvpn (lease-free). */
  async lookup(
    pid: number,
    vpn: number,
    hvpn: number,
    access: 'read' | 'write',
    mmapSem: string,
    agent: string,
  ) {
    const k = procKeys(pid);
    const r = await this.s.call(
      'hugetlbLookup',
      {
        mm: k.mm,
        vma: k.vma,
        huge: hugetlbKey(pid),
        semW: k.semW,
        ptl: k.ptl(PAGE_TABLE_LOCK),
        cpumask: k.cpumask,
      },
      { vpn, hvpn, access, mmapSem, agent },
    );
    if (r.r === 'PRESENT')
      return {
        r: 'PRESENT' as const,
        pte: { pfn: r.pfn, gen: r.gen, writable: r.w === 1 },
        seq: r.seq,
      };
    return r;
  }

  /**
   * An entry written under page_table_lock (lease value/token): expected → next (null: none;
   * cleared: hugetlb_cow's cleared entry, w = 3, its old page kept).
   * seq ≥ 0: a fault's write (mm seq, mmap_sem and the VMA checked too); -1: no such checks.
   */
  setEntry(
    pid: number,
    lease: { value: string; token: number },
    hvpn: number,
    expected: Pte | null | { cleared: Pte },
    next: Pte | null | { cleared: Pte },
    seq: number,
    mmapSem = '',
    /** the writer's incarnation: refused once it is fenced off pid ('' unchecked) */
    incarnation = '',
  ) {
    const k = procKeys(pid);
    const text = (p: Pte | null | { cleared: Pte }) =>
      p && 'cleared' in p ? `${p.cleared.pfn}:${p.cleared.gen}:3` : hugeEntryText(p);
    return this.s.call(
      'hugetlbSetEntry',
      {
        mm: k.mm,
        vma: k.vma,
        huge: hugetlbKey(pid),
        semW: k.semW,
        ptl: k.ptl(PAGE_TABLE_LOCK),
        ptlmax: k.ptlmax,
        cpumask: k.cpumask,
        fenced: k.fenced,
      },
      {
        value: lease.value,
        token: lease.token,
        hvpn,
        expected: text(expected),
        next: text(next),
        seq,
        mmapSem,
        incarnation,
      },
    );
  }

  /** The entries of [s, e) (no lock). */
  async entries(pid: number, s: number, e: number): Promise<HugeEntry[]> {
    const r = await this.s.call('hugetlbEntries', { huge: hugetlbKey(pid) }, { s, e });
    return r.map(parseHugeEntry);
  }

  /** __unmap_hugepage_range()'s clear of [s, e) under page_table_lock; null: the lease is lost. */
  async zap(
    pid: number,
    lease: { value: string; token: number },
    s: number,
    e: number,
    /** the operation's intent record: the cleared heads are recorded there */
    intent?: { id: string; owner: string },
  ) {
    const k = procKeys(pid);
    const r = await this.s.call(
      'hugetlbZap',
      {
        huge: hugetlbKey(pid),
        ptl: k.ptl(PAGE_TABLE_LOCK),
        ptlmax: k.ptlmax,
        cpumask: k.cpumask,
        intent: intent ? k.intent(intent.id) : k.mm,
      },
      { value: lease.value, token: lease.token, s, e, incarnation: intent?.owner ?? '' },
    );
    return r.r === 'OK' ? { cpumask: r.cpumask, cleared: r.cleared.map(parseHugeEntry) } : null;
  }

  /** copy_hugetlb_page_range()'s parent side; null: the lease is lost. */
  async copy(
    pid: number,
    lease: { value: string; token: number },
    s: number,
    e: number,
    cow: boolean,
  ) {
    const k = procKeys(pid);
    const r = await this.s.call(
      'hugetlbCopy',
      { huge: hugetlbKey(pid), ptl: k.ptl(PAGE_TABLE_LOCK), ptlmax: k.ptlmax, cpumask: k.cpumask },
      { value: lease.value, token: lease.token, s, e, cow: cow ? 1 : 0 },
    );
    return r.r === 'OK' ? { cpumask: r.cpumask, entries: r.entries.map(parseHugeEntry) } : null;
  }

  /** copy_hugetlb_page_range()'s child side (the child is being forked); false: it is not. */
  async forkSet(child: number, entries: HugeEntry[]): Promise<boolean> {
    if (entries.length === 0) return true;
    const r = await this.s.call(
      'hugetlbForkSet',
      { mm: procKeys(child).mm, huge: hugetlbKey(child) },
      { entries: entries.map((x) => `${x.hvpn}:${hugeEntryText(x)}`) },
    );
    return r === 1;
  }
}
