/**
 * mm/hugetlb.c (v3.7, and v3.6 where hugetlb_cow orders its notifier calls differently):
 * hugetlbfs mappings (MAP_HUGETLB) backed by the pool reserved at boot (config hugetlbPages,
 * MMLAB_HUGETLB_PAGES, of 2^hugePageOrder frames each: keys.ts {mem}:hugetlb).
 *
 * A huge page is mapped by ONE huge entry ({p:<pid>}:hugetlb), written only under
 * mm->page_table_lock (ptl:mm, a lease with a fencing token); a CPU or a device (gup) faulting
 * any 4 KiB page of it gets that subpage (head pfn + index), all subpages carrying the huge
 * page's gen. No reservation is modelled (hugetlb_reserve_pages): mmap always succeeds, and a
 * fault that finds the pool empty is SIGBUS (hugetlb_no_page's VM_FAULT_SIGBUS from
 * alloc_huge_page), as a MAP_NORESERVE mapping's is. Pool pages are on no LRU list: reclaim
 * never sees them.
 *
 * A MAP_SHARED hugetlb mapping has no hugetlbfs file behind it here: its pages are shared by
 * the entries fork copies (copy_hugetlb_page_range), but a huge page neither process had
 * faulted before the fork is faulted separately by each (the kernel finds it in the file's page
 * cache). Scenarios share a hugetlb mapping by touching it before fork.
 *
 * Crash safety (issue 15): a pool page allocated by hugetlb_no_page or hugetlb_cow is recorded
 * in the allocation's step (hugetlbAlloc with a huge record, {mem}:pending u:<rec>, as THP's:
 * huge_memory.ts) and ended by its owner (hugeRecordEnd: hugetlb_cow's put of the old page once
 * the entry maps the copy, else the new page back to the pool), or by a survivor's reaper once
 * the owner is dead and fenced off the process (hugeFence reads the entry; orphan_ranges.ts).
 * hugetlb_cow's huge_ptep_clear_flush leaves the entry cleared with its old page kept (w = 3):
 * hugetlbLookup puts it back read-only once page_table_lock is free, so a COW that dies before
 * its set loses nothing. __unmap_hugepage_range records the pages it cleared in its operation's
 * intent (munmap, exit: hugetlbZap, "h<pfn>:<gen>"), put by whoever finishes the operation
 * (putCleared, once). A fork that fails half way leaves the huge entries it copied into the
 * tombstone child (fsck: exited-mm-mapped's hugetlb part).
 */
import { crashPoint } from './crash_point';
import { MmlabError, PAGE_SIZE, type Access, type Prot } from '@mmlab/protocol';
import {
  HugetlbStore,
  PAGE_TABLE_LOCK,
  type Pte,
  type Vma,
  hugeRecordEnd,
  oldsText,
} from '@mmlab/model';
import { type MmContext, backoff } from './context';
import { type HeldLock, ptlLock, ptlUnlock, underPtl } from './locks';
import { invalidateRangeEnd, invalidateRangeStart, withinRange } from './mmu_notifier';
import { flushTlbRange } from './tlbflush';
import { notifyOf } from './eras';
import type { FaultResult } from './memory';
import { putCleared } from './intent';

const LOCK = PAGE_TABLE_LOCK;

/** The hugetlbfs scripts of ctx's store. */
export const hugetlbStore = (ctx: MmContext): HugetlbStore => new HugetlbStore(ctx.store);

/** pages_per_huge_page(h): 2^hugePageOrder. */
export const pagesPerHugePage = (ctx: MmContext): number => 1 << ctx.env.MMLAB_HUGE_PAGE_ORDER;

/**
 * Models: hugetlb_hstate_alloc_pages() at boot, mm/hugetlb.c v3.7 — the pool, reserved right
 * after memory is formatted (apps/mm main.ts), before any frame is handed out. → nr_hugepages
 */
export function hugetlbReservePool(ctx: MmContext): Promise<number> {
  return hugetlbStore(ctx).format(ctx.env.MMLAB_HUGETLB_PAGES, ctx.env.MMLAB_HUGE_PAGE_ORDER);
}

/**
 * Models: do_mmap_pgoff(MAP_HUGETLB) → hugetlb_file_setup(), mm/mmap.c v3.7: a VMA whose start
 * is aligned to the huge page; its length must be a multiple of the huge page (EINVAL: the
 * kernel rounds a MAP_HUGETLB length up, mmlab refuses it so that a scenario says what it maps).
 */
export async function hugetlbMmap(
  ctx: MmContext,
  pid: number,
  pages: number,
  prot: Prot,
  shared: boolean,
): Promise<number> {
  const n = pagesPerHugePage(ctx);
  if (pages % n !== 0)
    throw new MmlabError(
      'EINVAL',
      `mmap: a hugetlb mapping is whole huge pages (${n} pages each), not ${pages} pages`,
    );
  const op = ctx.ids.next('mmap');
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  for (let attempt = 0; ; attempt++) {
    const r = await hugetlbStore(ctx).mmap(pid, pages, prot, shared, ctx.env.MMLAB_HUGE_PAGE_ORDER);
    switch (r.r) {
      case 'OK': {
        const start = r.start * PAGE_SIZE;
        ctx.tracer.emit({
          kind: 'vma.map',
          op,
          pid,
          start,
          end: start + pages * PAGE_SIZE,
          prot,
          flags: shared ? ['hugetlb', 'shared'] : ['hugetlb'],
        });
        return start;
      }
      case 'ESRCH':
        throw new MmlabError('ESRCH', `no process ${pid}`);
      case 'ENOMEM':
        throw new MmlabError('ENOMEM', `no room for ${pages} pages in pid ${pid}`);
      case 'BUSY':
        await backoff(attempt, deadline, `mmap_sem of pid ${pid}`);
    }
  }
}

/** The subpage of vpn in the huge page entry maps: what a CPU TLB or a device maps (4 KiB). */
const subpage = (entry: Pte, vpn: number, n: number): Pte => ({
  pfn: entry.pfn + (vpn % n),
  gen: entry.gen,
  writable: entry.writable,
});

/** The frame.alloc / frame.free events of every frame of a huge page. */
function traceFrames(
  ctx: MmContext,
  kind: 'frame.alloc' | 'frame.free',
  op: string,
  head: { pfn: number; gen: number },
): void {
  for (let i = 0; i < pagesPerHugePage(ctx); i++)
    ctx.tracer.emit({ kind, op, pfn: head.pfn + i, gen: head.gen });
}

/**
 * put_page() of huge pages: those whose last reference went are back in the pool (traced).
 * batch: a {mem}:once batch id ('' none: intent.ts putCleared). → the frames freed.
 */
export async function putHugetlbPages(
  ctx: MmContext,
  op: string,
  pages: Array<{ pfn: number; gen: number }>,
  batch: string,
): Promise<number> {
  if (pages.length === 0) return 0;
  const r = await hugetlbStore(ctx).put(pages, batch);
  if (r.bad.length)
    throw new MmlabError('EINTERNAL', `put of huge pages that are not in use: ${r.bad.join(', ')}`);
  for (const pfn of r.freed)
    traceFrames(
      ctx,
      'frame.free',
      op,
      pages.find((p) => p.pfn === pfn)!,
    );
  return r.freed.length * pagesPerHugePage(ctx);
}

/** pool pages of this process's huge records (hugetlbAlloc): a counter for their names. */
let hugeRecords = 0;

/**
 * alloc_huge_page() (+ copy_user_huge_page from copyFrom) for pid's entry at hvpn, recorded as a
 * huge record in the same step (olds: the page its install owes a put, hugetlb_cow's old page).
 */
async function allocRecorded(
  ctx: MmContext,
  pid: number,
  hvpn: number,
  copyFrom: { pfn: number; gen: number } | undefined,
): Promise<{ page: { pfn: number; gen: number }; rec: string } | null> {
  const rec = `${ctx.incarnation}:hugetlb:${++hugeRecords}`;
  const page = await hugetlbStore(ctx).alloc(copyFrom, {
    rec,
    owner: ctx.incarnation,
    pid,
    hvpn,
    olds: oldsText(copyFrom ? [copyFrom] : []),
  });
  return page && { page, rec };
}

/**
 * The end of a huge record of this replica's: installed — the put of the page it replaced (if
 * any); else the new page back to the pool. Ended already (a reaper took it) — nothing.
 */
async function endRecorded(
  ctx: MmContext,
  op: string,
  a: { page: { pfn: number; gen: number }; rec: string },
  installed: boolean,
  old: { pfn: number; gen: number } | null,
): Promise<void> {
  const r = await hugeRecordEnd(ctx.store, a.rec, ctx.incarnation, installed);
  if (!r) return;
  const named = r.installed ? (old ? [old] : []) : [a.page];
  for (const pfn of r.freed) {
    const p = named.find((x) => x.pfn === pfn);
    if (p) traceFrames(ctx, 'frame.free', op, p);
  }
}

/**
 * Models: hugetlb_fault(), mm/hugetlb.c v3.7 — a fault (CPU or get_user_pages) at vpn of a
 * hugetlb VMA. huge_pte_none: hugetlb_no_page() (a zeroed pool page, mapped by one entry under
 * page_table_lock; writable for a write to a private mapping — the kernel's immediate
 * hugetlb_cow finds it mapped once and makes it writable — and for a shared writable one).
 * A write to a read-only entry of a private mapping: hugetlb_cow(). Returns the subpage.
 */
export async function hugetlbFault(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  access: Access,
  agent: string,
  mmapSem: string,
  tries: { retries: number },
): Promise<FaultResult> {
  const n = pagesPerHugePage(ctx);
  const hvpn = vpn - (vpn % n);
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  const store = hugetlbStore(ctx);
  for (let retries = 0; ; tries.retries = ++retries) {
    if (retries > 0) await backoff(retries, deadline, `hugetlb fault at ${vpn} of pid ${pid}`);
    const look = await store.lookup(pid, vpn, hvpn, access, mmapSem, agent);
    switch (look.r) {
      case 'ESRCH':
        throw new MmlabError('ESRCH', `no process ${pid}`);
      case 'SIGSEGV':
        throw new MmlabError('SIGSEGV', `${access} at vpn ${vpn} in pid ${pid}`);
      case 'NOTHUGE':
      case 'BUSY':
        continue; // the VMA changed under us (munmap + mmap), or a lock holder: look again
      case 'NONE': {
        const vma = await ctx.store.findVma(pid, vpn);
        if (!vma?.hugetlb) continue;
        const pte = await hugetlbNoPage(ctx, op, pid, hvpn, access, vma, look.seq, mmapSem);
        if (!pte) continue;
        return { ...subpage(pte, vpn, n), kind: 'hugetlb', retries };
      }
      case 'PRESENT': {
        if (access === 'read' || look.pte.writable)
          return { ...subpage(look.pte, vpn, n), kind: 'hugetlb', retries };
        const vma = await ctx.store.findVma(pid, vpn);
        if (!vma?.hugetlb) continue;
        const cow = await hugetlbCow(ctx, op, pid, hvpn, look.pte, look.seq, mmapSem);
        if (!cow) continue;
        return { ...subpage(cow.pte, vpn, n), kind: cow.kind, retries };
      }
    }
  }
}

/**
 * Models: hugetlb_no_page(), mm/hugetlb.c v3.7 — alloc_huge_page() + clear_huge_page() with no
 * lock held, then under page_table_lock: still huge_pte_none? set_huge_pte_at(). The pool empty:
 * SIGBUS. Installed by another fault meanwhile (backout): the page goes back, null.
 */
async function hugetlbNoPage(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  access: Access,
  vma: Vma,
  seq: number,
  mmapSem: string,
): Promise<Pte | null> {
  const store = hugetlbStore(ctx);
  const alloc = await allocRecorded(ctx, pid, hvpn, undefined);
  if (!alloc)
    throw new MmlabError(
      'SIGBUS',
      `hugetlb fault at 0x${(hvpn * PAGE_SIZE).toString(16)} of pid ${pid}: the huge page pool is empty`,
    );
  const { page } = alloc;
  traceFrames(ctx, 'frame.alloc', op, page);
  const writable = vma.prot === 'rw' && (vma.shared || access === 'write');
  const pte: Pte = { ...page, writable };
  let installed = false;
  try {
    await crashPoint(ctx, 'hugetlb_no_page.allocated');
    const held = await ptlLock(ctx, pid, LOCK, op);
    try {
      const r = await store.setEntry(
        pid,
        held.lease,
        hvpn,
        null,
        pte,
        seq,
        mmapSem,
        ctx.incarnation,
      );
      if (r.r === 'ESTALE') throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${pid}`);
      if (r.r === 'ESRCH') throw new MmlabError('ESRCH', `no process ${pid}`);
      if (r.r === 'OK') {
        installed = true;
        ctx.tracer.emit({
          kind: 'pte.set',
          op,
          pid,
          addr: hvpn * PAGE_SIZE,
          ...pte,
          lock: LOCK,
          token: held.lease.token,
        });
        await crashPoint(ctx, 'hugetlb_no_page.set', held);
      }
    } finally {
      await ptlUnlock(ctx, held);
    }
  } finally {
    // installed: the record goes (nothing owed); else the page goes back to the pool with it
    await endRecorded(ctx, op, alloc, installed, null);
  }
  return installed ? pte : null;
}

/**
 * The era's hugetlb_cow (eras.ts: libs/protocol eras/, site hugetlb_cow): where its
 * invalidate_range_start/end go relative to mm->page_table_lock —
 *
 *   v3.7 (the seed)                              v3.6
 *   (lock held by hugetlb_fault: pte_same)       (lock held by hugetlb_fault: pte_same)
 *   unlock; alloc_huge_page; copy                unlock; alloc_huge_page; copy
 *   mmun_start/_end = the huge range
 *   invalidate_range_start(mmun_start, _end)
 *   lock; pte_same?                              lock; pte_same?
 *                                                  invalidate_range_start  ← under the lock
 *     huge_ptep_clear_flush; set_huge_pte_at       huge_ptep_clear_flush; set_huge_pte_at
 *                                                  invalidate_range_end    ← under the lock
 *   unlock
 *   invalidate_range_end(mmun_start, _end)
 *   lock (the caller expects it held)
 *   page_cache_release(new), (old)               page_cache_release(new), (old)
 *   (hugetlb_fault: unlock)                      (hugetlb_fault: unlock)
 */
const hugetlbCowOrder = (ctx: MmContext): 'v3.7' | 'v3.6' =>
  notifyOf(ctx, 'hugetlb_cow') === 'range-under-ptl' ? 'v3.6' : 'v3.7';

/**
 * Models: hugetlb_cow(), mm/hugetlb.c v3.7 (and v3.6: hugetlbCowOrder) — a write to the
 * read-only huge entry old of a private mapping. Under page_table_lock (hugetlb_fault's, with
 * pte_same): mapped once (page_mapcount == 1: avoidcopy) → made writable in place. Else the
 * lock is dropped, a pool page allocated and all 2^order words copied (copy_user_huge_page),
 * and the entry replaced under the lock inside the huge range's invalidation; old is put
 * (back to the pool with its last reference). The pool empty: SIGBUS (no reservation modelled,
 * so unmap_ref_private's stealing from the child is not either). → null when the entry changed
 * under us (the fault looks again).
 */
async function hugetlbCow(
  ctx: MmContext,
  op: string,
  pid: number,
  hvpn: number,
  old: Pte,
  seq: number,
  mmapSem: string,
): Promise<{ pte: Pte; kind: 'hugetlb' | 'hugetlb-cow' } | null> {
  const store = hugetlbStore(ctx);
  const addr = hvpn * PAGE_SIZE;
  // hugetlb_fault: spin_lock(&mm->page_table_lock); pte_same; hugetlb_cow: avoidcopy?
  let held = await ptlLock(ctx, pid, LOCK, op);
  let locked = true;
  try {
    if ((await store.mapcount(old)) === 1) {
      const pte: Pte = { ...old, writable: true };
      const r = await store.setEntry(
        pid,
        held.lease,
        hvpn,
        old,
        pte,
        seq,
        mmapSem,
        ctx.incarnation,
      );
      if (r.r === 'ESTALE') throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${pid}`);
      if (r.r === 'ESRCH') throw new MmlabError('ESRCH', `no process ${pid}`);
      if (r.r !== 'OK') return null;
      ctx.tracer.emit({
        kind: 'pte.set',
        op,
        pid,
        addr,
        ...pte,
        lock: LOCK,
        token: held.lease.token,
      });
      return { pte, kind: 'hugetlb' };
    }
    // "Drop page_table_lock as buddy allocator may be called"
    await ptlUnlock(ctx, held);
    locked = false;
    // alloc_huge_page + copy_user_huge_page, recorded with the put of old its install owes
    const alloc = await allocRecorded(ctx, pid, hvpn, { pfn: old.pfn, gen: old.gen });
    if (!alloc)
      throw new MmlabError(
        'SIGBUS',
        `hugetlb COW at 0x${addr.toString(16)} of pid ${pid}: the huge page pool is empty`,
      );
    const { page } = alloc;
    traceFrames(ctx, 'frame.alloc', op, page);
    await crashPoint(ctx, 'hugetlb_cow.allocated');
    const pte: Pte = { ...page, writable: true };
    const mmunStart = addr; /* For mmu_notifiers */
    const mmunEnd = addr + pagesPerHugePage(ctx) * PAGE_SIZE; /* For mmu_notifiers */
    /** the entry replaced (else the new page is the one released below) */
    let replaced = false;
    /** pte_same, clear, flush, set — under the lock h */
    const breakCow = async (h: HeldLock): Promise<void> => {
      // huge_ptep_clear_flush: cleared, its old page kept (w = 3) until the set below
      const c = await store.setEntry(
        pid,
        h.lease,
        hvpn,
        old,
        { cleared: old },
        seq,
        mmapSem,
        ctx.incarnation,
      );
      if (c.r === 'ESTALE') throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${pid}`);
      if (c.r !== 'OK') return;
      ctx.tracer.emit({
        kind: 'pte.clear',
        op,
        pid,
        addr,
        ...old,
        lock: LOCK,
        token: h.lease.token,
      });
      await underPtl(h, () => flushTlbRange(ctx, op, pid, mmunStart, mmunEnd, c.cpumask));
      // huge_ptep_clear_flush done, set_huge_pte_at next
      await crashPoint(ctx, 'hugetlb_cow.cleared', h);
      const s = await store.setEntry(
        pid,
        h.lease,
        hvpn,
        { cleared: old },
        pte,
        -1,
        '',
        ctx.incarnation,
      );
      if (s.r !== 'OK') throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${pid}`);
      ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...pte, lock: LOCK, token: h.lease.token });
      replaced = true;
      await crashPoint(ctx, 'hugetlb_cow.set', h);
    };
    try {
      if (hugetlbCowOrder(ctx) === 'v3.7') {
        const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'clear');
        try {
          await withinRange(range, async () => {
            await crashPoint(ctx, 'hugetlb_cow.range_started');
            held = await ptlLock(ctx, pid, LOCK, op);
            locked = true;
            try {
              await breakCow(held);
            } finally {
              await ptlUnlock(ctx, held);
              locked = false;
            }
          });
        } finally {
          await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
        }
        await crashPoint(ctx, 'hugetlb_cow.range_ended');
        // "Caller expects lock to be held": page_cache_release under it
        held = await ptlLock(ctx, pid, LOCK, op);
        locked = true;
      } else {
        held = await ptlLock(ctx, pid, LOCK, op);
        locked = true;
        const h = held;
        const range = await underPtl(h, () =>
          invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'clear'),
        );
        try {
          await withinRange(range, () => breakCow(h));
        } finally {
          await underPtl(h, () => invalidateRangeEnd(ctx, range, mmunStart, mmunEnd));
        }
      }
    } finally {
      // page_cache_release(new_page) — old_page when the COW was done — and the reference
      // hugetlb_cow took on old_page: together one mapping of old (or the unused copy) put, as
      // the record owes it
      await endRecorded(ctx, op, alloc, replaced, old);
    }
    return replaced ? { pte, kind: 'hugetlb-cow' } : null;
  } finally {
    if (locked) await ptlUnlock(ctx, held); // hugetlb_fault's spin_unlock
  }
}

/**
 * Models: __unmap_hugepage_range(), mm/hugetlb.c v3.7 (v3.6 the same: its start/end were
 * already outside page_table_lock) — for munmap and exit (unmap_vmas → unmap_single_vma), over
 * the huge entries of [startVpn, endVpn): invalidate_range_start(mmun_start, mmun_end) on the
 * whole huge range before the lock, clear every entry under it and flush the TLBs, unlock,
 * invalidate_range_end with the same values, then the pages are put (tlb_finish_mmu: a page
 * whose last mapping this was goes back to the pool). Nothing mapped: nothing sent.
 */
export async function unmapHugepageRange(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
): Promise<number> {
  const store = hugetlbStore(ctx);
  const n = pagesPerHugePage(ctx);
  const s = startVpn - (startVpn % n);
  const found = await store.entries(pid, s, endVpn);
  if (found.length === 0) return 0;
  // range-outside-ptl in both eras (eras.ts, site __unmap_hugepage_range): nothing else is modelled
  if (notifyOf(ctx, '__unmap_hugepage_range') !== 'range-outside-ptl')
    throw new MmlabError('EINTERNAL', '__unmap_hugepage_range: only range-outside-ptl is modelled');
  // the VMA's part of the range, huge-page aligned (BUG_ON(start & ~huge_page_mask(h)))
  const mmunStart = Math.max(s, found[0].hvpn) * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = (found[found.length - 1].hvpn + n) * PAGE_SIZE; /* For mmu_notifiers */
  const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'unmap');
  const intent = ctx.intents.get(op);
  let cleared: Array<{ pfn: number; gen: number }> = [];
  try {
    await withinRange(range, async () => {
      await crashPoint(ctx, '__unmap_hugepage_range.range_started');
      const held = await ptlLock(ctx, pid, LOCK, op);
      try {
        // under an intent (munmap, exit): the pages cleared are recorded in it, same step
        const r = await store.zap(
          pid,
          held.lease,
          mmunStart / PAGE_SIZE,
          mmunEnd / PAGE_SIZE,
          intent && { id: intent.id, owner: intent.owner },
        );
        if (!r) throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${pid}`);
        await crashPoint(ctx, '__unmap_hugepage_range.cleared', held);
        for (const c of r.cleared)
          ctx.tracer.emit({
            kind: 'pte.clear',
            op,
            pid,
            addr: c.hvpn * PAGE_SIZE,
            pfn: c.pfn,
            gen: c.gen,
            lock: LOCK,
            token: held.lease.token,
          });
        if (r.cleared.length)
          await underPtl(held, () => flushTlbRange(ctx, op, pid, mmunStart, mmunEnd, r.cpumask));
        cleared = r.cleared;
      } finally {
        await ptlUnlock(ctx, held);
      }
    });
  } finally {
    await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
  // tlb_finish_mmu() next: the cleared pages' mappings are put
  await crashPoint(ctx, '__unmap_hugepage_range.range_ended');
  const pages = cleared.map((c) => ({ pfn: c.pfn, gen: c.gen, hugetlb: true as const }));
  if (intent) await putCleared(ctx, op, pages, false);
  else await putHugetlbPages(ctx, op, pages, '');
  return cleared.length;
}

/**
 * Models: copy_hugetlb_page_range(), mm/hugetlb.c v3.7 (v3.6 alike) — fork of a hugetlb VMA,
 * which copy_page_range hands over before its own invalidate_range_start: NO notifier is sent
 * (a secondary MMU keeps a writable mapping of a private huge page the parent now shares with
 * the child; later kernels added the range). Under the parent's page_table_lock each entry is
 * write-protected in a private mapping (huge_ptep_set_wrprotect), the page gets a reference and
 * a mapping (get_page, page_dup_rmap) and the child the same entry; a shared mapping stays
 * writable in both.
 */
export async function copyHugetlbPageRange(
  ctx: MmContext,
  op: string,
  src: number,
  dst: number,
  vma: Vma,
): Promise<void> {
  const store = hugetlbStore(ctx);
  const held = await ptlLock(ctx, src, LOCK, op);
  try {
    const r = await store.copy(src, held.lease, vma.start, vma.end, !vma.shared);
    if (!r) throw new MmlabError('ESTALE', `lost ${LOCK} of pid ${src}`);
    if (r.entries.length === 0) return;
    const bad = await store.get(r.entries);
    if (bad.length)
      throw new MmlabError(
        'EINTERNAL',
        `copy_hugetlb_page_range found dead pages ${bad.join(', ')}`,
      );
    if (!vma.shared)
      await underPtl(held, () =>
        flushTlbRange(ctx, op, src, vma.start * PAGE_SIZE, vma.end * PAGE_SIZE, r.cpumask),
      );
    if (!(await store.forkSet(dst, r.entries)))
      throw new MmlabError('ESTALE', `fork of pid ${src} was taken over and rolled back`);
    for (const e of r.entries) {
      const pte = { pfn: e.pfn, gen: e.gen, writable: e.writable };
      if (!vma.shared)
        ctx.tracer.emit({
          kind: 'pte.set',
          op,
          pid: src,
          addr: e.hvpn * PAGE_SIZE,
          ...pte,
          lock: LOCK,
          token: held.lease.token,
        });
      ctx.tracer.emit({
        kind: 'pte.set',
        op,
        pid: dst,
        addr: e.hvpn * PAGE_SIZE,
        ...pte,
        lock: LOCK,
        token: null,
      });
    }
  } finally {
    await ptlUnlock(ctx, held);
  }
}

/**
 * The syscalls mmlab refuses on a hugetlb VMA, as v3.7 does: madvise(MADV_DONTNEED)
 * (madvise_dontneed: VM_HUGETLB → -EINVAL), mremap (vma_to_resize: is_vm_hugetlb_page →
 * -EINVAL), and a munmap whose ends cut a huge page (split_vma: -EINVAL). mprotect of a hugetlb
 * VMA (hugetlb_change_protection in the kernel) is not modelled: refused with EINVAL too.
 */
export async function refuseHugetlb(
  ctx: MmContext,
  pid: number,
  s: number,
  e: number,
  syscall: 'madvise' | 'mremap' | 'mprotect' | 'munmap',
): Promise<void> {
  const n = pagesPerHugePage(ctx);
  for (const v of await ctx.store.vmas(pid)) {
    if (!v.hugetlb || v.end <= s || v.start >= e) continue;
    // split_vma() at a cut inside the VMA that is not at a huge page boundary
    if (syscall === 'munmap' && !(s > v.start && s % n !== 0) && !(e < v.end && e % n !== 0))
      continue;
    throw new MmlabError(
      'EINVAL',
      syscall === 'munmap'
        ? `munmap of [0x${(s * PAGE_SIZE).toString(16)}, 0x${(e * PAGE_SIZE).toString(16)}) cuts a huge page of a hugetlb mapping`
        : `${syscall} of a hugetlb mapping (0x${(v.start * PAGE_SIZE).toString(16)}) is refused`,
    );
  }
}
