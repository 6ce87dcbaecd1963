/** mm/page_alloc.c and mm/swap.c: alloc_page() and put_page(), with their trace events. */
import { MmlabError } from '@mmlab/protocol';
import type { MmContext } from './context';

export interface Frame {
  pfn: number;
  gen: number;
}

/** alloc_page(GFP_HIGHUSER_MOVABLE) (+ copy_user_highpage when copyFrom is given). */
export async function allocPage(
  ctx: MmContext,
  op: string,
  copyFrom: number | null = null,
): Promise<Frame> {
  const f = await ctx.store.allocPage(copyFrom);
  if (!f) throw new MmlabError('ENOMEM', 'no free frame');
  ctx.tracer.emit({ kind: 'frame.alloc', op, pfn: f.pfn, gen: f.gen });
  return f;
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
