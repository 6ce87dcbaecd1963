/** mm/page_alloc.c and mm/swap.c: alloc_page() and put_page(), with their trace events. */
import { MmlabError } from '@mmlab/protocol';
import type { MmContext } from './context';

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
export async function putPages(
  ctx: MmContext,
  op: string,
  frames: Frame[],
  kind: 'map' | 'ref' = 'map',
  batch = '',
): Promise<number> {
  const { freed, bad } = await ctx.store.putPages(frames, kind, batch);
  const gens = new Map(frames.map((f) => [f.pfn, f.gen]));
  for (const pfn of freed) ctx.tracer.emit({ kind: 'frame.free', op, pfn, gen: gens.get(pfn)! });
  if (bad.length)
    throw new MmlabError(
      'EINTERNAL',
      `put_page on frames not in use (double free): ${bad.join(', ')}`,
    );
  return freed.length;
}
