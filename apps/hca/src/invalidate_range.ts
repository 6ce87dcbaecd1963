/**
 * Models: mlx5_ib_invalidate_range() (drivers/infiniband/hw/mlx5/odp.c, 3.19), called for every ODP
 * umem of the mm that overlaps an invalidation: under umem_mutex, zap the MTT entries of the
 * range with ZAP UMRs, wait for their completion (the device's latency: the slow path), and
 * only then let mm go on. Pinned MRs are never touched.
 *
 * The caller has already raised the notifiers_count of every overlapping umem in the tick
 * the callback arrived, so a fault that re-checks under umem_mutex before we take it retries,
 * and one that installed before is zapped here:
 *
 *   fault (hca0)                              invalidate (hca0)
 *                                             recv start [a, b): count 1
 *   lock umem_mutex; retry: count 1           lock umem_mutex (waits)
 *   unlock                                    zap; UMR wait; drain DMA; unlock; ack
 *   wait for the completion (the end)
 *
 * Several umems: their mutexes are taken in MR-number order (never a cycle between two
 * invalidations), faults take only one, and nothing held here waits for a fault.
 */
import type { MutexInterface } from 'async-mutex';
import { sleep } from '@mmlab/runtime';
import type { HcaContext } from './context';
import type { PerMm } from './ib_ucontext_per_mm';

/** Zap [start, end) of mm's ODP MRs and wait for the device; returns the entries zapped. */
export async function mlx5IbInvalidateRange(
  ctx: HcaContext,
  mm: PerMm,
  start: number,
  end: number,
  op?: string,
): Promise<number> {
  const mrs = mm.overlapping(start, end);
  const unlocks: MutexInterface.Releaser[] = [];
  try {
    for (const mr of mrs) unlocks.push(await mr.umemMutex.acquire());
    let zapped = 0;
    for (const mr of mrs) zapped += mr.zap(ctx, start, end, op);
    // mlx5r_umr_post_send_wait(): one device round trip per callback that concerns an ODP MR.
    // (mlx5 posts ZAP UMRs only for blocks with valid pages; here the device is asked whenever
    // one of its MRs covers the range, so a lab's latency shows on every such invalidation.)
    if (mrs.length > 0) await sleep(ctx.latency.sample());
    // ...and it completes after the RDMA operations that used the old translations.
    await ctx.inflight.drain(mm.pid, start, end, (o) => o.odp);
    return zapped;
  } finally {
    for (const u of unlocks.reverse()) u();
  }
}
