/**
 * Typed calls of the transparent huge page scripts (mem/thp-scripts.ts, mm/thp-scripts.ts): free
 * functions over the Store's one call path (StoreBase.call), so that the THP part adds no method
 * to the shared Store classes. Each call touches one slot ({mem}, or one {p:<pid>}).
 */
import { MEM_KEYS, MEM_ROLES, PAGE_TABLE_LOCK, procKeys } from '../keys';
import type { HugeRecordArgs } from '../mem/thp-scripts';
import type { StoreBase } from '../store-base';
import { formatPte } from '../pte';

/** One huge entry ({p:<pid>}:pmdhuge): its first vpn and its head page. */
export interface ThpEntry {
  hvpn: number;
  pfn: number;
  gen: number;
  /** 1 writable, 0 read-only, 3 cleared by a huge COW, fallback, split or collapse in flight */
  w: number;
}

/** "hvpn:pfn:gen:w" → ThpEntry */
export const parseThpEntry = (s: string): ThpEntry => {
  const [hvpn, pfn, gen, w] = s.split(':').map(Number);
  return { hvpn, pfn, gen, w };
};
export const formatThpEntry = (e: Pick<ThpEntry, 'pfn' | 'gen' | 'w'>): string =>
  `${e.pfn}:${e.gen}:${e.w}`;

const memKeys = Object.fromEntries(MEM_ROLES.map((r, i) => [r, MEM_KEYS[i]])) as Record<
  (typeof MEM_ROLES)[number],
  string
>;

export type { HugeRecordArgs };
/** No huge record (tests, and callers that own the page some other way). */
export const NO_RECORD: HugeRecordArgs = { rec: '', owner: '', pid: 0, hvpn: 0, olds: '' };
/** A huge record's olds ("pfn:gen ...") from frames. */
export const oldsText = (pages: ReadonlyArray<{ pfn: number; gen: number }>): string =>
  pages.map((p) => `${p.pfn}:${p.gen}`).join(' ');

/**
 * alloc_hugepage_vma(): a compound page of 2^order frames, subpage i a copy of srcs[i] (0: zero),
 * recorded as a huge record in the same step when record.rec is set (hugeRecordEnd ends it).
 */
export async function allocHugePage(
  store: StoreBase,
  order: number,
  srcs: readonly number[] = [],
  record: HugeRecordArgs = NO_RECORD,
): Promise<{ pfn: number; gen: number } | null> {
  const r = await store.call('allocHugePage', memKeys, { order, ...record, srcs: [...srcs] });
  return r.r === 'OK' ? { pfn: r.pfn, gen: r.gen } : null;
}

/**
 * The end of huge record rec of owner (hugeRecordEnd): installed — the old pages' puts; else the
 * new page's. → whether it was read as installed, and the pfns freed; null: ended already.
 */
export async function hugeRecordEnd(
  store: StoreBase,
  rec: string,
  owner: string,
  installed: boolean,
): Promise<{ installed: boolean; freed: number[] } | null> {
  const r = await store.call(
    'hugeRecordEnd',
    { ...memKeys, pool: '{mem}:hugetlb' },
    { rec, owner, installed: installed ? 1 : 0 },
  );
  return r.r === 'OK' ? { installed: r.installed === 1, freed: r.freed } : null;
}

/** split_huge_page() of head begins: recorded as rec (false: head is no live compound head). */
export async function splitRecordOpen(
  store: StoreBase,
  rec: string,
  owner: string,
  pid: number,
  hvpn: number,
  head: { pfn: number; gen: number },
): Promise<boolean> {
  return (
    (await store.call('splitRecordOpen', memKeys, {
      rec,
      owner,
      pid,
      hvpn,
      pfn: head.pfn,
      gen: head.gen,
    })) === 1
  );
}

/**
 * __split_huge_page_refcount(): → the order, or null when head is no compound head of gen, or
 * (with a split record) when the record was ended by someone else.
 */
export async function splitHugePage(
  store: StoreBase,
  head: { pfn: number; gen: number },
  record: { rec: string; owner: string } = { rec: '', owner: '' },
): Promise<number | null> {
  const r = await store.call('splitHugePage', memKeys, {
    pfn: head.pfn,
    gen: head.gen,
    rec: record.rec,
    owner: record.owner,
  });
  return r.r === 'OK' ? r.order : null;
}

/**
 * A dead owner's huge record: fence owner off pid, then → whether pid's entry at hvpn (THP: or
 * a PTE of its range) maps the new page (hugeFence).
 */
export async function hugeFence(
  store: StoreBase,
  pid: number,
  a: {
    owner: string;
    pool: 'thp' | 'hugetlb';
    hvpn: number;
    page: { pfn: number; gen: number };
    pages: number;
  },
): Promise<boolean> {
  const k = procKeys(pid);
  return (
    (await store.call(
      'hugeFence',
      { pte: k.pte, pmdhuge: k.pmdhuge, hugetlb: k.hugetlb, fenced: k.fenced },
      {
        incarnation: a.owner,
        pool: a.pool,
        hvpn: a.hvpn,
        pfn: a.page.pfn,
        gen: a.page.gen,
        pages: a.pages,
      },
    )) === 1
  );
}

export async function hugePmdInstall(
  store: StoreBase,
  pid: number,
  hvpn: number,
  order: number,
  page: { pfn: number; gen: number },
  agent: string,
  incarnation: string,
  mmapSem: string,
) {
  const k = procKeys(pid);
  return store.call(
    'hugePmdInstall',
    {
      mm: k.mm,
      vma: k.vma,
      pte: k.pte,
      pmdhuge: k.pmdhuge,
      semW: k.semW,
      ptlmm: k.ptlmm,
      cpumask: k.cpumask,
      fenced: k.fenced,
    },
    { hvpn, order, pfn: page.pfn, gen: page.gen, agent, incarnation, mmapSem },
  );
}

export async function hugePmdLock(
  store: StoreBase,
  pid: number,
  a: {
    hvpn: number;
    expected: Pick<ThpEntry, 'pfn' | 'gen' | 'w'>;
    seq: number | '';
    owner: string;
    ttlMs: number;
    agent: string;
    incarnation: string;
    mmapSem: string;
    clear: boolean;
  },
) {
  const k = procKeys(pid);
  return store.call(
    'hugePmdLock',
    {
      mm: k.mm,
      pmdhuge: k.pmdhuge,
      semW: k.semW,
      ptlmm: k.ptlmm,
      ptlmax: k.ptlmax,
      fence: k.fence,
      cpumask: k.cpumask,
      fenced: k.fenced,
    },
    {
      hvpn: a.hvpn,
      expected: formatThpEntry(a.expected),
      seq: a.seq,
      owner: a.owner,
      ttlMs: a.ttlMs,
      lock: PAGE_TABLE_LOCK,
      agent: a.agent,
      incarnation: a.incarnation,
      mmapSem: a.mmapSem,
      clear: a.clear ? 1 : 0,
    },
  );
}

/** Under the held page_table_lock: the entry at hvpn becomes entry (null: none), ptes written. */
export async function hugePmdSetUnlock(
  store: StoreBase,
  pid: number,
  a: {
    value: string;
    token: number;
    hvpn: number;
    order: number;
    entry: Pick<ThpEntry, 'pfn' | 'gen' | 'w'> | null;
    keep: boolean;
    incarnation: string;
    ptes: ReadonlyArray<{ vpn: number; pfn: number; gen: number; writable: boolean }>;
  },
): Promise<'OK' | 'ESTALE'> {
  const k = procKeys(pid);
  const r = await store.call(
    'hugePmdSetUnlock',
    {
      ptlmm: k.ptlmm,
      ptlmax: k.ptlmax,
      pmdhuge: k.pmdhuge,
      pte: k.pte,
      pmds: k.pmds,
      fenced: k.fenced,
    },
    {
      value: a.value,
      lock: PAGE_TABLE_LOCK,
      token: a.token,
      hvpn: a.hvpn,
      order: a.order,
      entry: a.entry ? formatThpEntry(a.entry) : '',
      keep: a.keep ? 'keep' : '',
      incarnation: a.incarnation,
      ptes: a.ptes.map((p) => `${p.vpn}:${formatPte(p)}`),
    },
  );
  return r.r;
}

/** zap_huge_pmd() of the entries inside [s, e) under the held page_table_lock (null: lease lost). */
export async function zapHugePmd(
  store: StoreBase,
  pid: number,
  value: string,
  token: number,
  s: number,
  e: number,
  /** the operation's intent record (its id and owner): the cleared heads are recorded there */
  intent?: { id: string; owner: string },
): Promise<{ cleared: ThpEntry[]; partial: number[]; cpumask: string[] } | null> {
  const k = procKeys(pid);
  const r = await store.call(
    'zapHugePmd',
    {
      ptlmm: k.ptlmm,
      ptlmax: k.ptlmax,
      pmdhuge: k.pmdhuge,
      cpumask: k.cpumask,
      intent: intent ? k.intent(intent.id) : k.mm,
    },
    {
      value,
      lock: PAGE_TABLE_LOCK,
      token,
      start: s,
      end: e,
      incarnation: intent?.owner ?? '',
    },
  );
  if (r.r !== 'OK') return null;
  return { cleared: r.cleared.map(parseThpEntry), partial: r.partial, cpumask: r.cpumask };
}

/** copy_huge_pmd(), the parent's half, under its held page_table_lock (null: lease lost). */
export async function copyHugePmd(
  store: StoreBase,
  pid: number,
  value: string,
  token: number,
  s: number,
  e: number,
): Promise<{
  child: ThpEntry[];
  writeProtected: number;
  partial: number[];
  cpumask: string[];
} | null> {
  const k = procKeys(pid);
  const r = await store.call(
    'copyHugePmd',
    { ptlmm: k.ptlmm, ptlmax: k.ptlmax, pmdhuge: k.pmdhuge, cpumask: k.cpumask },
    { value, lock: PAGE_TABLE_LOCK, token, start: s, end: e },
  );
  if (r.r !== 'OK') return null;
  return {
    child: r.child.map(parseThpEntry),
    writeProtected: r.writeProtected,
    partial: r.partial,
    cpumask: r.cpumask,
  };
}

/** copy_huge_pmd(), the child's half: false when the child is not being forked by forker. */
export async function setHugePmds(
  store: StoreBase,
  pid: number,
  forker: string,
  order: number,
  entries: readonly ThpEntry[],
): Promise<boolean> {
  const k = procKeys(pid);
  const n = await store.call(
    'setHugePmds',
    { pmdhuge: k.pmdhuge, mm: k.mm },
    { forker, order, entries: entries.map((x) => `${x.hvpn}:${formatThpEntry(x)}`) },
  );
  return n >= 0;
}

/** Every huge entry of pid, in hvpn order, and the order (null: none). */
export async function hugePmds(
  store: StoreBase,
  pid: number,
): Promise<{ order: number | null; entries: ThpEntry[] }> {
  const r = await store.call('hugePmdDump', { pmdhuge: procKeys(pid).pmdhuge }, {});
  return { order: r.order === '' ? null : r.order, entries: r.entries.map(parseThpEntry) };
}

/** collapse_huge_page()'s lock and clear (see collapseLock). */
export async function collapseLock(
  store: StoreBase,
  pid: number,
  a: {
    hvpn: number;
    order: number;
    owner: string;
    ttlMs: number;
    semValue: string;
    incarnation: string;
    ptes: ReadonlyArray<{ vpn: number; pfn: number; gen: number; writable: boolean }>;
  },
) {
  const k = procKeys(pid);
  return store.call(
    'collapseLock',
    {
      mm: k.mm,
      pmdhuge: k.pmdhuge,
      pte: k.pte,
      semW: k.semW,
      ptlmm: k.ptlmm,
      ptlmax: k.ptlmax,
      fence: k.fence,
      cpumask: k.cpumask,
      fenced: k.fenced,
    },
    {
      hvpn: a.hvpn,
      order: a.order,
      owner: a.owner,
      ttlMs: a.ttlMs,
      lock: PAGE_TABLE_LOCK,
      semValue: a.semValue,
      incarnation: a.incarnation,
      ptes: a.ptes.map((p) => `${p.vpn}:${formatPte(p)}`),
    },
  );
}
