/**
 * mm/ksm.c: ksmd, one synchronous pass (the ksm.merge step, RPC ksmMerge) over the ranges it is
 * given — as if each were madvise(MADV_MERGEABLE) and ksmd had scanned them once.
 *
 * Models: ksm_do_scan() → cmp_and_merge_page(), mm/ksm.c v3.7 (patched) and v3.6 (legacy).
 *
 * For each present anonymous page, in range order (cmp_and_merge_page):
 *   - a KSM page of the same content exists (stable_tree_search: {mem}:ksm by the frame's data
 *     word): try_to_merge_with_ksm_page(page, kpage) — write_protect_page, then replace_page;
 *   - else an earlier page of this pass has that content (unstable_tree_search_insert: a map of
 *     this pass, rebuilt every pass as the kernel rebuilds its unstable tree):
 *     try_to_merge_two_pages — this page becomes the KSM page (write_protect_page,
 *     set_page_stable_node, stable_tree_insert), then the earlier one is replaced by it; if that
 *     fails, break_cow() undoes the first (a write fault: do_wp_page copies a KSM page);
 *   - else it goes into the unstable map.
 * The kernel waits for a page's checksum to stay unchanged over one whole pass before it puts the
 * page in the unstable tree (volatile pages are not worth merging); a ksm.merge step is one pass
 * asked for explicitly, so mmlab merges on the first.
 *
 * The order of lock, notifier and free in each era (write_protect_page / replace_page):
 *
 *   v3.7 (the seed + 6bdb913f)                 v3.6
 *   invalidate_range_start(mmun_start, _end)
 *   lock PTL; page_check_address / pte_same    lock PTL; page_check_address / pte_same
 *   ptep_clear_flush (clear, TLB shootdown)    ptep_clear_flush (clear, TLB shootdown)
 *   [wp: mapcount + 1 + swapcache !=           [the same]
 *    page_count → set_pte_at(orig), refuse]
 *   [replace: get_page(kpage), rmap]           [the same]
 *   set_pte_at_notify: change_pte, set_pte     set_pte_at_notify: set_pte, change_pte —
 *                                                invalidate_page to a subscriber without
 *                                                change_pte (the HCA), under the lock
 *   [replace: page_remove_rmap, put_page(page)] [the same]
 *   unlock                                     unlock
 *   invalidate_range_end(mmun_start, _end)
 *
 * In v3.7 KVM's invalidate_range_start already zapped the sPTE, so the change_pte that follows
 * under the lock finds nothing (kvm.change_pte found: false; the run report counts them); the
 * HCA (ib_umem_odp: no change_pte) sees only the range start and end. In v3.6 KVM's change_pte
 * switches its sPTE to the KSM page, and the HCA gets invalidate_page under the PT lock: a
 * device that sleeps there is no-sleep-under-ptlock.
 *
 * write_protect_page refuses a page with references beyond its mappings (and the swap cache's):
 * a pinned MR's pages are never merged (ksm.merge event, result refused, reason pinned, with
 * the two counts). mmlab's ksmd takes no reference of its own (follow_page's FOLL_GET), so the
 * check is page_mapcount + swapcache == page_count, the kernel's with both sides one less.
 *
 * Locks: mmap_sem for read around each try_to_merge_with_ksm_page (as the kernel takes it),
 * the split PTE lock of the page. Crash safety (issue 15): replace_page's get_page(kpage) is
 * recorded in its own step ({mem}:pending u:<rec>, ksmReplaceGet) and ended with the put it
 * owes (ksmReplaceEnd): put_page(page) once the PTE maps kpage, kpage's mapping back if it never
 * came to. A replica that dies in between (crash points replace_page.kpage_got, .set) leaves the
 * record to a survivor's reaper, which fences it off the process, reads the PTE and ends the
 * record the same way (orphan_ranges.ts). The other steps are whole in Redis: a PTE cleared under
 * the lock (w = 3) is put back by the next fault when its holder is gone; a page made a KSM page
 * and never merged with another stays one (mapped once, as try_to_merge_two_pages's break_cow
 * would have left it until its next write).
 *
 *   mm-0 (replace_page, pid 7 vpn 5)           mm-1 (reaper)
 *   ksmReplaceGet(r): kpage 4 map+1, u:r
 *   ksmPteClear; set_pte_at_notify(kpage 4)
 *   ✗ killed (replace_page.set)
 *                                             owner of u:r dead: pendingFence(7, mm-0.a1)
 *                                             PTE of vpn 5 maps kpage 4 → ksmReplaceEnd(r, 1):
 *                                             put_page(page)
 */
import { crashPoint } from './crash_point';
import { PAGE_SIZE, type Res } from '@mmlab/protocol';
import {
  type Pte,
  ksmPageInfo,
  ksmPteClear,
  ksmReplaceEnd,
  ksmReplaceGet,
  ksmStableInsert,
  pteLockOfVpn,
  ptePresent,
} from '@mmlab/model';
import type { MmContext } from './context';
import { notifyOf } from './eras';
import {
  type HeldLock,
  mmapReadLock,
  mmapReadUnlock,
  ptlLock,
  ptlUnlock,
  traceUnlock,
  underPtl,
} from './locks';
import {
  type RangeInvalidation,
  invalidateRangeEnd,
  invalidateRangeStart,
  withinRange,
} from './mmu_notifier';
import { handleMmFault, setPteAtNotify } from './memory';
import { staleLease } from './pagewalk';
import { flushTlbRange } from './tlbflush';

export type KsmResult = Res<'ksmMerge'>;

/** One page ksmd looks at (its rmap_item): where, and the frame it found there. */
interface Item {
  readonly pid: number;
  readonly vpn: number;
  readonly pfn: number;
  readonly gen: number;
}
type Frame = { pfn: number; gen: number };
/** Why a page was not merged (the ksm.merge event's reason). */
type Refusal = 'pinned' | 'gone' | 'changed' | 'not-anon';

const addrOf = (it: Item): number => it.vpn * PAGE_SIZE;

/**
 * The notifier range around write_protect_page's and replace_page's PT-lock section, as the
 * era says (eras/: v3.7 'range-outside-ptl', 6bdb913f — invalidate_range_start/end with
 * mmun_start = addr, mmun_end = addr + PAGE_SIZE, saved once and given unchanged to the end on
 * every exit path; v3.6 'change-pte-under-ptl' — nothing outside the lock, its
 * set_pte_at_notify does it all, setPteAtNotify in memory.ts).
 */
async function ksmRangeStart(
  ctx: MmContext,
  op: string,
  site: 'write_protect_page' | 'replace_page',
  pid: number,
  mmunStart: number,
  mmunEnd: number,
): Promise<RangeInvalidation | null> {
  if (notifyOf(ctx, site) !== 'range-outside-ptl') return null;
  return invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'clear');
}

/** Run body inside ksmRangeStart's range (if any), its end sent on every path. */
async function withKsmRange<T>(
  ctx: MmContext,
  op: string,
  site: 'write_protect_page' | 'replace_page',
  pid: number,
  addr: number,
  body: () => Promise<T>,
): Promise<T> {
  const mmunStart = addr; /* For mmu_notifiers */
  const mmunEnd = addr + PAGE_SIZE; /* For mmu_notifiers */
  const range = await ksmRangeStart(ctx, op, site, pid, mmunStart, mmunEnd);
  let out: T;
  try {
    out = await withinRange(range, async () => {
      await crashPoint(ctx, `${site}.range_started`);
      return body();
    });
  } finally {
    await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
  await crashPoint(ctx, `${site}.range_ended`);
  return out;
}

/**
 * Models: ksm_do_scan() over the given ranges, mm/ksm.c v3.7: one pass of cmp_and_merge_page
 * on every present anonymous page (see the top of this file).
 */
export async function ksmMerge(
  ctx: MmContext,
  ranges: ReadonlyArray<{ pid: number; addr: number; pages: number }>,
): Promise<KsmResult> {
  const op = ctx.ids.next('ksmd');
  const res: KsmResult = { scanned: 0, merged: 0, stable: 0, refused: [] };
  /** the unstable tree of this pass: content → the first page seen with it */
  const unstable = new Map<number, Item>();
  for (const r of ranges) {
    const first = Math.floor(r.addr / PAGE_SIZE);
    const table = await ctx.store.pageTable(r.pid);
    // the PTEs the range holds, in address order (not every vpn of it: a range of 2^20 pages
    // times 64 kept the replica's event loop busy for seconds, past its liveness lease)
    const inRange = [...table]
      .filter(([vpn]) => vpn >= first && vpn < first + r.pages)
      .sort((a, b) => a[0] - b[0]);
    for (const [vpn, pte] of inRange) {
      if (!ptePresent(pte) || pte.protnone || pte.pfn === 0) continue;
      await cmpAndMergePage(
        ctx,
        op,
        { pid: r.pid, vpn, pfn: pte.pfn, gen: pte.gen },
        unstable,
        res,
      );
    }
  }
  return res;
}

/** Models: cmp_and_merge_page(), mm/ksm.c v3.7 (the checksum wait aside: see the top). */
async function cmpAndMergePage(
  ctx: MmContext,
  op: string,
  it: Item,
  unstable: Map<number, Item>,
  res: KsmResult,
): Promise<void> {
  const info = await ksmPageInfo(ctx.store, it.pfn, it.gen);
  // a page freed or remapped since the walk, a file's page, or one a fault has in flight
  if (!info.live || !info.anon || info.pending) return;
  res.scanned++;
  // "ksm page forked": already the KSM page of its content
  if (info.ksm) return;
  const refuse = (reason: Refusal, counts?: { map: number; ref: number }) => {
    res.refused.push({ pid: it.pid, addr: addrOf(it), reason });
    ctx.tracer.emit({
      kind: 'ksm.merge',
      op,
      pid: it.pid,
      addr: addrOf(it),
      pfn: it.pfn,
      gen: it.gen,
      result: 'refused',
      reason,
      ...(counts && { mapcount: counts.map, refcount: counts.ref }),
    });
  };
  // stable_tree_search(page)
  if (info.kpfn !== 0) {
    const r = await tryToMergeWithKsmPage(ctx, op, it, { pfn: info.kpfn, gen: info.kgen });
    if (r === 'merged') res.merged++;
    else refuse(r.why, r.counts);
    return;
  }
  // unstable_tree_search_insert(rmap_item, page)
  const tree = unstable.get(info.data);
  if (!tree || (tree.pfn === it.pfn && tree.gen === it.gen)) {
    unstable.set(info.data, it);
    return;
  }
  unstable.delete(info.data);
  const r = await tryToMergeTwoPages(ctx, op, it, tree);
  if (r.ok) {
    res.stable++;
    res.merged += 2;
    return;
  }
  const failed = r.who === 'tree' ? tree : it;
  res.refused.push({ pid: failed.pid, addr: addrOf(failed), reason: r.why });
  ctx.tracer.emit({
    kind: 'ksm.merge',
    op,
    pid: failed.pid,
    addr: addrOf(failed),
    pfn: failed.pfn,
    gen: failed.gen,
    result: 'refused',
    reason: r.why,
    ...(r.counts && { mapcount: r.counts.map, refcount: r.counts.ref }),
  });
  // the tree page stays in the unstable tree (the kernel removes nothing on a failed merge)
  unstable.set(info.data, tree);
}

type MergeOutcome = 'merged' | { why: Refusal; counts?: { map: number; ref: number } };

/**
 * Models: try_to_merge_two_pages(), mm/ksm.c v3.7 — page (this one) becomes the KSM page, then
 * tree_page is replaced by it; if that fails, break_cow(rmap_item) un-merges page again.
 */
async function tryToMergeTwoPages(
  ctx: MmContext,
  op: string,
  it: Item,
  tree: Item,
): Promise<
  | { ok: true }
  | { ok: false; who: 'page' | 'tree'; why: Refusal; counts?: { map: number; ref: number } }
> {
  const first = await tryToMergeWithKsmPage(ctx, op, it, null);
  if (first !== 'merged') return { ok: false, who: 'page', ...first };
  // page is the KSM page (stable_tree_insert), tree_page not replaced by it yet
  await crashPoint(ctx, 'try_to_merge_two_pages.stable');
  const second = await tryToMergeWithKsmPage(ctx, op, tree, it);
  if (second === 'merged') return { ok: true };
  await breakCow(ctx, it);
  return { ok: false, who: 'tree', ...second };
}

/**
 * Models: break_cow(), mm/ksm.c v3.7 — a write fault on the address (handle_mm_fault with
 * FAULT_FLAG_WRITE, under mmap_sem for read): do_wp_page copies the KSM page (never reused),
 * and the KSM page, mapped nowhere else, is freed and leaves the stable tree.
 */
async function breakCow(ctx: MmContext, it: Item): Promise<void> {
  await handleMmFault(ctx, it.pid, addrOf(it), 'write', 'mm').catch(() => undefined);
}

/**
 * Models: try_to_merge_with_ksm_page(), mm/ksm.c v3.7 — down_read(mmap_sem), find the VMA (an
 * anonymous private one: KSM merges only PageAnon pages of VM_MERGEABLE areas),
 * try_to_merge_one_page, up_read. kpage null: make this page the KSM page.
 */
async function tryToMergeWithKsmPage(
  ctx: MmContext,
  op: string,
  it: Item,
  kpage: Item | Frame | null,
): Promise<MergeOutcome> {
  const sem = await mmapReadLock(ctx, it.pid, op);
  try {
    const vma = await ctx.store.findVma(it.pid, it.vpn);
    if (!vma || vma.shared || vma.file) return { why: 'not-anon' };
    return await tryToMergeOnePage(ctx, op, it, kpage);
  } finally {
    await mmapReadUnlock(ctx, sem);
  }
}

/**
 * Models: try_to_merge_one_page(), mm/ksm.c v3.7 — write_protect_page; then with no kpage the
 * page becomes the KSM page (set_page_stable_node + stable_tree_insert, one script), else, if
 * the contents are still identical (pages_identical), replace_page.
 */
async function tryToMergeOnePage(
  ctx: MmContext,
  op: string,
  it: Item,
  kpage: Item | Frame | null,
): Promise<MergeOutcome> {
  if (kpage && kpage.pfn === it.pfn && kpage.gen === it.gen) return 'merged'; // ksm page forked
  const wp = await writeProtectPage(ctx, op, it);
  if ('why' in wp) return wp;
  const base = {
    kind: 'ksm.merge' as const,
    op,
    pid: it.pid,
    addr: addrOf(it),
    pfn: it.pfn,
    gen: it.gen,
  };
  if (!kpage) {
    const s = await ksmStableInsert(ctx.store, it.pfn, it.gen);
    if (s === 'STALE') return { why: 'gone' };
    if (s !== 'OK') return { why: 'changed' }; // another KSM page took this content meanwhile
    ctx.tracer.emit({ ...base, result: 'stable' });
    return 'merged';
  }
  const [a, b] = await Promise.all([
    ksmPageInfo(ctx.store, it.pfn, it.gen),
    ksmPageInfo(ctx.store, kpage.pfn, kpage.gen),
  ]);
  if (!a.live || !b.live || !b.ksm) return { why: 'gone' };
  if (a.data !== b.data) return { why: 'changed' }; // pages_identical()
  if (!(await replacePage(ctx, op, it, kpage, wp.w))) return { why: 'gone' };
  ctx.tracer.emit({ ...base, result: 'merged', kpfn: kpage.pfn, kgen: kpage.gen });
  return 'merged';
}

/**
 * Models: write_protect_page(), mm/ksm.c — v3.7 and v3.6 (see the top of this file). Under
 * the PT lock: page_check_address; a writable PTE is cleared and flushed (ptep_clear_flush:
 * after that no gup_fast can take a new reference), then the counts are checked — a page with
 * extra references (a pin: O_DIRECT, a pinned MR) gets its PTE back as it was and is refused —
 * and the PTE is set read-only with set_pte_at_notify. A read-only PTE is left as it is.
 * → orig_pte's w (what replace_page checks with pte_same) | why it refused.
 */
async function writeProtectPage(
  ctx: MmContext,
  op: string,
  it: Item,
): Promise<{ w: 0 } | { why: Refusal; counts?: { map: number; ref: number } }> {
  const addr = addrOf(it);
  const page: Frame = { pfn: it.pfn, gen: it.gen };
  return withKsmRange(ctx, op, 'write_protect_page', it.pid, addr, async () => {
    const held = await ptlLock(ctx, it.pid, pteLockOfVpn(it.vpn), op);
    let locked = true;
    try {
      const c = await ksmPteClear(
        ctx.store,
        it.pid,
        held.lock,
        held.lease.value,
        held.lease.token,
        it.vpn,
        page,
        'wp',
      );
      if (!c) throw staleLease(ctx, held, 'write_protect_page');
      if (c === 'GONE') return { why: 'gone' as const };
      if (c === 'CLEAN') return { w: 0 as const };
      await ptepClearFlush(ctx, held, addr, page, c.cpumask);
      // the writable PTE cleared and flushed: the count check and the read-only PTE next
      await crashPoint(ctx, 'write_protect_page.cleared', held);
      // "Check that no O_DIRECT or similar I/O is in progress on the page"
      const info = await ksmPageInfo(ctx.store, it.pfn, it.gen);
      const counts = { map: info.map, ref: info.ref };
      if (info.map + (info.swapped ? 1 : 0) !== info.ref) {
        // set_pte_at(mm, addr, ptep, entry): the PTE back as it was, writable
        locked = false;
        const st = await setPteAtNotifyless(ctx, held, addr, { ...page, writable: true });
        if (st !== 'OK') throw staleLease(ctx, held, 'write_protect_page');
        return { why: 'pinned' as const, counts };
      }
      // entry = pte_mkclean(pte_wrprotect(entry)); set_pte_at_notify(mm, addr, ptep, entry)
      locked = false;
      const st = await setPteAtNotify(
        ctx,
        held,
        addr,
        { ...page, writable: false },
        { release: true },
      );
      if (st !== 'OK') throw staleLease(ctx, held, 'write_protect_page');
      return { w: 0 as const };
    } finally {
      if (locked) await ptlUnlock(ctx, held);
    }
  });
}

/**
 * set_pte_at() with no notifier (write_protect_page putting a PTE back as it was, which no
 * secondary MMU ever lost: range start aside, nothing was sent), then unlock. → the set's status.
 */
async function setPteAtNotifyless(
  ctx: MmContext,
  held: HeldLock,
  addr: number,
  pte: Pte,
): Promise<'OK' | 'ESTALE'> {
  const { pid, lock, op } = held;
  const token = held.lease.token;
  const vpn = Math.floor(addr / PAGE_SIZE);
  let st = 'ESTALE' as 'OK' | 'UNFENCED' | 'ESTALE';
  await held.lease.release(
    async () =>
      (st = await ctx.store.setPteUnlock(
        pid,
        lock,
        held.lease.value,
        token,
        vpn,
        pte,
        ctx.incarnation,
        {
          keep: false,
          skipFence: false,
        },
      )) === 'OK',
  );
  if (st === 'OK') ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...pte, lock, token });
  traceUnlock(ctx, held, st === 'OK');
  return st === 'OK' ? 'OK' : 'ESTALE';
}

/** ptep_clear_flush() of a PTE ksmPteClear just cleared under held: traced, TLBs shot down. */
async function ptepClearFlush(
  ctx: MmContext,
  held: HeldLock,
  addr: number,
  page: Frame,
  cpumask: string[],
): Promise<void> {
  const { op, pid, lock } = held;
  ctx.tracer.emit({ kind: 'pte.clear', op, pid, addr, ...page, lock, token: held.lease.token });
  await underPtl(held, () => flushTlbRange(ctx, op, pid, addr, addr + PAGE_SIZE, cpumask));
}

/** replace_page records of this process (ksmReplaceGet): a counter for their names. */
let replaces = 0;

/**
 * Models: replace_page(), mm/ksm.c — v3.7 and v3.6 (see the top of this file). Under the PT
 * lock: pte_same(orig_pte), get_page(kpage) + page_add_anon_rmap, ptep_clear_flush,
 * set_pte_at_notify(mk_pte(kpage) read-only), page_remove_rmap(page) + put_page(page) — the
 * old frame freed here when this was its last reference, after the secondary MMUs let go of it
 * (v3.7: range start; v3.6: change_pte / invalidate_page, both before the put) — then unlock.
 * → whether the PTE now maps kpage.
 */
async function replacePage(
  ctx: MmContext,
  op: string,
  it: Item,
  kpage: Frame,
  origW: 0 | 1,
): Promise<boolean> {
  const addr = addrOf(it);
  const page: Frame = { pfn: it.pfn, gen: it.gen };
  return withKsmRange(ctx, op, 'replace_page', it.pid, addr, async () => {
    const held = await ptlLock(ctx, it.pid, pteLockOfVpn(it.vpn), op);
    let locked = true;
    try {
      const c = await ksmPteClear(
        ctx.store,
        it.pid,
        held.lock,
        held.lease.value,
        held.lease.token,
        it.vpn,
        page,
        'same',
        origW,
      );
      if (!c) throw staleLease(ctx, held, 'replace_page');
      if (c === 'GONE' || c === 'CLEAN') return false;
      // get_page(kpage); page_add_anon_rmap(kpage, vma, addr) — recorded (crash recovery)
      const rec = `${ctx.incarnation}:${op}:${++replaces}`;
      const got = await ksmReplaceGet(ctx.store, rec, ctx.incarnation, it.pid, it.vpn, kpage, page);
      if (!got) {
        // kpage went meanwhile (the kernel holds a reference from get_ksm_page): PTE back
        locked = false;
        await setPteAtNotifyless(ctx, held, addr, { ...page, writable: origW === 1 });
        return false;
      }
      // get_page(kpage) done, the PTE still cleared
      await crashPoint(ctx, 'replace_page.kpage_got', held);
      await ptepClearFlush(ctx, held, addr, page, c.cpumask);
      const st = await setPteAtNotify(
        ctx,
        held,
        addr,
        { ...kpage, writable: false },
        { release: false },
      );
      if (st !== 'OK') {
        locked = false;
        await ksmReplaceEnd(ctx.store, rec, ctx.incarnation, false); // kpage's mapping back
        throw staleLease(ctx, held, 'replace_page');
      }
      // the PTE maps kpage; page_remove_rmap(page) + put_page(page) owed
      await crashPoint(ctx, 'replace_page.set', held);
      // page_remove_rmap(page); put_page(page) — still under the lock, as in the kernel
      const freed = await ksmReplaceEnd(ctx.store, rec, ctx.incarnation, true);
      for (const pfn of freed ?? [])
        if (pfn === page.pfn) ctx.tracer.emit({ kind: 'frame.free', op, ...page });
      return true;
    } finally {
      if (locked) await ptlUnlock(ctx, held);
    }
  });
}
