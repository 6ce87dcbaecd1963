/**
 * mm/vmscan.c and mm/rmap.c: reclaim of anonymous pages to swap — shrink_page_list() over a
 * batch isolated from the inactive LRU list, each page unmapped from every PTE that maps it by
 * try_to_unmap_one() (the seed's hunk), written to its swap slot and freed once nothing but
 * the swap cache and the isolation hold it.
 *
 * Models: mm/vmscan.c, mm/rmap.c, mm/swap_state.c v3.7 (patched) and v3.6 (legacy). The one
 * difference between the two is where invalidate_page goes in try_to_unmap_one():
 *
 *   patched (v3.7, the seed)                   legacy (v3.6)
 *   pte = page_check_address(): lock PTL       pte = page_check_address(): lock PTL
 *   ptep_clear_flush (clear, TLB shootdown)    ptep_clear_flush_notify: clear, shootdown,
 *                                                invalidate_page — under the PT lock
 *   set_pte_at(swp_entry_to_pte(entry))        set_pte_at(swp_entry_to_pte(entry))
 *   page_remove_rmap, page_cache_release       page_remove_rmap, page_cache_release
 *   pte_unmap_unlock                           pte_unmap_unlock
 *   mmu_notifier_invalidate_page(mm, address)
 *
 * In both the frame is freed only later, by __remove_mapping() once every mapping is gone: the
 * swap cache and the isolation hold references until then, so a secondary MMU's invalidate_page
 * always comes before the free. In v3.6 a subscriber that sleeps in it (an ODP HCA waiting for
 * its MTT update) sleeps under the PT lock: the checker's no-sleep-under-ptlock.
 *
 * The reverse map: the kernel walks page->mapping's anon_vma (every VMA of every process forked
 * from the one that faulted the page in). mmlab keeps no anon_vma; page_referenced/try_to_unmap
 * find the mappings by reading every live address space's page table once per batch (rmapScan):
 * the same set of (mm, address) the anon_vma walk visits, at a cost that grows with the
 * processes instead of the page's sharers. A mapping made after the scan (fork copying the PTE)
 * is not unmapped: the page then stays mapped, and __remove_mapping keeps it (page_mapped).
 *
 * Who reclaims: the reclaim step (try_to_free_pages with a target), an allocation that finds
 * no free frame (direct reclaim: directReclaim, withDirectReclaim) and kswapd, woken when an
 * allocation leaves free memory below the low watermark and running until the high one
 * (wakeupKswapd).
 *
 * Aging: page_referenced (below) reads and clears the PTEs' accessed bits and asks the secondary
 * MMUs (clear_flush_young) when shrink_active_list deactivates a page and when
 * shrink_inactive_list scans it. try_to_unmap_one's own ptep_clear_flush_young_notify (a page
 * referenced between page_referenced and the unmap: SWAP_FAIL) is not modelled: the window is
 * one script call wide here.
 *
 * A file's page (in the page cache) goes the same way, but its PTEs are cleared rather than made
 * swap entries (its file has it: a refault reads it from the page cache), and pageout() writes
 * it back to the file when it is dirty (writeback event, why reclaim) before __remove_mapping
 * drops it from the page cache and frees it.
 *
 * A shmem object's page (MAP_SHARED|MAP_ANONYMOUS) is a file's page whose file has no backing
 * store: shmem_writepage moves it to a swap slot, and the object's page cache keeps the swap
 * entry in its place until a fault reads it back (shmem_getpage).
 *
 * Crash safety (issue 15): each isolated batch is recorded in the isolation step
 * ({mem}:pending u:<rec>, isolateLruPages) and ended by its owner (isolatedReap: whatever is
 * still isolated goes back), or by a survivor's reaper when the owner dies (orphan_ranges.ts):
 * a replica killed at shrink_page_list.isolated, .swap_added, .unmapped or try_to_unmap_one
 * .unlocked leaves pages that are consistent apart from the isolation (in the swap cache or
 * not, their mappings swap entries or not), which the reaper puts back on the LRU. A stopped
 * replica that resumes after that finds its record gone: its shrinkPage and lruPutback are
 * refused (no second put of the isolation's reference). try_to_unmap_one's swap_duplicate
 * ({mem}) and its PTE update ({p:<pid>}) are in different Redis slots: the duplicate is taken
 * in the step that records the unmap (unmapRecordOpen, {mem}:pending u:<rec>), which owes one
 * put until its end (unmapRecordEnd) — the page's mapping once the PTE is a swap entry, the
 * duplicate's swap_free if it never became one. A replica killed at try_to_unmap_one
 * .duplicated or .cleared leaves the record to a reaper, which fences it off the process, reads
 * the PTE (unmapFence) and ends the record the same way:
 *
 *   mm-0 (try_to_unmap_one, pid 7 vpn 5)        mm-1 (reaper)
 *   unmapRecordOpen(u: slot 3 count + 1)
 *   tryToUnmapOne: vpn 5 = swap 3
 *   ✗ killed (try_to_unmap_one.cleared)
 *                                              unmapFence(7): vpn 5 no longer maps the page →
 *                                              unmapRecordEnd(u, 1): page_remove_rmap + put
 *
 * The reaper runs a lease TTL or two after the death: a swap-in of that swap PTE in between (a
 * fault reading the page back from the swap cache) makes it map the page again. So the PTE
 * step marks itself done in the same script ({p:<pid>}:unmapped:<rec>, expiring after a minute
 * or more), and the fence reads the mark first; only a reap later than that reads the PTE.
 *
 *   mm-0 (reclaim)                              mm-1 (reaper)
 *   isolateLruPages(rec r, pfn 9 10)  u:r
 *   addToSwap(9) → slot 3; try_to_unmap(9)
 *   ✗ killed
 *                                              lease of mm-0.a1 gone: isolatedReap(r):
 *                                              9: on no LRU → ref-1, inactive list (in the
 *                                              swap cache, unmapped: the next pass frees it);
 *                                              10: the same, untouched
 */
import { crashPoint } from './crash_point';
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type MmContext, injected } from './context';
import { type Vma, ptePresent } from '@mmlab/model';
import {
  invalidatePage,
  invalidateRangeEnd,
  invalidateRangeStart,
  mmuNotifierClearFlushYoung,
  ptepClearFlushNotify,
  withinRange,
} from './mmu_notifier';
import { forEachPteTable, staleLease } from './pagewalk';
import { notifyOf } from './eras';
import { type Frame, drainAllPages, putPages } from './page_alloc';
import { flushTlbRange } from './tlbflush';

/** SWAP_CLUSTER_MAX: pages isolated and shrunk as one batch. */
export const SWAP_CLUSTER_MAX = 32;

export interface ReclaimResult {
  scanned: number;
  /** frames freed */
  reclaimed: number;
  /** kept: mapped again, shared anonymous memory, or (once young bits exist) referenced */
  referenced: number;
  /** unmapped and written to swap, kept in the swap cache because something pins it */
  pinned: number;
  /** the swap device had no free slot */
  swapFull: boolean;
}

/**
 * One mapping of a page: pid's PTE at vpn; shared: in a MAP_SHARED VMA; file: a VMA mapping a
 * file or a shmem object, and then index: which file page vpn maps there (linear_page_index:
 * the VMA's ino and vpn + delta).
 */
export interface Mapping {
  pid: number;
  vpn: number;
  shared: boolean;
  file: boolean;
  /** the VMA, when it is nonlinear (try_to_unmap_cluster unmaps there) */
  nonlinear?: Vma;
  index?: { ino: number; pgoff: number };
}

/**
 * Models: try_to_free_pages() → shrink_zone() → shrink_list(), mm/vmscan.c v3.7: reclaim until
 * `target` frames are freed or the lists have nothing more to give (every page looked at
 * twice: deactivated, then scanned), or swap is full. Each round first ages the active list
 * when the inactive one is the shorter (inactive_anon_is_low: shrink_active_list, which clears
 * the young bits of what it deactivates), then shrinks a batch of the inactive list
 * (shrink_inactive_list → shrink_page_list): a page referenced since its bits were cleared —
 * by a PTE's accessed bit, or a secondary MMU's clear_flush_young — goes back to the active
 * list; the others are swapped out. So one pass can take a page a device touched before it
 * began, once its young bits have been cleared; a page touched again in between stays. One
 * trace event (reclaim) says what came of it.
 */
export async function tryToFreePages(
  ctx: MmContext,
  why: 'kswapd' | 'direct' | 'request',
  target: number,
): Promise<ReclaimResult> {
  const op = ctx.ids.next('reclaim');
  const res: ReclaimResult = {
    scanned: 0,
    reclaimed: 0,
    referenced: 0,
    pinned: 0,
    swapFull: false,
  };
  // lru_add_drain_all(): the replicas' batches report the frames their faults installed (their
  // reserve tags go: until then isolation skips them, as pages still in a CPU's pagevec are
  // not on the LRU yet) and give back the ones they did not use
  await drainAllPages(ctx);
  const lists = await ctx.store.swapInfo();
  // every page at most twice: once deactivated, once scanned (and the rounds that find nothing)
  let budget = 2 * Math.ceil((lists.inactive + lists.active) / SWAP_CLUSTER_MAX) + 2;
  while (res.reclaimed < target && !res.swapFull && budget-- > 0) {
    const { inactive, active } = await ctx.store.swapInfo();
    const want = Math.min(SWAP_CLUSTER_MAX, target - res.reclaimed);
    let moved = 0;
    if (active > 0 && inactive < Math.max(active, want))
      moved = await shrinkActiveList(ctx, op, Math.min(SWAP_CLUSTER_MAX, active));
    const rec = isolationRec(ctx, op);
    const batch = await ctx.store.isolateLruPages(want, 'inactive', {
      rec,
      owner: ctx.incarnation,
    });
    if (batch.length === 0 && moved === 0) break;
    try {
      // isolate_lru_pages(): the batch is off the LRU, each page with the isolation's reference
      if (batch.length > 0) await crashPoint(ctx, 'shrink_page_list.isolated');
      const rmap = await rmapScan(ctx, batch);
      for (const page of batch) {
        res.scanned++;
        if (res.swapFull || res.reclaimed >= target) {
          await ctx.store.lruPutback(page.pfn, page.gen, 'inactive', rec); // not looked at
          continue;
        }
        await shrinkPage(ctx, op, rec, page, rmap.get(`${page.pfn}:${page.gen}`) ?? [], res);
      }
    } finally {
      // the record ends; a page an error left isolated goes back with it
      if (batch.length > 0) await ctx.store.isolatedReap(rec, ctx.incarnation);
    }
  }
  const wm = watermarks(ctx);
  ctx.tracer.emit({
    kind: 'reclaim',
    op,
    why,
    scanned: res.scanned,
    reclaimed: res.reclaimed,
    referenced: res.referenced,
    pinned: res.pinned,
    free: (await ctx.store.memInfo()).free,
    ...(wm && { watermarks: wm }),
  });
  return res;
}

/**
 * Models: shrink_active_list(), mm/vmscan.c v3.7: the n oldest pages of the active list go to
 * the inactive list, each after page_referenced() cleared its young bits (an anonymous page
 * is deactivated whether it was referenced or not: only executable file pages are rotated).
 * → how many moved
 */
async function shrinkActiveList(ctx: MmContext, op: string, n: number): Promise<number> {
  const rec = isolationRec(ctx, op);
  const batch = await ctx.store.isolateLruPages(n, 'active', { rec, owner: ctx.incarnation });
  try {
    const rmap = await rmapScan(ctx, batch);
    for (const page of batch) {
      await pageReferenced(ctx, op, page, rmap.get(`${page.pfn}:${page.gen}`) ?? []);
      await ctx.store.lruPutback(page.pfn, page.gen, 'inactive', rec);
    }
  } finally {
    if (batch.length > 0) await ctx.store.isolatedReap(rec, ctx.incarnation);
  }
  return batch.length;
}

/** A name for one isolated batch of op's, unique in the lab (the incarnation's). */
let isolations = 0;
const isolationRec = (ctx: MmContext, op: string): string =>
  `${ctx.incarnation}:${op}:${++isolations}`;

/**
 * Models: page_referenced() → page_referenced_one() → ptep_clear_flush_young_notify(),
 * mm/rmap.c v3.7 (v3.6 alike): for every PTE that maps the page, under its PT lock, test and
 * clear the accessed bit (flushing the CPU TLBs when it was set, so the next access walks and
 * sets it again) and ask the secondary MMUs the same (clear_flush_young, answered without
 * sleeping: it is sent under the lock). → how many mappings were referenced
 */
async function pageReferenced(
  ctx: MmContext,
  op: string,
  page: Frame,
  mappings: Mapping[],
): Promise<number> {
  let referenced = 0;
  for (const m of mappings) {
    const addr = m.vpn * PAGE_SIZE;
    await forEachPteTable(ctx, op, m.pid, m.vpn, m.vpn + 1, async (held) => {
      const r = await ctx.store.ptepClearFlushYoung(
        m.pid,
        held.lock,
        held.lease.value,
        held.lease.token,
        m.vpn,
        page,
      );
      if (!r) throw staleLease(ctx, held, 'page_referenced_one');
      if (r === 'GONE') return;
      let young = r.young;
      if (young) await flushTlbRange(ctx, op, m.pid, addr, addr + PAGE_SIZE, r.cpumask);
      if (await mmuNotifierClearFlushYoung(ctx, op, m.pid, addr, addr + PAGE_SIZE)) young = true;
      if (young) referenced++;
    });
  }
  return referenced;
}

/**
 * shrink_page_list() for one isolated anonymous page: add_to_swap(), try_to_unmap() (every
 * mapping, try_to_unmap_one), then pageout() and __remove_mapping() in one {mem} step
 * (shrinkPage): freed when only the swap cache and the isolation hold it.
 */
async function shrinkPage(
  ctx: MmContext,
  op: string,
  rec: string,
  page: Frame,
  mappings: Mapping[],
  res: ReclaimResult,
): Promise<void> {
  // page_check_references(): referenced since its young bits were last cleared → activate
  if ((await pageReferenced(ctx, op, page, mappings)) > 0) {
    res.referenced++;
    await ctx.store.shrinkPage(page.pfn, page.gen, true, rec);
    return;
  }
  const slot = await ctx.store.addToSwap(page.pfn, page.gen);
  if (slot === 'ENOSPC' || slot === 'STALE') {
    if (slot === 'ENOSPC') res.swapFull = true;
    await ctx.store.shrinkPage(page.pfn, page.gen, true, rec);
    return;
  }
  // add_to_swap(): the page is in the swap cache, its slot allocated (a file's page: locked)
  await crashPoint(ctx, 'shrink_page_list.swap_added');
  // a file's page (slot FILE): its PTEs are cleared (the file has the page), and pageout()
  // writes it back to the file when it is dirty
  const clusters = new Set<string>(); // one try_to_unmap_cluster per cluster of a nonlinear VMA
  for (const m of mappings) {
    const c = `${m.pid}:${Math.floor(m.vpn / CLUSTER_PAGES)}`;
    if (!m.nonlinear)
      await tryToUnmapOne(ctx, op, m.pid, m.vpn, page, slot === 'FILE' ? null : slot);
    else if (!clusters.has(c)) {
      clusters.add(c);
      await tryToUnmapCluster(ctx, op, m.pid, m.nonlinear, m.vpn);
    }
  }
  // try_to_unmap() done: every mapping found is a swap entry (or gone), pageout() is next
  await crashPoint(ctx, 'shrink_page_list.unmapped');
  const r = await ctx.store.shrinkPage(page.pfn, page.gen, false, rec);
  if (r.r !== 'STALE' && r.ino !== undefined)
    ctx.tracer.emit({
      kind: 'writeback',
      op,
      ino: r.ino,
      page: r.page!,
      pfn: page.pfn,
      gen: page.gen,
      value: r.value!,
      why: 'reclaim',
    });
  if (r.r === 'FREED') {
    ctx.tracer.emit({ kind: 'frame.free', op, pfn: page.pfn, gen: page.gen });
    res.reclaimed++;
  } else if (r.r === 'KEPT') {
    if (r.map > 0) res.referenced++;
    else res.pinned++;
  }
}

/**
 * Models: try_to_unmap_one(), mm/rmap.c — v3.7 (patched) and v3.6 (legacy); see the top of
 * this file. The slot's swap_duplicate comes first (a swap PTE never names a slot that does not
 * count it), and is given back when the PTE no longer maps the page (SWAP_AGAIN: nothing to do
 * here). → whether this mapping was unmapped.
 */
export async function tryToUnmapOne(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  page: Frame,
  /** the page's swap slot; null: a file's page (its PTE is cleared, not made a swap entry) */
  slot: { slot: number; gen: number } | null,
): Promise<boolean> {
  // swap_duplicate, recorded with the put it leaves owed (crash recovery: orphan_ranges.ts)
  const rec = `${ctx.incarnation}:${op}:u${++unmaps}`;
  if (!(await ctx.store.unmapRecordOpen(rec, ctx.incarnation, pid, vpn, page, slot))) return false;
  if (slot) await crashPoint(ctx, 'try_to_unmap_one.duplicated');
  const notify = notifyOf(ctx, 'try_to_unmap_one');
  const addr = vpn * PAGE_SIZE;
  let unmapped = false;
  await forEachPteTable(ctx, op, pid, vpn, vpn + 1, async (held) => {
    const r = await ctx.store.tryToUnmapOne(
      pid,
      held.lock,
      held.lease.value,
      held.lease.token,
      vpn,
      page,
      slot,
      null,
      ctx.incarnation,
      // the PTE step marked done (the reaper's fence reads it): long enough for any reap
      { rec, ttlMs: Math.max(60_000, 100 * ctx.env.MMLAB_LEASE_TTL_MS) },
    );
    if (!r) throw staleLease(ctx, held, 'try_to_unmap_one');
    if (r === 'GONE') return;
    unmapped = true;
    // the PTE is a swap entry (a file's page: none), the page's mapping not put yet
    await crashPoint(ctx, 'try_to_unmap_one.cleared', held);
    // ptep_clear_flush(): the PTE is gone, the CPU TLBs shot down under the lock (v3.6's
    // ptep_clear_flush_notify: and invalidate_page, still under it)
    await ptepClearFlushNotify(ctx, held, addr, page, r.cpumask, notify);
    if (slot)
      ctx.tracer.emit({
        kind: 'swap.out',
        op,
        pid,
        addr,
        pfn: page.pfn,
        gen: page.gen,
        slot: slot.slot,
        slotGen: slot.gen,
      });
    // "Move the dirty bit to the physical page now the pte is gone": a file's page mapped
    // writable may have been written through it (writable stands for pte_dirty here)
    if (!slot && r.was.writable) await ctx.store.setPageDirty(page.pfn, page.gen);
    // page_remove_rmap() + page_cache_release(): the swap cache and the isolation still hold
    // it (the record's end; ended already: a reaper did it, this replica was found dead)
    const freed = await ctx.store.unmapRecordEnd(rec, ctx.incarnation, true);
    if (freed?.length)
      throw new MmlabError('EINTERNAL', `try_to_unmap_one freed pfn ${page.pfn}: it was isolated`);
  }).catch(async (e: unknown) => {
    // failed (a lease lost): the record ends as far as it got — the duplicate back, or the
    // page's put once its PTE changed (a reaper reads the PTE instead when this replica is dead)
    await ctx.store.unmapRecordEnd(rec, ctx.incarnation, unmapped);
    throw e;
  });
  if (!unmapped) {
    await ctx.store.unmapRecordEnd(rec, ctx.incarnation, false); // the swap_duplicate given back
    return false;
  }
  await crashPoint(ctx, 'try_to_unmap_one.unlocked');
  // v3.7 (the seed): after pte_unmap_unlock, before the page can be freed
  if (notify === 'page-after-unlock') await invalidatePage(ctx, op, pid, addr);
  return true;
}

/** try_to_unmap_one records of this process (unmapRecordOpen): a counter for their names. */
let unmaps = 0;

/** CLUSTER_SIZE: min(32 pages, PMD_SIZE), in pages — what try_to_unmap_cluster unmaps at once. */
export const CLUSTER_PAGES = 32;

/**
 * Models: try_to_unmap_cluster(), mm/rmap.c — v3.7 (patched) and v3.6 (legacy). A nonlinear
 * VMA's pages are not found through their file's i_mmap tree: reclaim unmaps a cluster of its
 * PTEs at a time, whichever pages they map. mmlab runs it on the cluster around the mapping the
 * reverse-map scan found (the kernel walks every nonlinear VMA of the file with a cursor).
 *
 *   patched (v3.7, the seed)                   legacy (v3.6)
 *   address = cursor & CLUSTER_MASK, end       address = cursor & CLUSTER_MASK, end
 *   invalidate_range_start(address, end)
 *   lock PTL                                   lock PTL
 *   for each present PTE in [address, end):    for each present PTE in [address, end):
 *     young (PTE or secondary MMU)? skip         young? skip
 *     ptep_clear_flush                           ptep_clear_flush_notify: clear, shootdown,
 *                                                  invalidate_page — under the PT lock
 *     page not at its linear index? its file     (the same)
 *       PTE (pgoff_to_pte); dirty → page
 *     page_remove_rmap, page_cache_release
 *   unlock                                     unlock
 *   invalidate_range_end(address, end)
 *
 * mmun_start/mmun_end are address/end, computed first: the seed's V1 passed an `end` not yet
 * set (Andrew Morton's review) — inject `uninit-cluster-end` gives the range an end that is
 * whatever the stack held (an arbitrary value; mmlab uses one page past the start, so the range
 * covers the cluster's first page only): the secondary MMUs keep the other pages the cluster
 * unmaps, and reclaim then frees them under the device (teardown-before-free).
 * → how many PTEs were unmapped
 */
export async function tryToUnmapCluster(
  ctx: MmContext,
  op: string,
  pid: number,
  vma: Vma,
  cursor: number,
): Promise<number> {
  const base = Math.floor(cursor / CLUSTER_PAGES) * CLUSTER_PAGES;
  const address = Math.max(vma.start, base);
  const end = Math.min(vma.end, base + CLUSTER_PAGES);
  const notify = notifyOf(ctx, 'try_to_unmap_cluster');
  const mmunStart = address * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = injected(ctx, 'uninit-cluster-end') ? mmunStart + PAGE_SIZE : end * PAGE_SIZE;
  const range =
    notify === 'range-outside-ptl'
      ? await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'unmap')
      : null;
  let unmapped = 0;
  try {
    await withinRange(range, async () => {
      const present = [...(await ctx.store.pageTable(pid))].filter(
        ([vpn, p]) => vpn >= address && vpn < end && ptePresent(p) && p.pfn !== 0,
      );
      const index = await ctx.store.pageIndexes(present.map(([, p]) => p.pfn));
      await forEachPteTable(ctx, op, pid, address, end, async (held, s, e) => {
        for (const [vpn, pte] of present) {
          if (vpn < s || vpn >= e) continue;
          const page: Frame = { pfn: pte.pfn, gen: pte.gen };
          const addr = vpn * PAGE_SIZE;
          const { lock } = held;
          const token = held.lease.token;
          // ptep_clear_flush_young_notify(): referenced since the last look → keep it mapped
          const y = await ctx.store.ptepClearFlushYoung(
            pid,
            lock,
            held.lease.value,
            token,
            vpn,
            page,
          );
          if (!y) throw staleLease(ctx, held, 'try_to_unmap_cluster');
          if (y === 'GONE') continue;
          if (y.young) {
            await flushTlbRange(ctx, op, pid, addr, addr + PAGE_SIZE, y.cpumask);
            continue;
          }
          if (await mmuNotifierClearFlushYoung(ctx, op, pid, addr, addr + PAGE_SIZE)) continue;
          // "If nonlinear, store the file page offset in the pte"
          const idx = index.get(pte.pfn)?.index;
          const linear = vma.file ? vpn + vma.file.delta : null;
          const pgoff = idx !== undefined && idx !== linear ? idx : null;
          const r = await ctx.store.tryToUnmapOne(
            pid,
            lock,
            held.lease.value,
            token,
            vpn,
            page,
            null,
            pgoff,
          );
          if (!r) throw staleLease(ctx, held, 'try_to_unmap_cluster');
          if (r === 'GONE') continue;
          await ptepClearFlushNotify(ctx, held, addr, page, r.cpumask, notify);
          // "Move the dirty bit to the physical page now the pte is gone."
          if (r.was.writable) await ctx.store.setPageDirty(page.pfn, page.gen);
          await putPages(ctx, op, [page]);
          unmapped++;
        }
      });
    });
  } finally {
    if (range) await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
  return unmapped;
}

/**
 * The reverse map of a batch: every PTE of every live address space that maps one of its
 * frames (see the top of this file: what the anon_vma walk of page_referenced/try_to_unmap
 * visits). → "pfn:gen" → its mappings
 */
export async function rmapScan(ctx: MmContext, pages: Frame[]): Promise<Map<string, Mapping[]>> {
  const want = new Set(pages.map((p) => `${p.pfn}:${p.gen}`));
  const out = new Map<string, Mapping[]>();
  for (const pid of await ctx.store.processes()) {
    const ptes = await ctx.store.pageTable(pid);
    if (ptes.size === 0) continue;
    let vmas: Awaited<ReturnType<MmContext['store']['vmas']>> | null = null;
    for (const [vpn, pte] of ptes) {
      if (!ptePresent(pte)) continue;
      const key = `${pte.pfn}:${pte.gen}`;
      if (!want.has(key)) continue;
      vmas ??= await ctx.store.vmas(pid);
      const vma = vmas.find((v) => v.start <= vpn && vpn < v.end);
      const m: Mapping = { pid, vpn, shared: vma?.shared ?? false, file: vma?.file !== undefined };
      if (vma?.nonlinear) m.nonlinear = vma;
      if (vma?.file) m.index = { ino: vma.file.ino, pgoff: vpn + vma.file.delta };
      out.set(key, [...(out.get(key) ?? []), m]);
    }
  }
  return out;
}

/** Rounds of direct reclaim one allocation may take before it gives up (out of memory). */
const MAX_DIRECT_RECLAIM = 16;

/**
 * Models: __alloc_pages_direct_reclaim(), mm/page_alloc.c v3.7 — an allocation that found no
 * free frame reclaims a batch itself before it tries again (`round`: how many times it did
 * already). When nothing could be reclaimed (no swap, swap full, every page pinned or in use
 * by a fault) it is out of memory: mmlab has no OOM killer, so the operation fails with
 * ENOMEM "out of memory", never a hang.
 */
export async function directReclaim(ctx: MmContext, what: string, round: number): Promise<void> {
  const r =
    round < MAX_DIRECT_RECLAIM && ctx.env.MMLAB_SWAP_SLOTS > 0
      ? await tryToFreePages(ctx, 'direct', SWAP_CLUSTER_MAX)
      : null;
  if (!r || r.reclaimed === 0)
    throw new MmlabError(
      'ENOMEM',
      `out of memory: no free frame for ${what}` +
        (r
          ? `, and reclaim freed none (scanned ${r.scanned}, in use ${r.referenced}, pinned ${r.pinned}${r.swapFull ? ', swap full' : ''})`
          : ctx.env.MMLAB_SWAP_SLOTS > 0
            ? ` after ${round} rounds of reclaim`
            : ' (no swap: nothing can be reclaimed)'),
    );
}

/**
 * An allocation (alloc) that reclaims and tries again while it finds memory empty: it throws
 * ENOMEM, or answers 'ENOMEM' (a {mem} script's reply).
 */
export async function withDirectReclaim<T>(
  ctx: MmContext,
  what: string,
  alloc: () => Promise<T | 'ENOMEM'>,
): Promise<Exclude<T, 'ENOMEM'>> {
  for (let round = 0; ; round++) {
    try {
      const r = await alloc();
      if (r !== 'ENOMEM') return r as Exclude<T, 'ENOMEM'>;
    } catch (e) {
      if (!(e instanceof MmlabError && e.code === 'ENOMEM')) throw e;
    }
    await directReclaim(ctx, what, round);
  }
}

/** kswapd's state in this replica: one pass at a time; a wake-up during it asks for another. */
const kswapdOf = new WeakMap<MmContext, { running: boolean; again: boolean }>();

/**
 * Models: wakeup_kswapd(), mm/vmscan.c v3.7 — called when an allocation leaves free memory
 * below the low watermark (MMLAB_WATERMARK_LOW; 0: no kswapd). kswapd runs in the background
 * of this replica (balance_pgdat): it reclaims batches until the high watermark is reached or
 * nothing more can be reclaimed. One kswapd runs for the zone at a time, whichever replica
 * woke it: a lease in Redis (Store.kswapdLock).
 */
export function wakeupKswapd(ctx: MmContext): void {
  const low = ctx.env.MMLAB_WATERMARK_LOW;
  if (!low || ctx.env.MMLAB_SWAP_SLOTS === 0 || ctx.closing) return;
  let st = kswapdOf.get(ctx);
  if (!st) kswapdOf.set(ctx, (st = { running: false, again: false }));
  if (st.running) {
    st.again = true;
    return;
  }
  st.running = true;
  const state = st;
  void (async () => {
    try {
      do {
        state.again = false;
        await balancePgdat(ctx);
      } while (state.again && !ctx.closing);
    } catch {
      // a Redis or NATS error (a restart, the replica stopping): the next wake-up tries again
    } finally {
      state.running = false;
    }
  })();
}

/**
 * kswapd's watermarks as balance_pgdat applies them (high at least low): the zone's
 * low_wmark_pages/high_wmark_pages. None when there is no kswapd (MMLAB_WATERMARK_LOW 0).
 */
function watermarks(ctx: MmContext): { low: number; high: number } | undefined {
  const low = ctx.env.MMLAB_WATERMARK_LOW;
  return low > 0 ? { low, high: Math.max(low, ctx.env.MMLAB_WATERMARK_HIGH) } : undefined;
}

/** Models: balance_pgdat(), mm/vmscan.c v3.7: reclaim until free memory is at the high watermark. */
async function balancePgdat(ctx: MmContext): Promise<void> {
  const wm = watermarks(ctx);
  if (!wm) return;
  const { low, high } = wm;
  if ((await ctx.store.memInfo()).free >= low) return;
  const ttl = ctx.env.MMLAB_LEASE_TTL_MS * 5;
  if (!(await ctx.store.kswapdLock(ctx.incarnation, ttl))) return; // another replica's kswapd runs
  try {
    while (!ctx.closing) {
      const { free } = await ctx.store.memInfo();
      if (free >= high) break;
      const r = await tryToFreePages(ctx, 'kswapd', Math.min(SWAP_CLUSTER_MAX, high - free));
      if (r.reclaimed === 0 || !(await ctx.store.kswapdLock(ctx.incarnation, ttl))) break;
    }
  } finally {
    await ctx.store.kswapdUnlock(ctx.incarnation);
  }
}
