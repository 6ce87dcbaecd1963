/**
 * Models: pagefault_real_mr() → ib_umem_odp_map_dma_and_lock() (drivers/infiniband/hw/mlx5/odp.c,
 * drivers/infiniband/core/umem_odp.c): a network page fault on an ODP MR, resolved through mm
 * with the interval notifier's read_begin / read_retry discipline, then the MTT programmed
 * under umem_mutex.
 *
 * The loop, until MMLAB_NPF_TIMEOUT_MS (HMM_RANGE_DEFAULT_TIMEOUT) → EAGAIN:
 *   1. read_begin: wait while an invalidation overlapping the range is active; snapshot seq
 *   2. hmm_range_fault: gup without pin (write only for a write: mlx5 downgrades read faults)
 *   3. (MMLAB_NPF_DELAY_MS: a slow page-fault work queue, a test hook: it waits up to that long
 *      for an invalidation to reach the device after the snapshot, so the race of step 4 is
 *      hit deterministically once the fault started before the invalidation; first try only)
 *   4. umem_mutex; read_retry: an invalidation started (seq moved) or one overlapping is
 *      active → unlock, again; otherwise program the MTT (smap.set), unlock
 * Inject skip-seq-recheck drops step 4's re-check: the known bug, a mapping installed while its
 * invalidation is in progress (and then kept to a frame mm frees). mm's errors pass through:
 * EFAULT for an unmapped or PROT_NONE page, EPERM for a write the VMA forbids.
 *
 * The race step 4 closes, with the delay of step 3 making it easy to hit:
 *
 *   fault (hca0)                              munmap (mm-0 → hca0)
 *   seq = 7; gup(a) → pfn 12 gen 3
 *   sleep (slow work queue)                   range_start [a, b): seq 8, active, zap, ack
 *                                             clear PTE, flush TLBs
 *   lock umem_mutex
 *   read_retry: seq 8 ≠ 7 → unlock, again     (skip-seq-recheck: smap.set a → pfn 12 here)
 *                                             range_end; free pfn 12
 *   read_begin → EFAULT from gup: unmapped
 */
import { type ErrorCode, MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { now } from '@mmlab/runtime';
import type { HcaContext } from './context';
import type { PerMm } from './ib_ucontext_per_mm';
import type { MemoryRegion } from './mr';

/**
 * Fault [addr, addr + pages) of an ODP MR in and program it; returns the pages mapped.
 * write: fault for write (writable entries); else mm may map read-only (e.g. the zero page).
 */
export async function pagefaultRealMr(
  ctx: HcaContext,
  mm: PerMm,
  mr: MemoryRegion,
  addr: number,
  pages: number,
  write: boolean,
  op?: string,
): Promise<number> {
  const t0 = now();
  const start = addr;
  const end = addr + pages * PAGE_SIZE;
  const deadline = Date.now() + ctx.env.MMLAB_NPF_TIMEOUT_MS;
  ctx.tracer.emit({ kind: 'npf.begin', op, agent: ctx.name, pid: mr.pid, addr, pages, write });
  let retries = 0;
  let result: 'ok' | ErrorCode = 'ok';
  try {
    for (; ; retries++) {
      if (retries > 0 && Date.now() >= deadline)
        throw new MmlabError(
          'EAGAIN',
          `${ctx.name}: page fault at 0x${addr.toString(16)} of pid ${mr.pid} still colliding ` +
            `with invalidations after ${retries} tries`,
        );
      // (1) mmu_interval_read_begin()
      const seq = await mm.notifier.readBegin(start, end, deadline);
      // (2) hmm_range_fault(): mm may sleep, fault pages in, and answer EFAULT / EPERM.
      const r = await ctx.rpc.call('gup', {
        pid: mr.pid,
        addr,
        pages,
        write,
        pin: false,
        agent: ctx.name,
      });
      // (3) a slow page-fault work queue: up to MMLAB_NPF_DELAY_MS, woken as soon as an
      // invalidation reaches the device after the snapshot (a deterministic test hook; the
      // first attempt only: a retry already follows an invalidation)
      if (ctx.env.MMLAB_NPF_DELAY_MS > 0 && retries === 0)
        await mm.notifier.waitSeqPast(seq, ctx.env.MMLAB_NPF_DELAY_MS);
      // (4) mutex_lock(&umem_odp->umem_mutex); mmu_interval_read_retry()
      const unlock = await mr.umemMutex.acquire();
      try {
        if (mr.dead)
          throw new MmlabError('EINVAL', `MR ${mr.id} was deregistered during the page fault`);
        if (mm.notifier.isReleased)
          throw new MmlabError('EFAULT', `pid ${mr.pid} was released during the page fault`);
        if (!ctx.skipSeqRecheck && mm.notifier.readRetry(seq, start, end)) continue;
        // mlx5r_umr_update_xlt(): program the MTT, in the same tick as the re-check.
        for (const p of r.pages) if (mr.contains(p.addr)) mr.install(ctx, p, op);
        return r.pages.length;
      } finally {
        unlock();
      }
    }
  } catch (e) {
    result = MmlabError.wrap(e).code;
    throw e;
  } finally {
    ctx.tracer.emit({
      kind: 'npf.end',
      op,
      agent: ctx.name,
      pid: mr.pid,
      addr,
      retries,
      result,
      durMs: now() - t0,
    });
  }
}
