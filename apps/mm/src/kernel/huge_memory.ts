/**
 * mm/huge_memory.c: transparent huge pages — v3.7 (patched) and v3.6 (legacy).
 *
 * A huge page is 2^hugePageOrder frames (a compound page: mem/thp-scripts.ts) mapped by ONE
 * huge entry of {p:<pid>}:pmdhuge covering the 2^order-aligned virtual range (keys.ts), guarded
 * by mm->page_table_lock (ptl:mm), never by a split PTE lock. The fault and walk scripts look
 * for it before the PTE (a CPU, the HCA or KVM reading vpn inside it gets the subpage
 * head + index: a secondary MMU maps 4 KiB pieces). Every invalidation of a huge mapping covers
 * the whole huge range [haddr, haddr + HPAGE_SIZE), never one address.
 *
 * Crash safety (issue 15), as KSM's replace_page (ksm.ts): a huge page allocated for a fault,
 * a COW or a collapse is recorded in the allocation's own step (allocHugePage with a huge record,
 * {mem}:pending u:<rec>: the new page and the pages its install owes a put — the COW's old huge
 * page, the collapse's small pages). Its owner ends the record (hugeRecordEnd: the olds' puts
 * once the entry maps the new page, else the new page's own put); a replica dying in between
 * leaves it to a survivor's reaper (orphan_ranges.ts), which fences it off the process, reads
 * whether the entry maps the new page (hugeFence) and ends the record the same way:
 *
 *   mm-0 (do_huge_pmd_wp_page, pid 7 hvpn 8)       mm-1 (reaper)
 *   allocHugePage(r: new 20, olds 12)  u:r
 *   hugePmdLock (entry 12 → w = 3); flush; set_pmd_at(20)
 *   ✗ killed (do_huge_pmd_wp_page.set)
 *                                                  owner of u:r dead: hugeFence(7) → entry at 8
 *                                                  maps 20: hugeRecordEnd(r, 1): put_page(12)
 *
 * A cleared entry (w = 3) is put back read-only by the next fault once page_table_lock is free;
 * a collapse's cleared small PTEs (w = 3) likewise once mmap_sem is. A split is recorded too
 * (splitRecordOpen, before its first mapping is split): a reaper finishes a dead owner's split
 * — every mapping still huge split, then __split_huge_page_refcount with the record's end. The
 * fallback's small pages carry the small-page pending tags ({mem}:pending pfn: the first owes
 * the huge page's put once installed), which the reaper already rolls back or forward. A
 * munmap's zap_huge_pmd records the heads it cleared in the munmap's intent (as zap_pte_range's
 * frames): the taker puts them. A fork rolled back still leaves its child's huge entries'
 * references behind.
 */
import { crashPoint } from './crash_point';
import { MmlabError, PAGE_SIZE, type MnEvent, type SeedSite } from '@mmlab/protocol';
import { notifyOf } from './eras';
import {
  type ThpEntry,
  PAGE_TABLE_LOCK,
  allocHugePage,
  collapseLock as collapseLockScript,
  hugeRecordEnd,
  oldsText,
  splitRecordOpen,
  copyHugePmd,
  hugePmdInstall,
  hugePmdLock,
  hugePmdSetUnlock,
  hugePmds,
  setHugePmds,
  splitHugePage as splitHugePageRefcount,
  zapHugePmd,
} from '@mmlab/model';
import { now } from '@mmlab/runtime';
import { type MmContext, backoff, injected, ownerOf } from './context';
import {
  type HeldLock,
  heldPtl,
  mmapReadLock,
  mmapReadUnlock,
  mmapWriteLock,
  mmapWriteUnlock,
  ptlLock,
  ptlUnlock,
  traceUnlock,
  underPtl,
} from './locks';
import {
  invalidatePage,
  invalidateRangeEnd,
  invalidateRangeStart,
  withinRange,
} from './mmu_notifier';
import { type Frame, allocPage, drainAllPages, putPages, putPending } from './page_alloc';
import { staleLease } from './pagewalk';
import { flushTlbRange } from './tlbflush';
import { putCleared } from './intent';

/** The huge page order (MMLAB_HUGE_PAGE_ORDER): HPAGE_PMD_ORDER. */
export const hpageOrder = (ctx: MmContext): number => ctx.env.MMLAB_HUGE_PAGE_ORDER;
/** HPAGE_PMD_NR: pages per huge page. */
export const hpageNr = (ctx: MmContext): number => 2 ** hpageOrder(ctx);
/**
 * transparent_hugepage_enabled(): the order an anonymous fault may take a huge page of (config
 * `thp: always`), 0 when THP is off (`never`, the default).
 */
export const thpFaultOrder = (ctx: MmContext): number =>
  ctx.env.MMLAB_THP === 'always' ? hpageOrder(ctx) : 0;

/** This replica's vm events (count_vm_event): thp_fault_fallback, thp_cow_fallback (since start). */
const vmEvents = new WeakMap<MmContext, { fault: number; cow: number }>();
function countVmEvent(ctx: MmContext, e: 'fault' | 'cow'): number {
  const c = vmEvents.get(ctx) ?? { fault: 0, cow: 0 };
  vmEvents.set(ctx, c);
  return ++c[e];
}

/** The frames of the huge page at head (every one of its 2^order). */
const framesOf = (ctx: MmContext, head: Frame): Frame[] =>
  Array.from({ length: hpageNr(ctx) }, (_, i) => ({ pfn: head.pfn + i, gen: head.gen }));

/**
 * alloc_hugepage_vma(): a compound page, subpage i a copy of srcs[i] (copy_user_huge_page; none:
 * zero-filled). When no aligned block is free the replicas' batches go back first
 * (drain_all_pages, as the allocator's slow path does) and it looks once more; null: none, the
 * caller falls back to small pages (v3.7 THP allocations do not reclaim: __GFP_NO_KSWAPD).
 */
async function allocHuge(
  ctx: MmContext,
  op: string,
  srcs: number[],
  /** the huge record opened with it: where it goes, and the pages its install owes a put */
  at: { pid: number; hvpn: number; olds: Frame[] },
): Promise<HugeAlloc | null> {
  const rec = `${ctx.incarnation}:${op}:h${++hugeRecords}`;
  const record = {
    rec,
    owner: ctx.incarnation,
    pid: at.pid,
    hvpn: at.hvpn,
    olds: oldsText(at.olds),
  };
  let page = await allocHugePage(ctx.store, hpageOrder(ctx), srcs, record);
  if (!page) {
    await drainAllPages(ctx);
    page = await allocHugePage(ctx.store, hpageOrder(ctx), srcs, record);
  }
  if (!page) return null;
  for (const f of framesOf(ctx, page)) ctx.tracer.emit({ kind: 'frame.alloc', op, ...f });
  return { page, rec, olds: at.olds };
}

/** A huge page allocated with its huge record (allocHuge): ended by hugeEnd. */
interface HugeAlloc {
  readonly page: Frame;
  readonly rec: string;
  readonly olds: Frame[];
}
/** huge records of this process (allocHuge, splitHugePage): a counter for their names. */
let hugeRecords = 0;

/**
 * The end of a huge record of this replica's (hugeRecordEnd): installed — the olds' puts it owes
 * (the old huge page, or a collapse's small pages); else the new page's put. Each frame freed is
 * traced. Ended already (a reaper took it: this replica was found dead) — nothing.
 */
async function hugeEnd(
  ctx: MmContext,
  op: string,
  a: HugeAlloc,
  installed: boolean,
): Promise<void> {
  const r = await hugeRecordEnd(ctx.store, a.rec, ctx.incarnation, installed);
  if (r) traceFreed(ctx, op, r.freed, r.installed ? a.olds : [a.page]);
}

/** frame.free of each pfn freed, its gen the named frame's (a compound page's: its head's). */
export function traceFreed(
  ctx: MmContext,
  op: string,
  freed: readonly number[],
  named: readonly Frame[],
): void {
  const n = hpageNr(ctx);
  for (const pfn of freed) {
    const f =
      named.find((x) => x.pfn === pfn) ??
      named.find((x) => x.pfn - (x.pfn % n) === pfn - (pfn % n));
    if (f) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: f.gen });
  }
}

/**
 * Models: do_huge_pmd_anonymous_page(), mm/huge_memory.c v3.7 (v3.6 alike) — a fault at vpn,
 * pte_none, whose aligned huge range hvpn lies in an anonymous private VMA with no PTE: a huge
 * page allocated (no lock held), then installed by one lease-free script under the same checks
 * as the small-page fault (page_table_lock free, pmd_none). No notifier: nothing was mapped.
 * → the subpage of vpn now mapped, 'fallback' (no huge page free: small pages, counted as
 * thp_fault_fallback), or null (the range changed meanwhile: fault again).
 */
export async function doHugePmdAnonymousPage(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  hvpn: number,
  agent: string,
  mmapSem: string,
): Promise<{ pfn: number; gen: number; writable: boolean } | 'fallback' | null> {
  const addr = hvpn * PAGE_SIZE;
  const order = hpageOrder(ctx);
  const alloc = await allocHuge(ctx, op, [], { pid, hvpn, olds: [] });
  if (!alloc) {
    const fallbacks = countVmEvent(ctx, 'fault');
    ctx.tracer.emit({ kind: 'thp', op, pid, addr, event: 'fault-fallback', order, fallbacks });
    return 'fallback';
  }
  const { page } = alloc;
  let installed = false;
  try {
    await crashPoint(ctx, 'do_huge_pmd_anonymous_page.allocated');
    const r = await hugePmdInstall(
      ctx.store,
      pid,
      hvpn,
      order,
      page,
      agent,
      ctx.incarnation,
      mmapSem,
    );
    switch (r.r) {
      case 'ESRCH':
        throw new MmlabError('ESRCH', `no process ${pid}`);
      case 'FENCED':
        ctx.onFenced?.();
        throw new MmlabError('ESTALE', `${ctx.incarnation} was fenced off pid ${pid}`);
      case 'SIGSEGV':
        throw new MmlabError('SIGSEGV', `fault at 0x${(vpn * PAGE_SIZE).toString(16)}`);
      case 'BUSY':
      case 'RETRY':
        return null;
      case 'OK':
        break;
    }
    installed = true;
    const writable = r.w === 1;
    ctx.tracer.emit({
      kind: 'pte.set',
      op,
      pid,
      addr,
      ...page,
      writable,
      lock: PAGE_TABLE_LOCK,
      token: null,
    });
    ctx.tracer.emit({ kind: 'thp', op, pid, addr, event: 'fault', ...page, order });
    return { pfn: page.pfn + (vpn - hvpn), gen: page.gen, writable };
  } finally {
    // installed: the record goes (nothing owed); else the page goes back with it
    await hugeEnd(ctx, op, alloc, installed);
  }
}

/** The huge entry a write fault found read-only, at the mm seq it read. */
export interface HugeWpFault {
  readonly op: string;
  readonly pid: number;
  readonly vpn: number;
  readonly hvpn: number;
  readonly head: Frame;
  readonly seq: number;
  readonly agent: string;
  readonly mmapSem: string;
}

/** page_table_lock held for a huge entry, with mm_cpumask as the locking script read it. */
type HeldPmd = HeldLock & { readonly cpumask: string[] };

/**
 * spin_lock(&mm->page_table_lock) + pmd_same() as a lease (hugePmdLock; clear: pmdp_clear_flush's
 * clear, the entry marked w = 3 until the caller sets its successor). Spins while another holds
 * the lock; null when the entry changed or a writer of mmap_sem came in (the caller goes back).
 */
async function hugePmdLockFor(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  expected: Pick<ThpEntry, 'pfn' | 'gen' | 'w'>,
  o: { seq: number | ''; agent: string; mmapSem: string; clear: boolean },
): Promise<HeldPmd | null> {
  const t0 = now();
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  for (let attempt = 1; ; attempt++) {
    const r = await hugePmdLock(ctx.store, pid, {
      hvpn,
      expected,
      seq: o.seq,
      owner: ownerOf(ctx, op),
      ttlMs: ctx.env.MMLAB_LEASE_TTL_MS,
      agent: o.agent,
      incarnation: ctx.incarnation,
      mmapSem: o.mmapSem,
      clear: o.clear,
    });
    if (r.r === 'OK') {
      const held = heldPtl(ctx, pid, PAGE_TABLE_LOCK, op, r.token, t0);
      if (o.clear)
        ctx.tracer.emit({
          kind: 'pte.clear',
          op,
          pid,
          addr: hvpn * PAGE_SIZE,
          pfn: expected.pfn,
          gen: expected.gen,
          lock: PAGE_TABLE_LOCK,
          token: r.token,
        });
      return { ...held, cpumask: r.cpumask };
    }
    if (r.r === 'FENCED') {
      ctx.onFenced?.();
      throw new MmlabError('ESTALE', `${ctx.incarnation} was fenced off pid ${pid}`);
    }
    if (r.r === 'BUSY' && r.what === 'ptl') {
      await backoff(attempt, deadline, `${PAGE_TABLE_LOCK} of pid ${pid}`);
      continue;
    }
    return null;
  }
}

/**
 * Under the held page_table_lock: the huge entry at hvpn becomes entry (null: none) and ptes are
 * written (hugePmdSetUnlock, fenced by the lease's token); then spin_unlock unless keep (v3.6
 * sends its range end under the lock: the caller unlocks). A lost lease: ESTALE, nothing written.
 */
async function hugeSetUnlock(
  ctx: MmContext,
  held: HeldLock,
  hvpn: number,
  entry: Pick<ThpEntry, 'pfn' | 'gen' | 'w'> | null,
  ptes: ReadonlyArray<{ vpn: number; pfn: number; gen: number; writable: boolean }>,
  keep: boolean,
): Promise<void> {
  const { pid, op, lease } = held;
  let st: 'OK' | 'ESTALE' = 'ESTALE';
  const set = async () =>
    (st = await hugePmdSetUnlock(ctx.store, pid, {
      value: lease.value,
      token: lease.token,
      hvpn,
      order: hpageOrder(ctx),
      entry,
      keep,
      incarnation: ctx.incarnation,
      ptes,
    }));
  if (keep) await set();
  else await lease.release(async () => (await set()) === 'OK');
  if (st === 'ESTALE') {
    if (keep) await lease.release(async () => false);
    traceUnlock(ctx, held, false);
    throw staleLease(ctx, held, 'set_pmd_at');
  }
  if (entry)
    ctx.tracer.emit({
      kind: 'pte.set',
      op,
      pid,
      addr: hvpn * PAGE_SIZE,
      pfn: entry.pfn,
      gen: entry.gen,
      writable: entry.w === 1,
      lock: PAGE_TABLE_LOCK,
      token: lease.token,
    });
  for (const p of ptes)
    ctx.tracer.emit({
      kind: 'pte.set',
      op,
      pid,
      addr: p.vpn * PAGE_SIZE,
      pfn: p.pfn,
      gen: p.gen,
      writable: p.writable,
      lock: PAGE_TABLE_LOCK,
      token: lease.token,
    });
  if (!keep) traceUnlock(ctx, held, true);
}

/** The seed's THP call sites (libs/protocol eras: each era gives their ordering). */
type ThpSite = Extract<
  SeedSite,
  | 'do_huge_pmd_wp_page'
  | 'do_huge_pmd_wp_page_fallback'
  | '__split_huge_page_splitting'
  | 'collapse_huge_page'
>;

/** One huge pmd update as hugePmdNotified runs it. */
interface HugePmdSection<T> {
  /** spin_lock + pmd_same (+ the clear): null → the entry changed, no lock held */
  lock(): Promise<HeldPmd | null>;
  /** the new entry or PTEs, then spin_unlock unless keep */
  set(held: HeldLock, keep: boolean): Promise<T>;
  /**
   * The range invalidate_range_end is given (default: mmun_start/mmun_end, unchanged): only
   * the thp-fallback-haddr injection passes another one.
   */
  endRange?: (mmunStart: number, mmunEnd: number) => [number, number];
}

/**
 * The era's placement of a huge pmd update's notifier calls — the ONE place every THP path
 * (do_huge_pmd_wp_page, do_huge_pmd_wp_page_fallback, __split_huge_page_splitting,
 * collapse_huge_page) takes its order from:
 *
 *   v3.7 (the seed)                              v3.6
 *   mmun_start = haddr, mmun_end = + HPAGE
 *   invalidate_range_start(mmun_start, _end)
 *   spin_lock(&mm->page_table_lock)              spin_lock(&mm->page_table_lock)
 *   pmd_same? no → unlock, goto out_mn           pmd_same? no → unlock, out
 *   pmdp_clear_flush (clear, TLB shootdown)      pmdp_clear_flush_notify: range_start, clear,
 *                                                  TLB shootdown, range_end — UNDER the lock
 *   set_pmd_at / the PTEs                        set_pmd_at / the PTEs
 *   spin_unlock                                  spin_unlock
 *   out_mn: invalidate_range_end(mmun_start, _end)
 *
 * v3.7's end gets the values saved before the start on every exit, the pmd-changed one
 * included (the seed's out_mn / out_free_pages). v3.6 could not sleep in any callback
 * (rcu_read_lock): legacy shows what a sleeping subscriber would have done there
 * (no-sleep-under-ptlock). → the section's result, or null when the entry changed.
 */
async function hugePmdNotified<T>(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  event: MnEvent,
  site: ThpSite,
  s: HugePmdSection<T>,
): Promise<T | null> {
  // the era's ordering of this site (eras.ts): v3.6 range-under-ptl, v3.7 range-outside-ptl
  const legacy = notifyOf(ctx, site) === 'range-under-ptl';
  const mmunStart = hvpn * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = mmunStart + hpageNr(ctx) * PAGE_SIZE; /* For mmu_notifiers */
  const flush = (held: HeldPmd) => flushTlbRange(ctx, op, pid, mmunStart, mmunEnd, held.cpumask);
  if (!legacy) {
    const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, event);
    let out: T | null;
    try {
      out = await withinRange(range, async () => {
        await crashPoint(ctx, `${site}.range_started`);
        const held = await s.lock();
        if (!held) return null; // out_mn
        try {
          // the huge entry cleared (pmdp_clear_flush), its successor not set yet
          await crashPoint(ctx, `${site}.ptl_held`, held);
          await underPtl(held, () => flush(held));
        } catch (e) {
          await ptlUnlock(ctx, held);
          throw e;
        }
        const r = await s.set(held, false);
        await crashPoint(ctx, `${site}.set`);
        return r;
      });
    } finally {
      const [endStart, endEnd] = s.endRange?.(mmunStart, mmunEnd) ?? [mmunStart, mmunEnd];
      if (range) await invalidateRangeEnd(ctx, range, endStart, endEnd);
    }
    await crashPoint(ctx, `${site}.range_ended`);
    return out;
  }
  const held = await s.lock();
  if (!held) return null;
  let out: T;
  try {
    // pmdp_clear_flush_notify() / pmdp_splitting_flush_notify(), v3.6: all under the lock
    await underPtl(held, async () => {
      const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, event);
      try {
        await withinRange(range, () => flush(held));
      } finally {
        if (range) await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
      }
    });
    out = await s.set(held, true);
  } catch (e) {
    await ptlUnlock(ctx, held);
    throw e;
  }
  await ptlUnlock(ctx, held);
  return out;
}

/**
 * Models: do_huge_pmd_wp_page(), mm/huge_memory.c — v3.7 (patched) and v3.6 (legacy). A write
 * to a read-only huge entry (after fork: shared with the child, copy_huge_pmd write-protected
 * both). Mapped once (page_mapcount == 1): made writable in place under the lock, no notifier
 * (a permission upgrade). Otherwise a new huge page, a copy of the old one (copy_user_huge_page,
 * no lock held), replaces the entry in hugePmdNotified's order; the old page's mapping reference
 * goes after the end (v3.7 drops it under the lock: its last reference is never this one — the
 * entry still mapped it — and the subscribers let go of it at range_start). No huge page free:
 * do_huge_pmd_wp_page_fallback (thp_fault_fallback counted).
 *
 * Inject `thp-single-address` replays the 2017 regression (c7ab0d2fdc84, fixed in v4.13): no
 * range, one invalidate_page at the huge page's address after the unlock — a subscriber keeps
 * its translations of every other subpage of the replaced page.
 *
 * → the subpage of vpn now mapped writable, or null (the entry changed: fault again).
 */
export async function doHugePmdWpPage(
  ctx: MmContext,
  f: HugeWpFault,
): Promise<{
  pfn: number;
  gen: number;
  writable: true;
  kind: 'thp-reuse' | 'thp-copy' | 'thp-fallback';
} | null> {
  const { op, pid, vpn, hvpn, head, seq, agent, mmapSem } = f;
  const addr = hvpn * PAGE_SIZE;
  const order = hpageOrder(ctx);
  const old = { pfn: head.pfn, gen: head.gen, w: 0 };
  const sub = (p: Frame) => ({ pfn: p.pfn + (vpn - hvpn), gen: p.gen, writable: true as const });
  // page_mapcount(page) == 1: reuse in place (reuseSwapPage reads the head's mapcount: the
  // number of huge entries mapping it; a compound page is never in the swap cache)
  if ((await ctx.store.reuseSwapPage(head.pfn, head.gen)).reuse) {
    const held = await hugePmdLockFor(ctx, op, pid, hvpn, old, {
      seq,
      agent,
      mmapSem,
      clear: false,
    });
    if (!held) return null;
    await hugeSetUnlock(ctx, held, hvpn, { ...old, w: 1 }, [], false);
    ctx.tracer.emit({ kind: 'thp', op, pid, addr, event: 'reuse', ...head, order });
    return { ...sub(head), kind: 'thp-reuse' };
  }
  // alloc_hugepage_vma + copy_user_huge_page: one script, no lock held; recorded with the put
  // of head its install owes
  const alloc = await allocHuge(
    ctx,
    op,
    framesOf(ctx, head).map((x) => x.pfn),
    { pid, hvpn, olds: [{ pfn: head.pfn, gen: head.gen }] },
  );
  if (alloc) await crashPoint(ctx, 'do_huge_pmd_wp_page.allocated');
  if (!alloc) {
    const fallbacks = countVmEvent(ctx, 'cow');
    ctx.tracer.emit({
      kind: 'thp',
      op,
      pid,
      addr,
      event: 'cow-fallback',
      ...head,
      order,
      fallbacks,
    });
    const r = await doHugePmdWpPageFallback(ctx, f);
    return r && { ...r, kind: 'thp-fallback' };
  }
  const { page } = alloc;
  const single = injected(ctx, 'thp-single-address');
  let installed = false;
  try {
    const section: HugePmdSection<true> = {
      lock: () => hugePmdLockFor(ctx, op, pid, hvpn, old, { seq, agent, mmapSem, clear: true }),
      set: async (held, keep) => {
        await hugeSetUnlock(ctx, held, hvpn, { ...page, w: 1 }, [], keep);
        installed = true;
        return true;
      },
    };
    const done = single
      ? await singleAddressUpdate(ctx, op, pid, hvpn, section)
      : await hugePmdNotified(ctx, op, pid, hvpn, 'clear', 'do_huge_pmd_wp_page', section);
    if (!done) return null;
  } catch (e) {
    // failed after the install (a range end): the record still ends, with the put it owes
    if (installed) await hugeEnd(ctx, op, alloc, true);
    throw e;
  } finally {
    if (!installed) await hugeEnd(ctx, op, alloc, false);
  }
  ctx.tracer.emit({ kind: 'thp', op, pid, addr, event: 'copy', ...page, order });
  // put_page(page): the old huge page's mapping (freed whole if it was the last), as the
  // record owes it
  await hugeEnd(ctx, op, alloc, true);
  return { ...sub(page), kind: 'thp-copy' };
}

/**
 * The 2017 regression as inject `thp-single-address` replays it (c7ab0d2fdc84, v4.11 → v4.13):
 * the huge entry replaced under the lock with no range around it, then ONE invalidate_page at
 * the huge page's address — a subscriber drops the translation of that one subpage and keeps
 * the others'.
 */
async function singleAddressUpdate(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  s: HugePmdSection<true>,
): Promise<true | null> {
  const held = await s.lock();
  if (!held) return null;
  try {
    await underPtl(held, () =>
      flushTlbRange(
        ctx,
        op,
        pid,
        hvpn * PAGE_SIZE,
        (hvpn + hpageNr(ctx)) * PAGE_SIZE,
        held.cpumask,
      ),
    );
  } catch (e) {
    await ptlUnlock(ctx, held);
    throw e;
  }
  await s.set(held, false);
  await invalidatePage(ctx, op, pid, hvpn * PAGE_SIZE);
  return true;
}

/**
 * Models: do_huge_pmd_wp_page_fallback(), mm/huge_memory.c — v3.7 (patched) and v3.6 (legacy).
 * No huge page for the COW: HPAGE_PMD_NR small pages, each a copy of its subpage
 * (copy_user_highpage), allocated before any lock or notifier — when one cannot be had the
 * others go back and the fault fails (VM_FAULT_OOM: ENOMEM; v3.7 returns before its range
 * start, so no end is owed). Then, in hugePmdNotified's order, the huge entry is cleared and
 * replaced by small writable PTEs (pgtable_trans_huge_withdraw + pmd_populate) under
 * page_table_lock; the pmd-changed exit (out_free_pages) unlocks, ends the range with the
 * values saved before the start, and frees the copies. After the end, put_page(page).
 *
 * Inject `thp-fallback-haddr` replays the V1 bug Andrew Morton found in review: the PTE loop
 * advanced haddr (haddr += PAGE_SIZE per subpage) and the end was sent with haddr, i.e. the
 * NEXT huge range — its start is never ended (paired-range), and a subscriber that pairs by
 * range (ib_umem_odp's notifiers_count) keeps the MR inside an invalidation: its faults stall.
 */
export async function doHugePmdWpPageFallback(
  ctx: MmContext,
  f: HugeWpFault,
): Promise<{ pfn: number; gen: number; writable: true } | null> {
  const { op, pid, vpn, hvpn, head, seq, agent, mmapSem } = f;
  const old = { pfn: head.pfn, gen: head.gen, w: 0 };
  const n = hpageNr(ctx);
  const pages: Frame[] = [];
  try {
    // each a copy of its subpage, tagged pending for pid's vpn (the first one owes the put of
    // the huge page once installed: pagesInstalled, or a reaper finding it in a PTE)
    for (let i = 0; i < n; i++)
      pages.push(await allocFallbackPage(ctx, op, pid, hvpn + i, head, i));
  } catch (e) {
    // the allocation-failure exit: before the range start — nothing to end
    await putPending(ctx, op, pages);
    throw MmlabError.wrap(e);
  }
  const HPAGE = n * PAGE_SIZE;
  let installed = false;
  try {
    await crashPoint(ctx, 'do_huge_pmd_wp_page_fallback.allocated');
    const done = await hugePmdNotified(
      ctx,
      op,
      pid,
      hvpn,
      'clear',
      'do_huge_pmd_wp_page_fallback',
      {
        lock: () => hugePmdLockFor(ctx, op, pid, hvpn, old, { seq, agent, mmapSem, clear: true }),
        set: async (held, keep) => {
          const ptes = pages.map((p, i) => ({ vpn: hvpn + i, ...p, writable: true }));
          await hugeSetUnlock(ctx, held, hvpn, null, ptes, keep);
          installed = true;
          return true;
        },
        // the V1 bug: `haddr += PAGE_SIZE` in the PTE loop, then range_end(mm, haddr, haddr + HPAGE)
        endRange: injected(ctx, 'thp-fallback-haddr')
          ? (s, e) => [s + HPAGE, e + HPAGE]
          : undefined,
      },
    );
    if (!done) return null;
  } catch (e) {
    // failed after the install (a range end): the copies' tags still go, with the put owed
    if (installed) await ctx.store.pagesInstalled(ctx.incarnation, pages);
    throw e;
  } finally {
    // out_free_pages: the copies go back
    if (!installed) await putPending(ctx, op, pages);
  }
  // put_page(page): the huge page's mapping, as the first copy's tag owes it
  const freed = await ctx.store.pagesInstalled(ctx.incarnation, pages);
  traceFreed(ctx, op, freed, [head]);
  const p = pages[vpn - hvpn];
  return { pfn: p.pfn, gen: p.gen, writable: true };
}

/**
 * A fallback's copy of subpage i of head for pid's vpn: alloc_page + copy_user_highpage, tagged
 * pending ({mem}:pending: allocPage with the fault) — the first copy's tag names head as the
 * page its install owes a put (the one put_page(page) of the huge page's mapping); the others
 * owe nothing. The copy's data is subpage i's.
 */
async function allocFallbackPage(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  head: Frame,
  i: number,
): Promise<Frame> {
  const src = { pfn: head.pfn + i, gen: head.gen };
  if (i === 0) return allocPage(ctx, op, src, { pid, vpn });
  const f = await ctx.store.allocPage(src.pfn, 1, {
    owner: ctx.incarnation,
    pid,
    vpn,
    old: null,
  });
  if (!f) throw new MmlabError('ENOMEM', 'no free frame');
  ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: f.pfn, gen: f.gen });
  return f;
}

/**
 * Models: zap_huge_pmd(), mm/huge_memory.c v3.7 (from zap_pmd_range: called inside the caller's
 * invalidate_range_start/end, like zap_pte_range) — every huge entry of pid inside
 * [startVpn, endVpn) cleared under page_table_lock, the CPU TLBs shot down, then (tlb_finish_mmu)
 * each huge page's mapping put: freed whole when it was the last. One the range only meets is
 * split first (zap_pmd_range's split_huge_page_pmd, when next - addr != HPAGE_PMD_SIZE). Nothing
 * is locked when pid has no huge entry in the range. → the huge pages' frames zapped and freed.
 */
export async function zapHugePmdRange(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
): Promise<{ zapped: number; freed: number }> {
  const n = hpageNr(ctx);
  // zap_pmd_range(): a huge entry the range only cuts is split first (split_huge_page_pmd)
  await splitHugePmdRange(ctx, op, pid, startVpn, endVpn, 'partial');
  const { entries } = await hugePmds(ctx.store, pid);
  const meets = entries.filter((x) => x.hvpn < endVpn && x.hvpn + n > startVpn);
  if (meets.length === 0) return { zapped: 0, freed: 0 };
  const held = await ptlLock(ctx, pid, PAGE_TABLE_LOCK, op);
  // an operation with an intent record (munmap, exit, ...): the heads cleared are recorded in it
  const intent = ctx.intents.get(op);
  let cleared: ThpEntry[] = [];
  try {
    const r = await underPtl(held, async () => {
      const z = await zapHugePmd(
        ctx.store,
        pid,
        held.lease.value,
        held.lease.token,
        startVpn,
        endVpn,
        intent && { id: intent.id, owner: intent.owner },
      );
      if (!z) throw staleLease(ctx, held, 'zap_huge_pmd');
      if (z.cleared.length) await crashPoint(ctx, 'zap_huge_pmd.cleared', held);
      for (const c of z.cleared)
        ctx.tracer.emit({
          kind: 'pte.clear',
          op,
          pid,
          addr: c.hvpn * PAGE_SIZE,
          pfn: c.pfn,
          gen: c.gen,
          lock: PAGE_TABLE_LOCK,
          token: held.lease.token,
        });
      if (z.cleared.length)
        await flushTlbRange(ctx, op, pid, startVpn * PAGE_SIZE, endVpn * PAGE_SIZE, z.cpumask);
      return z;
    });
    cleared = r.cleared;
    if (r.partial.length)
      throw new MmlabError(
        'EINTERNAL',
        `zap of [${startVpn}, ${endVpn}) of pid ${pid} meets huge entries ${r.partial.join(', ')} partly: split first`,
      );
  } finally {
    await ptlUnlock(ctx, held);
    for (const c of cleared)
      ctx.tracer.emit({
        kind: 'thp',
        op,
        pid,
        addr: c.hvpn * PAGE_SIZE,
        event: 'zap',
        pfn: c.pfn,
        gen: c.gen,
        order: hpageOrder(ctx),
      });
  }
  // tlb_finish_mmu() next: the cleared huge pages' mappings are put (under an intent: as its
  // batch, applied once — a taker puts what the record still lists)
  if (cleared.length) await crashPoint(ctx, 'zap_huge_pmd.flushed');
  const heads = cleared.map((c) => ({ pfn: c.pfn, gen: c.gen }));
  const freed = heads.length
    ? intent
      ? await putCleared(ctx, op, heads, false)
      : await putPages(ctx, op, heads, 'map')
    : 0;
  return { zapped: cleared.length * n, freed };
}

/**
 * Models: copy_huge_pmd(), mm/huge_memory.c v3.7 — fork's copy of pid's huge entries inside
 * [startVpn, endVpn) (a private VMA; called inside copy_page_range's invalidate_range_start/end):
 * under the parent's page_table_lock each entry is write-protected (pmdp_set_wrprotect), the
 * child's reference taken (get_page: the head's mapcount and refcount), the parent's TLBs shot
 * down; then the child's entries are set (set_pmd_at). Both share the page read-only: a write
 * breaks COW through do_huge_pmd_wp_page.
 */
export async function copyHugePmdRange(
  ctx: MmContext,
  op: string,
  src: number,
  dst: number,
  startVpn: number,
  endVpn: number,
  forker: string,
): Promise<void> {
  const { entries } = await hugePmds(ctx.store, src);
  const n = hpageNr(ctx);
  if (!entries.some((x) => x.hvpn < endVpn && x.hvpn + n > startVpn)) return;
  const held = await ptlLock(ctx, src, PAGE_TABLE_LOCK, op);
  let child: ThpEntry[] = [];
  try {
    child = await underPtl(held, async () => {
      const r = await copyHugePmd(
        ctx.store,
        src,
        held.lease.value,
        held.lease.token,
        startVpn,
        endVpn,
      );
      if (!r) throw staleLease(ctx, held, 'copy_huge_pmd');
      const bad = await ctx.store.getPagesBatch(
        r.child.map((c) => ({ pfn: c.pfn, gen: c.gen })),
        'map',
        '',
      );
      if (bad === 'UNDONE' || bad === 'DONE' || bad.length)
        throw new MmlabError('EINTERNAL', `copy_huge_pmd found dead huge pages of pid ${src}`);
      if (r.writeProtected)
        await flushTlbRange(ctx, op, src, startVpn * PAGE_SIZE, endVpn * PAGE_SIZE, r.cpumask);
      return r.child;
    });
  } finally {
    await ptlUnlock(ctx, held);
  }
  if (!(await setHugePmds(ctx.store, dst, forker, hpageOrder(ctx), child)))
    throw new MmlabError('ESTALE', `fork of pid ${src} was taken over and rolled back`);
  for (const c of child) {
    const addr = c.hvpn * PAGE_SIZE;
    ctx.tracer.emit({
      kind: 'pte.set',
      op,
      pid: dst,
      addr,
      pfn: c.pfn,
      gen: c.gen,
      writable: false,
      lock: PAGE_TABLE_LOCK,
      token: null,
    });
    ctx.tracer.emit({
      kind: 'thp',
      op,
      pid: dst,
      addr,
      event: 'copy-pmd',
      pfn: c.pfn,
      gen: c.gen,
      order: hpageOrder(ctx),
    });
  }
}

/**
 * Models: split_huge_page(), mm/huge_memory.c v3.7 — the huge page pid maps at hvpn becomes
 * 2^order small pages in every address space mapping it (the anon_vma rmap walk: here, a scan of
 * the processes' huge entries for its head). For each mapping, __split_huge_page_splitting and
 * __split_huge_page_map in one page_table_lock section, in hugePmdNotified's order:
 *
 *   v3.7 (the seed, via page_check_address_pmd)   v3.6
 *   invalidate_range_start(address, + HPAGE)
 *   spin_lock(&mm->page_table_lock)               spin_lock(&mm->page_table_lock)
 *   pmdp_splitting_flush                          pmdp_splitting_flush_notify: range
 *                                                   start/end around the flush, under the lock
 *   the PTEs of every subpage (pmd_populate)      the PTEs of every subpage
 *   spin_unlock                                   spin_unlock
 *   invalidate_range_end(address, + HPAGE)
 *
 * then __split_huge_page_refcount: the compound page dissolved, each frame mapped as often as the
 * head was. v3.7 runs the splitting and the map as two lock sections around the refcount split
 * (the pmd marked splitting in between); mmlab does both at once, the entry marked cleared
 * (w = 3: a fault finding it waits for page_table_lock). mmap_sem is not needed (the kernel
 * holds the anon_vma lock): a split during a munmap, mprotect or mremap of pid is theirs.
 * → the number of huge entries split (0: none at hvpn).
 */
export async function splitHugePage(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
): Promise<number> {
  const { entries } = await hugePmds(ctx.store, pid);
  const mine = entries.find((x) => x.hvpn === hvpn);
  if (!mine) return 0;
  const head: Frame = { pfn: mine.pfn, gen: mine.gen };
  // recorded before the first mapping is split (crash recovery: a reaper finishes it)
  const rec = `${ctx.incarnation}:${op}:s${++hugeRecords}`;
  if (!(await splitRecordOpen(ctx.store, rec, ctx.incarnation, pid, hvpn, head))) return 0;
  return splitMappings(ctx, op, head, { rec, owner: ctx.incarnation });
}

/**
 * split_huge_page()'s rmap walk and its end: every huge entry naming head (in every process) is
 * split in hugePmdNotified's order, then __split_huge_page_refcount dissolves head — with the
 * end of the split record rec of owner (this replica's, or a dead one's a reaper finishes:
 * orphan_ranges.ts). → the number of entries split here.
 */
export async function splitMappings(
  ctx: MmContext,
  op: string,
  head: Frame,
  record: { rec: string; owner: string },
): Promise<number> {
  // page_lock_anon_vma + the rmap walk: every huge entry naming the head
  const mappers: Array<{ pid: number; entry: ThpEntry }> = [];
  for (const p of await ctx.store.processes()) {
    for (const x of (await hugePmds(ctx.store, p)).entries)
      if (x.pfn === head.pfn && x.gen === head.gen) mappers.push({ pid: p, entry: x });
  }
  const n = hpageNr(ctx);
  let split = 0;
  for (const m of mappers) {
    const { entry } = m;
    const old = { pfn: entry.pfn, gen: entry.gen, w: entry.w === 3 ? 0 : entry.w };
    const done = await hugePmdNotified(
      ctx,
      op,
      m.pid,
      entry.hvpn,
      'clear',
      '__split_huge_page_splitting',
      {
        lock: () =>
          hugePmdLockFor(ctx, op, m.pid, entry.hvpn, old, {
            seq: '',
            agent: '',
            mmapSem: '*',
            clear: true,
          }),
        set: async (held, keep) => {
          const ptes = Array.from({ length: n }, (_, i) => ({
            vpn: entry.hvpn + i,
            pfn: head.pfn + i,
            gen: head.gen,
            writable: old.w === 1,
          }));
          await hugeSetUnlock(ctx, held, entry.hvpn, null, ptes, keep);
          return true;
        },
      },
    );
    if (done) {
      split++;
      ctx.tracer.emit({
        kind: 'thp',
        op,
        pid: m.pid,
        addr: entry.hvpn * PAGE_SIZE,
        event: 'split',
        ...head,
        order: hpageOrder(ctx),
      });
    }
  }
  // __split_huge_page_map() done in every mapping; __split_huge_page_refcount() next
  if (split > 0) await crashPoint(ctx, 'split_huge_page.mapped');
  // __split_huge_page_refcount(): the compound page dissolved once no huge entry names it (a
  // reaper finishing a dead split may find every mapping split already), the record ended in
  // the same step; one still mapped huge (its entry changed under us) stays whole, the record
  // ends alone (no head to dissolve)
  const whole = mappers.length > split && (await stillMapped(ctx, head));
  await splitHugePageRefcount(ctx.store, whole ? NO_HEAD : head, record);
  return split;
}

/** No compound head: splitHugePageRefcount then only ends its record. */
const NO_HEAD: Frame = { pfn: 0, gen: 0 };

/** Does a huge entry of any process still name head? */
async function stillMapped(ctx: MmContext, head: Frame): Promise<boolean> {
  for (const p of await ctx.store.processes())
    if (
      (await hugePmds(ctx.store, p)).entries.some((x) => x.pfn === head.pfn && x.gen === head.gen)
    )
      return true;
  return false;
}

/**
 * split_huge_page_pmd() of every huge entry of pid that meets [startVpn, endVpn) — all of them
 * (whole: mprotect and mremap, which in v3.7 change or move a whole huge entry in place:
 * change_huge_pmd / move_huge_pmd; mmlab splits instead) or only those it cuts (a munmap or
 * madvise of part of one: zap_pmd_range). → the number split.
 */
export async function splitHugePmdRange(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
  which: 'all' | 'partial',
): Promise<number> {
  const { entries } = await hugePmds(ctx.store, pid);
  const n = hpageNr(ctx);
  let split = 0;
  for (const x of entries) {
    if (x.hvpn >= endVpn || x.hvpn + n <= startVpn) continue;
    const inside = x.hvpn >= startVpn && x.hvpn + n <= endVpn;
    if (which === 'partial' && inside) continue;
    split += await splitHugePage(ctx, op, pid, x.hvpn);
  }
  return split;
}

/**
 * The `thp.split` step: split_huge_page() of the huge page pid maps at addr (every mapping of
 * it), as a kernel caller (reclaim's add_to_swap, KSM, migration) would. Under mmap_sem for
 * read, so that no munmap or mremap moves the range meanwhile. EINVAL when no huge page is there.
 */
export async function sysThpSplit(
  ctx: MmContext,
  pid: number,
  addr: number,
): Promise<{ pfn: number; gen: number; split: number }> {
  const op = ctx.ids.next('thp.split');
  const vpn = Math.floor(addr / PAGE_SIZE);
  const hvpn = vpn - (vpn % hpageNr(ctx));
  const sem = await mmapReadLock(ctx, pid, op);
  try {
    const e = (await hugePmds(ctx.store, pid)).entries.find((x) => x.hvpn === hvpn);
    if (!e)
      throw new MmlabError(
        'EINVAL',
        `no transparent huge page at 0x${addr.toString(16)} of pid ${pid}`,
      );
    const split = await splitHugePage(ctx, op, pid, hvpn);
    return { pfn: e.pfn, gen: e.gen, split };
  } finally {
    await mmapReadUnlock(ctx, sem);
  }
}

/**
 * Models: collapse_huge_page(), mm/huge_memory.c — v3.7 (patched) and v3.6 (legacy): one
 * khugepaged pass over the 2^order-aligned range around addr of pid (the `thp.collapse` step).
 * Under mmap_sem for write (khugepaged's down_write after hugepage_vma_check): the range must lie
 * in one anonymous private VMA with every PTE present and mapping an ordinary page mapped once
 * (__collapse_huge_page_isolate: no swap entry, no zero page, no shared page — mapcount 1, read
 * by reuseSwapPage; unlike v3.7, whose page_count check also refuses a pinned page, a pin is not
 * looked at yet). A new huge page
 * is allocated first (no huge page: ENOMEM, nothing changed); then, in hugePmdNotified's order
 * (v3.7: range start/end over the huge range around page_table_lock and pmdp_clear_flush; v3.6:
 * pmdp_clear_flush_notify under it), the small pages' PTEs are cleared and their contents copied
 * (__collapse_huge_page_copy, at that point: the PTEs are gone, nobody can write them) and the
 * huge entry set; after the end the small pages are freed. mmlab clears the PTEs under
 * page_table_lock instead of the split PTE lock (the range's PTEs and its huge entry change in
 * one script).
 */
export async function collapseHugePage(
  ctx: MmContext,
  pid: number,
  addr: number,
): Promise<{ pfn: number; gen: number }> {
  const op = ctx.ids.next('thp.collapse');
  if (thpFaultOrder(ctx) === 0)
    throw new MmlabError('EINVAL', 'khugepaged runs only with thp: always');
  const n = hpageNr(ctx);
  const vpn = Math.floor(addr / PAGE_SIZE);
  const hvpn = vpn - (vpn % n);
  const sem = await mmapWriteLock(ctx, pid, op);
  try {
    // hugepage_vma_check + __collapse_huge_page_isolate, read before the lock (checked again
    // under it by the script: pte_same for each)
    const vma = await ctx.store.findVma(pid, hvpn);
    if (
      !vma ||
      vma.shared ||
      vma.file ||
      vma.prot === 'none' ||
      hvpn < vma.start ||
      hvpn + n > vma.end
    )
      throw new MmlabError(
        'EINVAL',
        `[0x${(hvpn * PAGE_SIZE).toString(16)}, +${n} pages) is not in one anonymous private VMA`,
      );
    if ((await hugePmds(ctx.store, pid)).entries.some((x) => x.hvpn === hvpn))
      throw new MmlabError('EINVAL', `0x${(hvpn * PAGE_SIZE).toString(16)} is a huge page already`);
    const table = await ctx.store.pageTable(pid);
    const small: Array<{ vpn: number; pfn: number; gen: number; writable: boolean }> = [];
    for (let i = 0; i < n; i++) {
      const p = table.get(hvpn + i);
      if (!p || p.swap || p.file || p.protnone || p.cowCleared || p.pfn === 0)
        throw new MmlabError(
          'EINVAL',
          `vpn ${hvpn + i} of pid ${pid} has no page khugepaged can take`,
        );
      const r = await ctx.store.reuseSwapPage(p.pfn, p.gen);
      if (!r.reuse)
        throw new MmlabError('EINVAL', `pfn ${p.pfn} at vpn ${hvpn + i} is shared: not collapsed`);
      small.push({ vpn: hvpn + i, pfn: p.pfn, gen: p.gen, writable: p.writable });
    }
    // the huge page, recorded with the puts of the small pages its install owes
    const alloc = await allocHuge(ctx, op, [], {
      pid,
      hvpn,
      olds: small.map((p) => ({ pfn: p.pfn, gen: p.gen })),
    });
    if (!alloc) throw new MmlabError('ENOMEM', 'no huge page free for khugepaged');
    const { page } = alloc;
    let installed = false;
    try {
      await crashPoint(ctx, 'collapse_huge_page.allocated');
      const w = vma.prot === 'rw' ? 1 : 0;
      const done = await hugePmdNotified(ctx, op, pid, hvpn, 'clear', 'collapse_huge_page', {
        lock: () => collapseLock(ctx, op, pid, hvpn, small, sem.lease.value),
        set: async (held, keep) => {
          // __collapse_huge_page_copy: the small pages' words into the huge page, then the
          // huge entry over the cleared range
          for (const [i, p] of small.entries()) await ctx.store.copyPage(p.pfn, page.pfn + i, null);
          await hugeSetUnlock(ctx, held, hvpn, { ...page, w }, [], keep);
          installed = true;
          return true;
        },
      });
      if (!done) throw new MmlabError('EAGAIN', `the range of pid ${pid} changed under khugepaged`);
    } catch (e) {
      // failed after the install (a range end): the record still ends, with the puts it owes
      if (installed) await hugeEnd(ctx, op, alloc, true);
      throw e;
    } finally {
      if (!installed) await hugeEnd(ctx, op, alloc, false);
    }
    ctx.tracer.emit({
      kind: 'thp',
      op,
      pid,
      addr: hvpn * PAGE_SIZE,
      event: 'collapse',
      ...page,
      order: hpageOrder(ctx),
    });
    // release_pte_pages / the old pages freed, as the record owes them
    await hugeEnd(ctx, op, alloc, true);
    return page;
  } finally {
    await mmapWriteUnlock(ctx, sem);
  }
}

/** collapse_huge_page()'s spin_lock + pte_same + clear of the small PTEs (spins while held). */
async function collapseLock(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  small: ReadonlyArray<{ vpn: number; pfn: number; gen: number; writable: boolean }>,
  semValue: string,
): Promise<HeldPmd | null> {
  const t0 = now();
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  for (let attempt = 1; ; attempt++) {
    const r = await collapseLockScript(ctx.store, pid, {
      hvpn,
      order: hpageOrder(ctx),
      owner: ownerOf(ctx, op),
      ttlMs: ctx.env.MMLAB_LEASE_TTL_MS,
      semValue,
      incarnation: ctx.incarnation,
      ptes: small,
    });
    if (r.r === 'OK') {
      const held = heldPtl(ctx, pid, PAGE_TABLE_LOCK, op, r.token, t0);
      for (const p of small)
        ctx.tracer.emit({
          kind: 'pte.clear',
          op,
          pid,
          addr: p.vpn * PAGE_SIZE,
          pfn: p.pfn,
          gen: p.gen,
          lock: PAGE_TABLE_LOCK,
          token: r.token,
        });
      return { ...held, cpumask: r.cpumask };
    }
    if (r.r === 'FENCED') {
      ctx.onFenced?.();
      throw new MmlabError('ESTALE', `${ctx.incarnation} was fenced off pid ${pid}`);
    }
    if (r.r === 'BUSY') {
      await backoff(attempt, deadline, `${PAGE_TABLE_LOCK} of pid ${pid}`);
      continue;
    }
    return null;
  }
}
