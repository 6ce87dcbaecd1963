/**
 * Models: struct mlx5_ib_mr with its umem — an ib_umem_odp (on demand: nothing pinned, the MTT
 * fills on network page faults and empties on invalidations) or a plain ib_umem (pinned at
 * registration with pin_user_pages(FOLL_LONGTERM), the MTT programmed once, never invalidated).
 *
 * Invariants:
 *   - every MTT install is traced as smap.set, every removal as smap.clear (agent = the HCA);
 *   - an ODP MR's MTT changes only under umemMutex (umem_mutex), except in the non-sleeping
 *     callbacks (change_pte), whose removal and set_seq happen in one tick;
 *   - a pinned MR's MTT maps exactly `pinned` from registration until dereg clears it, and
 *     dereg clears it (and drains its DMA) before it unpins: the frames outlive the entries;
 *   - `dead` (set by dereg under umemMutex) stops a fault in flight from installing.
 */
import { Mutex } from 'async-mutex';
import { type Access, type GupPage, PAGE_SIZE, vpnOf } from '@mmlab/protocol';
import type { HcaContext } from './context';
import { Mtt } from './mtt';

export class MemoryRegion {
  /** umem_odp->umem_mutex: faults install and invalidations zap under it */
  readonly umemMutex = new Mutex();
  readonly mtt = new Mtt();
  /** pinned MRs: the pages gup pinned at registration, unpinned at dereg */
  pinned: readonly GupPage[] = [];
  dead = false;

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

  /** Accessed bits of [start, end) ∩ MR: any set? With clear, clear them. */
  young(start: number, end: number, clear: boolean): boolean {
    const first = vpnOf(Math.max(start, this.addr));
    const last = Math.ceil(Math.min(end, this.end) / PAGE_SIZE);
    return first < last && this.mtt.young(first, last, clear);
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
