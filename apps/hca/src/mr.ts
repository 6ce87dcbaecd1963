/**
 * Models: struct mlx5_ib_mr with its umem (3.19) — an ib_umem_odp (on demand: nothing pinned,
 * the MTT fills on network page faults and empties on invalidations) or a plain ib_umem (pinned
 * at registration with get_user_pages(write=1), the MTT programmed once, never invalidated).
 *
 * Invariants:
 *   - every MTT install is traced as smap.set, every removal as smap.clear (agent = the HCA);
 *   - an ODP MR's MTT changes only under umemMutex (umem_mutex), except in the non-sleeping
 *     callbacks (change_pte), whose removal and seq bump happen in one tick;
 *   - a pinned MR's MTT maps exactly `pinned` from registration until dereg clears it, and
 *     dereg clears it (and drains its DMA) before it unpins: the frames outlive the entries;
 *   - `dead` (set by dereg under umemMutex) stops a fault in flight from installing;
 *   - ODP: `notifiers` counts the invalidations that reached this umem by ITS overlap with each
 *     callback's own range (start raises, end lowers); a fault installs only when
 *     mmuNotifierRecheck() (ib_umem_mmu_notifier_retry(), libs/subscriber) says install
 *     (counters active, count 0, seq unchanged since its snapshot);
 *   - ODP: `dying` (release received) is never cleared: every later fault is EFAULT.
 */
import { Mutex } from 'async-mutex';
import { type Access, type GupPage, PAGE_SIZE, vpnOf } from '@mmlab/protocol';
import { NotifierSeq } from '@mmlab/subscriber';
import type { HcaContext } from './context';
import { Mtt } from './mtt';

export class MemoryRegion {
  /** umem_odp->umem_mutex: faults install and invalidations zap under it */
  readonly umemMutex = new Mutex();
  readonly mtt = new Mtt();
  /** pinned MRs: the pages gup pinned at registration, unpinned at dereg */
  pinned: readonly GupPage[] = [];
  dead = false;
  /** ib_umem_odp: notifiers_count, notifiers_seq, notifier_completion */
  readonly notifiers = new NotifierSeq();
  /** ib_umem_odp: mn_counters_active (false: registered during a callback, see PerMm) */
  mnCountersActive = true;
  /** ib_umem_odp: dying (release received) */
  dying = false;

  constructor(
    /** the MR number (lkey/rkey) */
    readonly id: number,
    readonly pid: number,
    /** first byte, page-aligned */
    readonly addr: number,
    readonly pages: number,
    readonly odp: boolean,
    readonly access: ReadonlySet<Access>,
  ) {}

  get end(): number {
    return this.addr + this.pages * PAGE_SIZE;
  }

  get writable(): boolean {
    return this.access.has('write');
  }

  overlaps(start: number, end: number): boolean {
    return this.addr < end && start < this.end;
  }

  /** [addr, addr + pages) lies inside the MR. */
  contains(addr: number, pages = 1): boolean {
    return addr >= this.addr && addr + pages * PAGE_SIZE <= this.end;
  }

  /** Models: ib_umem_notifier_start_account() (umem_odp.c, 3.19). */
  startAccount(): void {
    if (this.mnCountersActive) this.notifiers.startAccount();
  }

  /** Models: ib_umem_notifier_end_account() (umem_odp.c, 3.19). */
  endAccount(): void {
    if (this.mnCountersActive) this.notifiers.endAccount();
  }

  /** Program one page as mm reported it (smap.set; smap.clear first if it replaces another frame). */
  install(ctx: HcaContext, page: GupPage, op?: string): void {
    const vpn = vpnOf(page.addr);
    const { prev, changed } = this.mtt.set(vpn, {
      pfn: page.pfn,
      gen: page.gen,
      writable: page.writable && this.writable,
    });
    if (!changed) return;
    if (prev) this.traceClear(ctx, vpn, prev.pfn, prev.gen, op);
    ctx.tracer.emit({
      kind: 'smap.set',
      op,
      agent: ctx.name,
      pid: this.pid,
      addr: page.addr,
      pfn: page.pfn,
      gen: page.gen,
      writable: page.writable && this.writable,
    });
  }

  /** Remove the entries in [start, end) ∩ MR; returns how many. */
  zap(ctx: HcaContext, start: number, end: number, op?: string): number {
    const first = vpnOf(Math.max(start, this.addr));
    const last = Math.ceil(Math.min(end, this.end) / PAGE_SIZE);
    if (first >= last) return 0;
    const removed = this.mtt.clearRange(first, last);
    for (const [vpn, e] of removed) this.traceClear(ctx, vpn, e.pfn, e.gen, op);
    return removed.length;
  }

  private traceClear(ctx: HcaContext, vpn: number, pfn: number, gen: number, op?: string): void {
    ctx.tracer.emit({
      kind: 'smap.clear',
      op,
      agent: ctx.name,
      pid: this.pid,
      addr: vpn * PAGE_SIZE,
      pfn,
      gen,
    });
  }
}
