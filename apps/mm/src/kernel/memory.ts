/**
 * mm/memory.c: the anonymous fault path and page-table teardown.
 *
 * The fault path runs without mmap_sem and without a PT-lock lease, the way the kernel's
 * per-VMA-lock faults run without mmap_lock: each step is one Lua script that checks the
 * mm's seq (mm_lock_seq), that mmap_sem is not write-held and that the PTE lock is free, and
 * then does its page-table update atomically. A step that finds any of those changed retries
 * from the top. Only do_wp_page's copy holds the PT lock across a network wait — the TLB
 * shootdown, which CPUs answer at once, and change_pte, which subscribers must answer without
 * sleeping — and it holds it as a lease with a fencing token.
 *
 * Models: mm/memory.c v3.7 (patched) and v3.6 (legacy).
 */
import {
  MmlabError,
  PAGE_SIZE,
  type Access,
  type FaultKind,
  type MnEvent,
  ZERO_PFN,
} from '@mmlab/protocol';
import { type Pte, pteFrameRef, pteLockOfVpn } from '@mmlab/model';
import { now } from '@mmlab/runtime';
import { type MmContext, backoff, injected, ownerOf } from './context';
import { eraOf, notifyOf } from './eras';
import {
  invalidatePage,
  invalidateRangeEnd,
  invalidateRangeStart,
  mmuNotifierChangePte,
  withinRange,
} from './mmu_notifier';
import {
  type HeldLock,
  debugStallUnderPtl,
  heldPtl,
  ptlUnlock,
  traceUnlock,
  underPtl,
} from './locks';
import { forEachPteTable, staleLease } from './pagewalk';
import {
  type Frame,
  type PcpFrame,
  allocPage,
  drainAllPages,
  putPages,
  putPending,
} from './page_alloc';
import { crashPoint } from './crash_point';
import { putCleared, syscallOf } from './intent';
import { flushTlbRange } from './tlbflush';
import { directReclaim, wakeupKswapd, withDirectReclaim } from './vmscan';
import { type XipPage, xipFileFault } from './filemap_xip';
import {
  doHugePmdAnonymousPage,
  doHugePmdWpPage,
  thpFaultOrder,
  zapHugePmdRange,
} from './huge_memory';
import { hugetlbFault, unmapHugepageRange } from './hugetlb';

export interface FaultResult extends Pte {
  kind: FaultKind;
  retries: number;
}

const lockOf = pteLockOfVpn;

/** A write fault do_wp_page handles: the PTE it found (orig_pte) at the mm seq it read. */
interface WpFault {
  readonly op: string;
  readonly pid: number;
  readonly vpn: number;
  readonly old: Pte;
  readonly seq: number;
  readonly agent: string;
  /** the mmap_sem write lease the faulting caller holds itself ('' none): see handleMmFault */
  readonly mmapSem: string;
}

/**
 * handle_mm_fault(): resolve one fault at addr for agent; returns the PTE now installed.
 * With telemetry on, one `handle_mm_fault` span (child of the fault request's span) whose
 * attributes are the fault.begin and fault.end events' fields.
 *
 * mmapSem: the value ("owner|token") of the mmap_sem write lease the caller holds itself — a
 * pinned registration (ib_umem_get) calls get_user_pages under down_write. Its own faults pass
 * the scripts' "mmap_sem write-held" check; every other fault still finds it held and waits:
 *
 *   ib_umem_get (mm-0, holds mmap_sem W)     CPU store to another page (mm-1)
 *   fault(page 0, mmapSem = "mm-0…|7")
 *     semW is "mm-0…|7": ours → installed  fault(page 5, mmapSem = "")
 *                                           semW held, not ours → BUSY, back off ...
 *   up_write
 *                                           fault(page 5) → installed
 */
export function handleMmFault(
  ctx: MmContext,
  pid: number,
  addr: number,
  access: Access,
  agent: string,
  mmapSem = '',
): Promise<FaultResult> {
  const op = ctx.ids.next('fault');
  const t0 = now();
  const tries = { retries: 0 };
  // One emission for both views: fault.begin/fault.end are the span's attributes (Tracer.step).
  return ctx.tracer.step(
    'handle_mm_fault',
    { kind: 'fault.begin', op, pid, addr, access, agent, ts: t0 },
    () => __handleMmFault(ctx, op, pid, addr, access, agent, mmapSem, tries),
    (o) => {
      const err = o.ok ? undefined : MmlabError.wrap(o.error);
      return {
        kind: 'fault.end',
        op,
        pid,
        addr,
        access,
        agent,
        result: err ? err.code : 'ok',
        ...(o.ok ? { how: o.value.kind, pfn: o.value.pfn, gen: o.value.gen } : {}),
        durMs: now() - t0,
        retries: tries.retries,
      };
    },
  );
}

async function __handleMmFault(
  ctx: MmContext,
  op: string,
  pid: number,
  addr: number,
  access: Access,
  agent: string,
  mmapSem: string,
  tries: { retries: number },
): Promise<FaultResult> {
  const vpn = Math.floor(addr / PAGE_SIZE);
  const lock = lockOf(vpn);
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  // do_anonymous_page() allocates before it takes the PT lock; so do we, for write faults: a
  // frame of this replica's batch (buffered_rmqueue from the per_cpu_pages list: no Redis call
  // while the batch lasts), installed by the one fault script. A read of a shared mapping's
  // untouched page allocates (allocPage, a pending frame) when the script asks for one.
  let page: Frame | null = null;
  let fresh: PcpFrame | null = null;
  /** drain_all_pages() was tried once: memory really is empty */
  let drained = false;
  /** rounds of direct reclaim this fault took */
  let reclaimed = 0;
  let retries = 0;
  /** what the frame given to the fault script is for a mapping of a file (NEED_FILE): a copy of page pgoff */
  let file: { mode: '' | 'cow'; pgoff: number | null } = { mode: '', pgoff: null };
  // THP (config thp: always): the fault script is offered the huge page order first, with no
  // frame taken ahead (a batch frame would only hold memory a huge page may need); once it
  // answered anything but NEED_HUGE, or no huge page was free (fallback), small pages only.
  const thp = thpFaultOrder(ctx);
  let hugeTried = thp === 0;
  try {
    for (; ; tries.retries = ++retries) {
      if (retries > 0) await backoff(retries, deadline, `fault at ${addr} of pid ${pid}`);
      if (access === 'write' && !fresh && !page && hugeTried) {
        fresh = await ctx.pcp.take(ctx).catch(() => null);
        // Before its first batch frame goes into pid: pid in the owner's reaper index (one call
        // per incarnation and pid), so that the reaper fences it off pid before it gives the
        // batch back if it dies (see orphan_ranges.ts: the fence refuses the install).
        if (fresh) {
          await indexFor(ctx, fresh.owner, pid);
          await crashPoint(ctx, 'do_anonymous_page.taken');
        }
      }
      // The incarnation whose batch the frame is (a replica reborn mid-fault installs none of
      // its old incarnation's frames unfenced): the fault script is fenced by it.
      const who = fresh?.owner ?? ctx.incarnation;
      const drop = ctx.pcp.dropsFor(who, pid);
      let step: Awaited<ReturnType<MmContext['store']['fault']>>;
      try {
        step = await ctx.store.fault(
          pid,
          vpn,
          access,
          agent,
          fresh ?? page,
          who,
          mmapSem,
          { batch: fresh !== null, drop },
          null,
          file.mode,
          file.pgoff,
          hugeTried ? 0 : thp,
        );
      } catch (e) {
        ctx.pcp.restoreDrops(who, pid, drop);
        throw e;
      }
      if ('undone' in step && step.undone)
        // A COW that died (or lost its lease) after clearing this PTE: the old page is back.
        ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...step.pte, lock, token: null });
      switch (step.r) {
        case 'ESRCH':
          throw new MmlabError('ESRCH', `no process ${pid}`);
        case 'FENCED':
          throw fencedOff(ctx, pid);
        case 'SIGSEGV':
          throw new MmlabError('SIGSEGV', `${access} at 0x${addr.toString(16)} in pid ${pid}`);
        case 'HUGETLB':
          // is_vm_hugetlb_page(vma): handle_mm_fault → hugetlb_fault (hugetlb.ts)
          return await hugetlbFault(ctx, op, pid, vpn, access, agent, mmapSem, tries);
        case 'BUSY':
          continue;
        case 'NEED_HUGE': {
          // do_huge_pmd_anonymous_page(): a huge page for the aligned range, or small pages
          const r = await doHugePmdAnonymousPage(ctx, op, pid, vpn, step.hvpn, agent, mmapSem);
          if (r === 'fallback') hugeTried = true;
          if (r === 'fallback' || r === null) continue;
          const out: FaultResult = { ...r, kind: 'thp', retries };
          return out;
        }
        case 'NEED_HUGE_WP': {
          // do_huge_pmd_wp_page(): a write to a read-only huge entry
          if (fresh) await ctx.pcp.putBack(ctx, fresh);
          fresh = null;
          const wp = await doHugePmdWpPage(ctx, {
            op,
            pid,
            vpn,
            hvpn: step.hvpn,
            head: step.head,
            seq: step.seq,
            agent,
            mmapSem,
          });
          if (!wp) continue;
          const out: FaultResult = { ...wp, retries };
          return out;
        }
        case 'NEED_PAGE':
          // not a THP range (the script answered without NEED_HUGE): small pages from now on
          if (!hugeTried) {
            hugeTried = true;
            continue;
          }
          // Only when the batch and the free list were empty, or a read of a shared mapping.
          // Before ENOMEM, as __alloc_pages_direct_reclaim() does: the replicas' batches go
          // back (drain_all_pages), and the fault tries once more.
          if (access === 'write' && !drained) {
            drained = true;
            await drainAllPages(ctx);
            continue;
          }
          // then __alloc_pages_direct_reclaim(): reclaim a batch and try again, or fail as out
          // of memory (vmscan.ts)
          if (access === 'write') {
            await directReclaim(ctx, `the fault at 0x${addr.toString(16)}`, reclaimed++);
            drained = false;
            continue;
          }
          page = await withDirectReclaim(ctx, `the fault at 0x${addr.toString(16)}`, () =>
            allocPage(ctx, op, null, { pid, vpn }),
          );
          continue;
        case 'ZERO':
        case 'ANON': {
          if (step.r === 'ANON' && fresh) {
            // installed, and recorded in {p:<pid>}:rsv: the next refill tells {mem}
            ctx.pcp.installed(fresh, pid);
            ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: fresh.pfn, gen: fresh.gen });
            fresh = null;
          } else if (step.r === 'ANON' && page) {
            // installed: it belongs to the page table now, no longer pending
            await ctx.store.pagesInstalled(ctx.incarnation, [page]);
            page = null;
          }
          ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...step.pte, lock, token: null });
          if (step.r === 'ANON') await crashPoint(ctx, 'do_anonymous_page.installed');
          const r: FaultResult = {
            ...step.pte,
            kind: step.r === 'ZERO' ? 'zero' : 'anon',
            retries,
          };
          return r;
        }
        case 'WP_SHARED': {
          ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...step.pte, lock, token: null });
          // do_wp_page() → wp_page_shared: set_page_dirty_balance() of a file's page (a
          // writeback that cleaned it between the PTE write and here finds the PTE writable:
          // page_mkclean tells it, and it writes the page anyway)
          if (step.file) await ctx.store.setPageDirty(step.pte.pfn, step.pte.gen);
          const r: FaultResult = { ...step.pte, kind: 'wp-reuse', retries };
          return r;
        }
        case 'SPURIOUS': {
          const r: FaultResult = { ...step.pte, kind: 'spurious', retries };
          return r;
        }
        case 'SWAP': {
          // do_swap_page(): no frame of the batch is needed (the page comes from the swap
          // cache or is read into a frame of its own)
          if (fresh) await ctx.pcp.putBack(ctx, fresh);
          fresh = null;
          const pte = await doSwapPage(ctx, op, pid, vpn, access, agent, mmapSem, step);
          if (!pte) continue;
          // read-only: a write goes on to do_wp_page, whose reuse rule counts the slot's other
          // swap PTEs (reuse_swap_page)
          if (access === 'write') continue;
          const r: FaultResult = { ...pte, kind: 'swap', retries };
          return r;
        }
        case 'SWAPIN':
          // only an answer to doSwapPage's call
          throw new MmlabError('EINTERNAL', 'fault installed a swapped-in page it was not given');
        case 'FILE':
          // only an answer to doFileFault's call
          throw new MmlabError('EINTERNAL', 'fault installed a file page it was not given');
        case 'NEED_FILE': {
          if (!step.cow) {
            // a read, or a write to a shared mapping: the page cache's page itself
            if (fresh) await ctx.pcp.putBack(ctx, fresh);
            fresh = null;
            const pte = await doFileFault(ctx, op, pid, vpn, access, agent, mmapSem, step);
            if (!pte) continue;
            const r: FaultResult = { ...pte, kind: 'file', retries };
            return r;
          }
          // __do_fault() for a write to a private mapping: a private copy of the file's page
          // (copy_user_highpage into this fault's frame), installed as an anonymous page
          if (!fresh && !page)
            page = await withDirectReclaim(ctx, `the fault at 0x${addr.toString(16)}`, () =>
              allocPage(ctx, op, null, { pid, vpn }),
            );
          const src = await filemapFault(ctx, op, step, 'ref', addr);
          try {
            await ctx.store.copyPage(src.pfn, (fresh ?? page)!.pfn, null);
          } finally {
            await putPages(ctx, op, [src], 'ref');
          }
          file = { mode: 'cow', pgoff: step.pgoff };
          continue;
        }
        case 'NEED_WP': {
          const f: WpFault = { op, pid, vpn, old: step.pte, seq: step.seq, agent, mmapSem };
          // The COW allocates its own copy (allocPage, with copy_user_highpage: a pending frame
          // that owes old's put); the batch frame taken for this fault goes back first (a COW
          // may wait long for its invalidation, and a small machine needs the frame).
          if (fresh) await ctx.pcp.putBack(ctx, fresh);
          fresh = null;
          const wp = await doWpPage(ctx, f);
          if (!wp.result) continue;
          const r: FaultResult = { ...wp.result, retries };
          return r;
        }
      }
    }
  } catch (e) {
    throw MmlabError.wrap(e);
  } finally {
    // The frame we took ahead and did not install goes back: to the batch, or (pending) to {mem}.
    if (fresh) await ctx.pcp.putBack(ctx, fresh);
    if (page) await putPending(ctx, op, [page]);
  }
}

/**
 * Models: do_swap_page(), mm/memory.c v3.7 (v3.6 alike) — a fault on a swap entry. The page is
 * the swap cache's, or a frame read from the slot and added to the swap cache
 * (lookup_swap_cache / swapin_readahead: one {mem} script, swapinPage, which charges it as a
 * mapping); the fault script installs it read-only over that same swap entry (pte_same under
 * the PT lock: the script is atomic), and then the entry is freed (swap_free). The page stays
 * in the swap cache (a clean copy: reclaim can drop it again without writing) until a write
 * reuses it (reuse_swap_page) or the slot has no swap PTE left and it is reclaimed.
 *
 *   fault A (pid 1)                     munmap (pid 1)
 *   swapinPage(slot 5) → pfn 9 (ref 2)
 *                                       zap: swap PTE → none, swap_free(5)
 *   fault(swap = 5): PTE is none → ...  (not SWAPIN)
 *   put_page(9): still in the swap cache, ref 1 — reclaim frees it later
 *
 * Crash-safe (issue 15) through the page's pending tag ({mem}:pending, "…|-slot:gen"): a
 * replica that dies between swapinPage and the install (crash point do_swap_page.read) leaves
 * the page charged with a mapping no PTE has — a survivor's reaper finds no PTE of pid holding
 * it and puts the mapping back (the page stays in the swap cache); one that dies after the
 * install (do_swap_page.installed) leaves the swap_free owed — the reaper finds the page in a PTE
 * and does it (the tag's old). A page another process maps already is not tagged (a put of
 * theirs would drop the tag): that swap-in is not crash-safe.
 *
 *   mm-0 (fault of pid 7 at vpn 5)            mm-1 (reaper)
 *   swapinPage(slot 3) → pfn 9, tagged
 *     "g|mm-0.a1|7|5|-3:1"
 *   fault: SWAPIN (PTE → pfn 9)
 *   ✗ killed (do_swap_page.installed)
 *                                             pendingFence(7, mm-0.a1): a PTE holds pfn 9
 *                                             pendingReap: FORWARD — untag, swap_free(3)
 */
async function doSwapPage(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  access: Access,
  agent: string,
  mmapSem: string,
  entry: { slot: number; gen: number },
): Promise<Pte | null> {
  const page = await withDirectReclaim(
    ctx,
    `the swap-in at 0x${(vpn * PAGE_SIZE).toString(16)}`,
    () => ctx.store.swapinPage(entry.slot, entry.gen, { owner: ctx.incarnation, pid, vpn }),
  );
  if (page === 'STALE') return null; // the entry went meanwhile: fault again
  // swapin_readahead(): the page is in the swap cache, charged with the mapping to come
  await crashPoint(ctx, 'do_swap_page.read');
  const step = await ctx.store.fault(
    pid,
    vpn,
    access,
    agent,
    page,
    ctx.incarnation,
    mmapSem,
    undefined,
    entry,
  );
  if (step.r !== 'SWAPIN') {
    // the PTE changed under us: the page goes back (its swap-cache place keeps it, if any)
    if (page.tagged) await putPending(ctx, op, [page]);
    else await putPages(ctx, op, [page]);
    return null;
  }
  const addr = vpn * PAGE_SIZE;
  ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...step.pte, lock: lockOf(vpn), token: null });
  ctx.tracer.emit({
    kind: 'swap.in',
    op,
    pid,
    addr,
    pfn: page.pfn,
    gen: page.gen,
    slot: entry.slot,
    slotGen: entry.gen,
    cached: page.cached,
  });
  // the PTE maps the page; the slot still counts the swap entry it replaced
  await crashPoint(ctx, 'do_swap_page.installed');
  // swap_free(entry): this PTE no longer names the slot — with the tag, in the step that drops
  // it (pagesInstalled: the tag's old), unless a reaper or a put that found the page did both
  if (page.tagged) await ctx.store.pagesInstalled(ctx.incarnation, [page]);
  else await putPages(ctx, op, [{ pfn: -entry.slot, gen: entry.gen }]);
  return step.pte;
}

/**
 * Models: filemap_fault(), mm/filemap.c v3.7: page pgoff of file ino from its page cache (read
 * in from the file when not cached: an allocation, which may reclaim), with a reference of kind
 * (a mapping's, or a bare one). A page past the end of the file is SIGBUS. An XIP file's
 * vm_ops->fault is xip_file_fault (filemap_xip.ts): its block, or the sparse page for a hole.
 */
async function filemapFault(
  ctx: MmContext,
  op: string,
  need: { ino: number; pgoff: number; wshared: boolean },
  kind: 'map' | 'ref',
  addr: number,
): Promise<XipPage> {
  const { ino, pgoff } = need;
  const r = await withDirectReclaim(ctx, `the file fault at 0x${addr.toString(16)}`, () =>
    ctx.store.filemapFault(ino, pgoff, kind),
  );
  if (r === 'SIGBUS')
    throw new MmlabError('SIGBUS', `page ${pgoff} is past the end of file ${ino}`);
  if (r === 'ENOENT') throw new MmlabError('EINTERNAL', `a VMA maps file ${ino}, which is gone`);
  if (r === 'XIP') return xipFileFault(ctx, op, need, kind, addr);
  wakeupKswapd(ctx);
  return r;
}

/**
 * Models: do_linear_fault() → __do_fault(), mm/memory.c v3.7, for a read of a file mapping or a
 * write to a shared one: the file's page-cache page (charged as the mapping the PTE will be) is
 * installed over the pte_none it found (the fault script: pte_same under the PT lock, atomic),
 * writable for a write to a shared mapping — marked dirty before (set_page_dirty: a writeback
 * between the two finds it dirty and writes it, harmlessly). When the PTE changed meanwhile the
 * page's charge goes back and the fault looks again (null).
 */
async function doFileFault(
  ctx: MmContext,
  op: string,
  pid: number,
  vpn: number,
  access: Access,
  agent: string,
  mmapSem: string,
  need: { ino: number; pgoff: number; wshared: boolean },
): Promise<Pte | null> {
  const addr = vpn * PAGE_SIZE;
  const page = await filemapFault(ctx, op, need, 'map', addr);
  let installed = false;
  try {
    if (access === 'write' && !page.xip) await ctx.store.setPageDirty(page.pfn, page.gen);
    const step = await ctx.store.fault(
      pid,
      vpn,
      access,
      agent,
      page,
      ctx.incarnation,
      mmapSem,
      undefined,
      null,
      'page',
      need.pgoff,
    );
    if (step.r === 'FENCED') throw fencedOff(ctx, pid);
    if (step.r !== 'FILE') return null;
    installed = true;
    ctx.tracer.emit({
      kind: 'pte.set',
      op,
      pid,
      addr,
      ...step.pte,
      lock: lockOf(vpn),
      token: null,
    });
    return step.pte;
  } finally {
    if (!installed) await putPages(ctx, op, [page]);
    // xip_file_fault's write_seqcount_end: the sparse page is in the PTE, or given back
    if (page.xip === 'sparse') await ctx.store.xipSparseDone();
  }
}

/**
 * pid in the reaper index of incarnation owner before the first frame of its batch goes into
 * pid (Store.invIndex: cached, one call per incarnation and pid). Refused once the reaper
 * found owner dead: owner may install nothing anywhere new (ESTALE, like a fenced pid).
 */
async function indexFor(ctx: MmContext, owner: string, pid: number): Promise<void> {
  try {
    await ctx.store.invIndex(owner, pid);
  } catch (e) {
    if (e instanceof MmlabError && e.code === 'ESTALE') throw fencedOff(ctx, pid);
    throw e;
  }
}

/**
 * This incarnation was found dead on pid's address space (keys.ts :fenced: it was stopped
 * past its liveness lease and another replica reaped its pending frames there): it may write
 * nothing there any more. Indefinite for the caller, who asks again (another replica, or this
 * one once it runs as a new incarnation).
 */
function fencedOff(ctx: MmContext, pid: number): MmlabError {
  ctx.onFenced?.();
  return new MmlabError(
    'ESTALE',
    `${ctx.incarnation} was found dead and fenced off pid ${pid}: the fault is not done`,
  );
}

/**
 * Models: reuse_swap_page(), mm/swapfile.c v3.7 — may do_wp_page() write to this anonymous
 * page in place? Yes when page_mapcount() plus, for a page in the swap cache, page_swapcount()
 * (swap PTEs of forked siblings still naming its slot: they would read this page back from the
 * swap cache) is at most 1; a page reused that way leaves the swap cache (one {mem} script,
 * reuseSwapPage). References that are not mappings — a get_user_pages() pin — do not count,
 * so a pinned page mapped once is reused and the device reading through its pin keeps seeing
 * what the CPU writes. KSM pages are never reused (PageKsm: the script answers false for a
 * PG_ksm frame, so do_wp_page copies it; ksm.ts). The one place the rule lives, so later eras can swap it: 5.9–5.18
 * reuse on page_count() == 1, 5.19+ on PageAnonExclusive.
 */
export async function reuseSwapPage(ctx: MmContext, page: Pte): Promise<boolean> {
  return (await ctx.store.reuseSwapPage(page.pfn, page.gen)).reuse;
}

/**
 * Models: do_wp_page(), mm/memory.c — v3.7 (patched) and v3.6 (legacy). A write to a present
 * read-only PTE in a writable VMA: reuse the page when reuseSwapPage() says it is ours alone;
 * otherwise copy it (the zero page is always copied) and replace the PTE under the PT lock.
 *
 *   patched (v3.7 = the seed + 6bdb913f)      legacy (v3.6)
 *   cow_user_page (copy, no lock)             cow_user_page (copy, no lock)
 *   invalidate_range_start(mmun_start, _end)
 *   lock PTL, pte_same?                       lock PTL, pte_same?
 *   ptep_clear_flush (clear, TLB shootdown)   ptep_clear_flush (clear, TLB shootdown)
 *   set_pte_at_notify: change_pte, set_pte    set_pte_at_notify: set_pte, change_pte
 *                                               (invalidate_page to a subscriber without
 *                                               change_pte: __mmu_notifier_change_pte v3.6)
 *   unlock                                    unlock
 *   invalidate_range_end(mmun_start, _end)
 *   put_page(old)                             put_page(old)
 *
 * change_pte is sent under the PT lock in both: it must be answered without sleeping
 * (ATOMIC_CALLBACKS). v3.7 sends it only to subscribers that have it (the 3.19 HCA has not:
 * the range start/end cover it). v3.6 could not sleep in any callback (rcu_read_lock): legacy
 * is what a subscriber sleeping in that invalidate_page under the lock would have done.
 *
 * Inject `free-before-invalidate-page` replays the seed alone (before 6bdb913f: invalidate_page
 * after the unlock, no range) with the old page freed before that invalidate_page — the
 * mistake the seed's comment "cow happened, notify before releasing old_page" guards against.
 * Inject `skip-fence-check` makes the set_pte_at script accept the write without checking the
 * fencing token.
 *
 * Returns no result when the PTE changed under us (the caller retries the fault).
 */
async function doWpPage(
  ctx: MmContext,
  f: WpFault,
): Promise<{ result: (Pte & { kind: FaultKind }) | null }> {
  const { op, pid, vpn, old, seq, agent } = f;
  const addr = vpn * PAGE_SIZE;
  const lock = lockOf(vpn);
  if (old.pfn !== ZERO_PFN && (await reuseSwapPage(ctx, old))) {
    const r = await ctx.store.wpReuse(pid, vpn, old, seq, agent, f.mmapSem);
    if (r !== 'OK') return { result: null };
    const pte = { ...old, writable: true };
    ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...pte, lock, token: null });
    return { result: { ...pte, kind: 'wp-reuse' } };
  }
  // cow_user_page(): copy before taking the lock (alloc_page + copy_user_highpage: one script).
  // The new page's pending tag owes old's put (done with pagesInstalled, or by whoever finds
  // the new page installed if we die first).
  const page = await withDirectReclaim(ctx, `the COW at 0x${addr.toString(16)}`, () =>
    allocPage(ctx, op, old, { pid, vpn }),
  );
  await crashPoint(ctx, 'do_wp_page.copied');
  const notify = notifyOf(ctx, 'do_wp_page');
  const seedAlone = injected(ctx, 'free-before-invalidate-page');
  const mmunStart = addr; /* For mmu_notifiers */
  const mmunEnd = addr + PAGE_SIZE; /* For mmu_notifiers */
  let installed = false;
  try {
    // mmu_notifier_invalidate_range_start() is a no-op (null) on an mm without notifiers
    // (mm_has_notifiers); one registered after its check bumps the mm seq (mmap_sem write),
    // and wpCopyLock's seq check then sends this fault back to the top.
    const range =
      notify === 'range-outside-ptl' && !seedAlone
        ? await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, 'clear')
        : null;
    await crashPoint(ctx, 'do_wp_page.range_started');
    try {
      installed = await withinRange(range, () => wpPageCopy(ctx, f, page));
    } finally {
      if (range) await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
    }
  } finally {
    // Not installed: the copy goes back (its tag owes old's put: a retry allocates afresh).
    if (!installed) await putPending(ctx, op, [page]);
  }
  if (!installed) return { result: null };
  // put_page(old), as the new page's install owes it (pagesInstalled: once, whoever does it).
  await crashPoint(ctx, 'do_wp_page.range_ended');
  const freed = await ctx.store.pagesInstalled(ctx.incarnation, [page]);
  for (const pfn of freed) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: old.gen });
  // The mistake the seed's comment guards against: the old page freed first.
  if (seedAlone) await invalidatePage(ctx, op, pid, addr);
  await crashPoint(ctx, 'do_wp_page.freed');
  return { result: { pfn: page.pfn, gen: page.gen, writable: true, kind: 'wp-copy' } };
}

/**
 * do_wp_page()'s PT-lock section (see above): take the lock with pte_same (spinning while
 * another holder has it), clear and flush, set_pte_at_notify, unlock. → false when the PTE
 * changed or a writer of mmap_sem came in (the fault retries from the top).
 */
async function wpPageCopy(ctx: MmContext, f: WpFault, page: Frame): Promise<boolean> {
  const { op, pid, vpn, old, seq, agent } = f;
  const addr = vpn * PAGE_SIZE;
  const lock = lockOf(vpn);
  const owner = ownerOf(ctx, op);
  const t0 = now();
  const deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  let r: Awaited<ReturnType<MmContext['store']['wpCopyLock']>>;
  for (let attempt = 0; ; attempt++) {
    r = await ctx.store.wpCopyLock(
      pid,
      vpn,
      old,
      seq,
      owner,
      ctx.env.MMLAB_LEASE_TTL_MS,
      lock,
      agent,
      ctx.incarnation,
      f.mmapSem,
    );
    // spin_lock(ptl): spin while the PT lock is held; a writer of mmap_sem (or a moved PTE)
    // sends the fault back to the top, where it waits as it would on mmap_sem.
    if (r.r === 'BUSY' && r.what === 'ptl') {
      await backoff(attempt + 1, deadline, `${lock} of pid ${pid}`);
      continue;
    }
    break;
  }
  if (r.r === 'FENCED') throw fencedOff(ctx, pid);
  if (r.r !== 'OK') return false;
  const held = heldPtl(ctx, pid, lock, op, r.token, t0);
  ctx.tracer.emit({ kind: 'pte.clear', op, pid, addr, ...old, lock, token: r.token });
  const pte: Pte = { pfn: page.pfn, gen: page.gen, writable: true };
  await underPtl(held, async () => {
    await debugStallUnderPtl(ctx, held);
    await crashPoint(ctx, 'do_wp_page.ptl_held', held);
    // ptep_clear_flush(): the PTE was cleared with the lock; shoot the TLBs down.
    await flushTlbRange(ctx, op, pid, addr, addr + PAGE_SIZE, r.cpumask);
  });
  const st = await setPteAtNotify(ctx, held, addr, pte, {
    release: true,
    skipFence: injected(ctx, 'skip-fence-check'),
    afterSet: () => crashPoint(ctx, 'do_wp_page.set'),
  });
  if (st === 'ESTALE')
    throw new MmlabError(
      'ESTALE',
      `lost ${lock} of pid ${pid} during the COW of 0x${addr.toString(16)}`,
    );
  return true;
}

/**
 * Models: set_pte_at_notify(), include/linux/mmu_notifier.h — v3.7 (patched) and v3.6
 * (legacy), under the held PT lock; the one place its order is chosen:
 *
 *   v3.7                                      v3.6
 *   mmu_notifier_change_pte(mm, addr, pte)    set_pte_at(mm, addr, ptep, pte)
 *   set_pte_at(mm, addr, ptep, pte)           mmu_notifier_change_pte(mm, addr, pte)
 *                                               (invalidate_page to a subscriber without
 *                                               change_pte: __mmu_notifier_change_pte v3.6)
 *
 * Callers: do_wp_page (wpPageCopy) and KSM's write_protect_page and replace_page (ksm.ts).
 * release: drop the PT lock once done (v3.7: the write and the unlock are one script; v3.6
 * unlocks after its change_pte); else the caller still holds it (replace_page puts the old
 * page before its unlock). afterSet runs right after the PTE is written and traced.
 * skipFence: inject `skip-fence-check` (the write accepted without checking the fencing token).
 * → 'OK' (the lock released iff release) | 'UNFENCED' (written without the lease: only with
 * skipFence) | 'ESTALE' (the lease was lost: nothing written); on anything but 'OK' the lock
 * is gone (its release traced).
 */
export async function setPteAtNotify(
  ctx: MmContext,
  held: HeldLock,
  addr: number,
  pte: Pte,
  opts: { release: boolean; skipFence?: boolean; afterSet?: () => Promise<void> },
): Promise<'OK' | 'UNFENCED' | 'ESTALE'> {
  const { op, pid, lock } = held;
  const v36 = eraOf(ctx).setPteAtNotify === 'set-then-change-or-page';
  const vpn = Math.floor(addr / PAGE_SIZE);
  const token = held.lease.token;
  // v3.7: mmu_notifier_change_pte() first, then set_pte_at().
  if (!v36) await underPtl(held, () => mmuNotifierChangePte(ctx, op, pid, addr, pte));
  const keep = v36 || !opts.release;
  let st: 'OK' | 'UNFENCED' | 'ESTALE' = 'ESTALE';
  const set = () =>
    ctx.store.setPteUnlock(pid, lock, held.lease.value, token, vpn, pte, ctx.incarnation, {
      keep,
      skipFence: opts.skipFence ?? false,
    });
  if (keep) st = await set();
  else await held.lease.release(async () => (st = await set()) === 'OK');
  if (st !== 'OK' && keep) await held.lease.release(async () => false);
  if (st === 'ESTALE') {
    ctx.tracer.emit({
      kind: 'pte.reject',
      op,
      pid,
      lock,
      token,
      reason: 'lease lost before set_pte_at',
    });
    traceUnlock(ctx, held, false);
    return st;
  }
  ctx.tracer.emit({ kind: 'pte.set', op, pid, addr, ...pte, lock, token });
  await opts.afterSet?.();
  if (st === 'UNFENCED') {
    // skip-fence-check: written without the lease; the lock (someone else's now) is left alone.
    traceUnlock(ctx, held, false);
    return st;
  }
  if (v36) {
    // v3.6: set_pte_at(), then mmu_notifier_change_pte() — still under the lock; a subscriber
    // without change_pte gets invalidate_page here.
    try {
      await underPtl(held, () => mmuNotifierChangePte(ctx, op, pid, addr, pte, true));
    } catch (e) {
      if (opts.release) await ptlUnlock(ctx, held);
      throw e;
    }
  }
  if (opts.release) {
    if (keep) await ptlUnlock(ctx, held);
    else traceUnlock(ctx, held, true);
  }
  return 'OK';
}

/**
 * zap_page_range(): invalidate_range_start before any PT lock is taken; then zap_pte_range()
 * for each page-table page of [startVpn, endVpn): under its PT lock, clear the PTEs and shoot
 * down the CPU TLBs; after the unlock, free the frames (tlb_finish_mmu: never before every TLB
 * that could map them is flushed, and the subscribers dropped theirs in range_start); then
 * invalidate_range_end with the same mmun_start/mmun_end, on every path.
 */
export async function zapPageRange(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
  event: MnEvent,
): Promise<{ zapped: number; freed: number }> {
  const mmunStart = startVpn * PAGE_SIZE; /* For mmu_notifiers */
  const mmunEnd = endVpn * PAGE_SIZE; /* For mmu_notifiers */
  const range = await invalidateRangeStart(ctx, op, pid, mmunStart, mmunEnd, event);
  try {
    await crashPoint(ctx, `${syscallOf(op)}.range_started`);
    return await withinRange(range, () => zapPteRanges(ctx, op, pid, startVpn, endVpn));
  } finally {
    await invalidateRangeEnd(ctx, range, mmunStart, mmunEnd);
  }
}

/**
 * zap_pte_range() over every existing page-table page of the range; the caller notifies. For an
 * operation with an intent record (intent.ts) the frames each zap clears are recorded there in
 * the same script, and put as one batch of it.
 */
export async function zapPteRanges(
  ctx: MmContext,
  op: string,
  pid: number,
  startVpn: number,
  endVpn: number,
): Promise<{ zapped: number; freed: number }> {
  // zap_pmd_range(): huge entries (zap_huge_pmd, or split first when the range cuts one)
  const huge = await zapHugePmdRange(ctx, op, pid, startVpn, endVpn);
  // unmap_single_vma() of a hugetlb VMA: __unmap_hugepage_range, its own range inside ours
  await unmapHugepageRange(ctx, op, pid, startVpn, endVpn);
  const intent = ctx.intents.get(op);
  /** cleared, and no TLB can map them any more: these may be put */
  const flushed: Frame[] = [];
  try {
    await forEachPteTable(ctx, op, pid, startVpn, endVpn, async (held, s, e) => {
      await debugStallUnderPtl(ctx, held);
      const { lock, lease } = held;
      const r = await ctx.store.zapPteRange(pid, lock, lease.value, lease.token, s, e, intent);
      if (!r) throw staleLease(ctx, held, 'zap_pte_range');
      for (const c of r.cleared.filter((p) => !p.swap && !p.file))
        ctx.tracer.emit({
          kind: 'pte.clear',
          op,
          pid,
          addr: c.vpn * PAGE_SIZE,
          pfn: c.pfn,
          gen: c.gen,
          lock,
          token: lease.token,
        });
      await crashPoint(ctx, `${syscallOf(op)}.zapped`);
      if (r.cleared.length)
        await flushTlbRange(ctx, op, pid, s * PAGE_SIZE, e * PAGE_SIZE, r.cpumask);
      // a swap entry's slot is owed its swap_free (free_swap_and_cache) like a frame's put
      flushed.push(...r.cleared.flatMap(pteFrameRef));
    });
  } catch (e) {
    // Failed half way (a lease lost): what was cleared and flushed still goes back.
    if (flushed.length) await putCleared(ctx, op, flushed).catch(() => 0);
    throw e;
  }
  await crashPoint(ctx, `${syscallOf(op)}.flushed`);
  // tlb_finish_mmu(): the frames go back only now, every TLB that could map them flushed.
  const freed = await putCleared(ctx, op, flushed);
  return { zapped: flushed.length + huge.zapped, freed: freed + huge.freed };
}
