/**
 * mm/page_alloc.c and mm/swap.c: alloc_page() and put_page(), with their trace events, and the
 * per-replica batch of frames a write fault on an untouched page takes its frame from.
 */
import { MmlabError } from '@mmlab/protocol';
import { now } from '@mmlab/runtime';
import type { MmContext } from './context';
import { wakeupKswapd } from './vmscan';

export interface Frame {
  pfn: number;
  gen: number;
}

/**
 * alloc_page(GFP_HIGHUSER_MOVABLE) (+ copy_user_highpage when copyFrom is given). A frame for
 * a fault of pid at vpn is tagged pending ({mem}:pending, keys.ts) with this incarnation, until
 * pagesInstalled or its own putPending: if this replica dies in between, another reaps it
 * (orphan_ranges.ts) instead of leaking it. old: the page a COW replaces with it.
 */
export async function allocPage(
  ctx: MmContext,
  op: string,
  copyFrom: Frame | null = null,
  fault: { pid: number; vpn: number } | null = null,
): Promise<Frame> {
  const tag = fault && { owner: ctx.incarnation, ...fault, old: copyFrom };
  const f = await ctx.store.allocPage(copyFrom?.pfn ?? null, 1, tag);
  wakeupKswapd(ctx); // it looks at the watermarks itself
  if (!f) throw new MmlabError('ENOMEM', 'no free frame');
  ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: f.pfn, gen: f.gen });
  return f;
}

/**
 * A fault's frames allocated ahead and not installed go back — unless they were reaped as a
 * dead incarnation's meanwhile (this replica was stopped past its liveness lease).
 */
export async function putPending(ctx: MmContext, op: string, frames: Frame[]): Promise<void> {
  const { freed } = await ctx.store.putPages(frames, 'pending', '', ctx.incarnation);
  const gens = new Map(frames.map((f) => [f.pfn, f.gen]));
  for (const pfn of freed) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: gens.get(pfn)! });
}

/**
 * put_page() for each frame a mapping dropped; frames whose refcount reached 0 are freed. With
 * a batch id, a batch already applied (by a replica that died after it) is not applied again.
 */
/**
 * The gen of a frame put_page freed: the one the caller named, or — a compound page freed whole
 * (THP: its last reference went through one of its frames) — the gen of the named frame of the
 * same huge page (all its frames share one gen).
 */
function freedGen(ctx: MmContext, frames: Frame[], pfn: number): number {
  const exact = frames.find((f) => f.pfn === pfn);
  if (exact) return exact.gen;
  const n = 2 ** ctx.env.MMLAB_HUGE_PAGE_ORDER;
  const head = pfn - (pfn % n);
  return frames.find((f) => f.pfn - (f.pfn % n) === head)?.gen ?? 0;
}

export async function putPages(
  ctx: MmContext,
  op: string,
  frames: Frame[],
  kind: 'map' | 'ref' = 'map',
  batch = '',
): Promise<number> {
  const { freed, bad } = await ctx.store.putPages(frames, kind, batch);
  for (const pfn of freed)
    ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: freedGen(ctx, frames, pfn) });
  if (bad.length)
    throw new MmlabError(
      'EINTERNAL',
      `put_page on frames not in use (double free): ${bad.join(', ')}`,
    );
  return freed.length;
}

/** How many frames a refill asks for (pcp->batch); rmqueueBulk gives fewer when memory is short. */
export const PCP_BATCH = 32;
/**
 * Below this many free frames (after a refill) the batch is lean: a frame a fault took and did
 * not install goes back at once instead of waiting in the batch, so that on a small machine no
 * frame sits unused in one replica's batch while another replica's fault finds memory empty.
 */
export const PCP_LEAN_BELOW = 2 * 16;

/** A frame of a per-replica batch, with the incarnation whose batch it is. */
export interface PcpFrame extends Frame {
  readonly owner: string;
}

/**
 * Models: struct per_cpu_pages, mm/page_alloc.c v3.7 — buffered_rmqueue() takes an order-0 page
 * from the CPU's own pcp list with no zone->lock; rmqueue_bulk() refills the list with
 * pcp->batch pages in one zone->lock section; free_pcppages_bulk() and drain_pages() give pages
 * back. In mmlab the "CPU" is an mm replica incarnation and the zone->lock section is one {mem}
 * script (rmqueueBulk): a write fault on an untouched page takes its frame here, with no Redis
 * call, and then runs the one fault script that installs it. The frames are charged in {mem}
 * when taken (a fresh allocation, tagged "gen|incarnation|reserve"); the fault script records
 * an install in {p:<pid>}:rsv in the same step, and the next refill reports the installs to
 * {mem} (their tags go) — batched, not one call per fault.
 *
 * State (one incarnation's; reset when the replica runs as a new one — the old one's frames
 * are then the reaper's):
 *   free       taken, charged and tagged in {mem}, handed to no fault (LIFO: the hot one first)
 *   installed  installed by a fault (recorded in {p:<pid>}:rsv), not reported to {mem} yet
 *   reported   pid → reported to {mem} (untagged), still listed in {p:<pid>}:rsv: the next
 *              fault script of this incarnation in pid drops them
 *   Invariant: each frame tagged as this incarnation's reserve in {mem} is in free, or held by
 *   a fault in flight, or installed (in installed, or in a report in flight).
 *
 * A replica that dies holding a batch: orphan_ranges.ts (reapReserve) gives back what no fault
 * of it installed.
 */
export class PerCpuPages {
  private owner = '';
  private free: PcpFrame[] = [];
  private installedFrames: Array<PcpFrame & { pid: number; at: number }> = [];
  private reported = new Map<number, Frame[]>();
  /** the rmqueueBulk call in flight (one at a time): → how many frames it took */
  private refilling: Promise<number> | null = null;
  /** free memory was short at the last refill: untaken frames go back after each fault */
  lean = false;

  /** The batch is this incarnation's: a new incarnation starts empty. */
  private sync(incarnation: string): void {
    if (incarnation === this.owner) return;
    this.owner = incarnation;
    this.free = [];
    this.installedFrames = [];
    this.reported = new Map();
    this.lean = false;
  }

  /** How many untaken frames the batch holds (tests, metrics). */
  get count(): number {
    return this.free.length;
  }

  /**
   * buffered_rmqueue(): a frame for a fault — from the batch, or after one refill (shared by
   * the faults that find it empty at once). → null when memory has none left.
   */
  async take(ctx: MmContext): Promise<PcpFrame | null> {
    for (let round = 0; round < 8; round++) {
      this.sync(ctx.incarnation);
      const f = this.free.pop();
      if (f) return f;
      // Another fault's refill (or a drain) in flight: wait for it, then look again.
      if (this.refilling) {
        await this.refilling.catch(() => 0);
        continue;
      }
      if ((await this.refill(ctx, PCP_BATCH)) === 0) break;
    }
    this.sync(ctx.incarnation);
    return this.free.pop() ?? null;
  }

  /** A frame a fault took and did not install: back to the batch (a lean one: to {mem}). */
  async putBack(ctx: MmContext, f: PcpFrame): Promise<void> {
    if (f.owner !== this.owner) return; // an older incarnation's: the reaper's now
    this.free.push(f);
    if (this.lean) await this.drain(ctx);
  }

  /** A fault installed f in pid (the fault script recorded it in {p:<pid>}:rsv). */
  installed(f: PcpFrame, pid: number): void {
    if (f.owner === this.owner) this.installedFrames.push({ ...f, pid, at: now() });
  }

  /** The :rsv entries of pid the next fault script of owner there drops (taken from here). */
  dropsFor(owner: string, pid: number): Frame[] {
    if (owner !== this.owner) return [];
    const d = this.reported.get(pid) ?? [];
    this.reported.delete(pid);
    return d;
  }

  /** A fault script that did not run: its drop list is owed again. */
  restoreDrops(owner: string, pid: number, drop: Frame[]): void {
    if (owner !== this.owner || drop.length === 0) return;
    this.reported.set(pid, [...(this.reported.get(pid) ?? []), ...drop]);
  }

  /**
   * drain_local_pages(): give every untaken frame back and report the installs (one call, none
   * when there is nothing to say). A clean shutdown and meminfo do it.
   */
  async drain(ctx: MmContext): Promise<void> {
    while (this.refilling) await this.refilling.catch(() => 0);
    this.sync(ctx.incarnation);
    if (this.free.length === 0 && this.installedFrames.length === 0) return;
    await this.refill(ctx, 0);
  }

  /**
   * rmqueue_bulk() (want > 0) or free_pcppages_bulk() (want 0: all untaken frames go back): one
   * rmqueueBulk call, which also reports the installs since the last one.
   */
  private refill(ctx: MmContext, want: number): Promise<number> {
    const owner = this.owner;
    const report = this.installedFrames.splice(0);
    const back = want === 0 ? this.free.splice(0) : [];
    this.refilling = (async () => {
      try {
        const r = await ctx.store.rmqueueBulk(owner, want, [
          ...report.map((f) => ({ pfn: f.pfn, gen: f.gen, installed: true, at: f.at })),
          ...back.map((f) => ({ pfn: f.pfn, gen: f.gen, installed: false })),
        ]);
        if (owner !== this.owner) return 0;
        for (const f of report)
          this.reported.set(f.pid, [
            ...(this.reported.get(f.pid) ?? []),
            { pfn: f.pfn, gen: f.gen },
          ]);
        for (const t of r.taken) this.free.push({ ...t, owner });
        this.lean = r.nrFree < PCP_LEAN_BELOW;
        // below the low watermark: kswapd (zone_watermark_ok failed in get_page_from_freelist)
        if (want > 0 && r.nrFree < ctx.env.MMLAB_WATERMARK_LOW) wakeupKswapd(ctx);
        return r.taken.length;
      } catch (e) {
        if (owner === this.owner) {
          this.installedFrames.unshift(...report);
          this.free.push(...back);
        }
        throw e;
      } finally {
        this.refilling = null;
      }
    })();
    return this.refilling;
  }
}

/**
 * The drain_pages IPI handler: drain_local_pages() if this replica still runs as incarnation
 * (a request for an older incarnation of it finds nothing of that one's to give: its batch is
 * the reaper's). → whether it drained.
 */
export async function drainLocalPagesFor(ctx: MmContext, incarnation: string): Promise<boolean> {
  if (incarnation !== ctx.incarnation) return false;
  await ctx.pcp.drain(ctx);
  return true;
}

/** The replica instance of an incarnation "<instance>.<boot id>". */
const instanceOf = (incarnation: string): string =>
  incarnation.slice(0, Math.max(0, incarnation.lastIndexOf('.')));

/**
 * Models: drain_all_pages(), mm/page_alloc.c v3.7 — every CPU's per_cpu_pages lists go back to
 * the buddy lists (on_each_cpu_mask: an IPI to the CPUs that have pages there), as
 * __alloc_pages_direct_reclaim() does before it retries a failed allocation. Here: this
 * replica's batch, then each other incarnation that holds one ({mem}:pending reserve tags) is
 * asked on its own subject (mmDrainPages), all at once; one that does not answer within a lease
 * TTL (stopped, dead) keeps its batch — the reaper gives a dead one's back. → how many replicas
 * gave theirs back.
 */
export async function drainAllPages(ctx: MmContext): Promise<number> {
  const { reserve } = await ctx.store.pendingAndReserve();
  const others = [...new Set(reserve.map((f) => f.owner))].filter((w) => w !== ctx.incarnation);
  await ctx.pcp.drain(ctx);
  const drained = await Promise.all(
    others.map((w) =>
      ctx.rpc
        .call(
          'mmDrainPages',
          { incarnation: w },
          { id: instanceOf(w), timeoutMs: Math.max(100, ctx.env.MMLAB_LEASE_TTL_MS) },
        )
        .then(
          (r) => r.drained,
          () => false,
        ),
    ),
  );
  return drained.filter(Boolean).length;
}
