/**
 * Models: pagefault_single_data_segment() → ib_umem_odp_map_dma_pages() (drivers/infiniband/
 * hw/mlx5/odp.c, drivers/infiniband/core/umem_odp.c, 3.19): a network page fault on an ODP MR,
 * resolved through mm and checked against the umem's notifier count and sequence under
 * umem_mutex before the MTT is programmed.
 *
 * The loop, until MMLAB_NPF_TIMEOUT_MS → EAGAIN (the QP's page fault fails; step 3's test hook
 * not counted):
 *   1. dying (release received) → EFAULT; snapshot current_seq = notifiers_seq
 *   2. get_user_pages without pin, for write whenever the MR is writable (3.19 sets
 *      ODP_WRITE_ALLOWED_BIT for every fault of a writable umem, reads included: a read breaks
 *      COW; only a read-only MR, or a read prefetch (v5.0), faults for read)
 *   3. (MMLAB_NPF_DELAY_MS: a slow page-fault work queue, a test hook: on the first try it
 *      traces npf.delay, then waits up to that long for an invalidation to reach the MR after
 *      the snapshot, so the race of step 4 is hit deterministically once the invalidation
 *      starts after npf.delay — a scenario waits for it with the step trace.wait)
 *   4. umem_mutex; ib_umem_mmu_notifier_retry() (mmuNotifierRecheck, the pure core in
 *      libs/subscriber that the interleaving specs drive): counters inactive, count ≠ 0 or seq moved →
 *      unlock, -EAGAIN: dying → EFAULT, else wait_for_completion_timeout(notifier_completion,
 *      MMU_NOTIFIER_TIMEOUT) and fault again (the QP re-executes the WQE); otherwise program
 *      the MTT (mlx5_ib_update_mtt), unlock
 * There is no wait before the lookup (no mmu_interval_read_begin in 3.19): a fault during an
 * invalidation looks the page up, finds the count raised and waits for the completion.
 * Inject skip-seq-recheck drops step 4's re-check: the known bug, a mapping installed while its
 * invalidation is in progress (and then kept to a frame mm frees). mm's errors pass through:
 * EFAULT for every page the mapping refuses (unmapped, PROT_NONE, or read-only for a write
 * fault: get_user_pages with write on a read-only VMA).
 *
 * The race step 4 closes, with the delay of step 3 making it easy to hit:
 *
 *   fault (hca0)                              munmap (mm-0 → hca0)
 *   seq = 7; gup(a) → pfn 12 gen 3
 *   sleep (slow work queue)                   range_start [a, b): count 1, zap, ack
 *                                             clear PTE, flush TLBs
 *   lock umem_mutex
 *   retry: count 1 → unlock, wait             (skip-seq-recheck: smap.set a → pfn 12 here)
 *                                             range_end [a, b): seq 8, count 0; free pfn 12
 *   seq = 8; gup(a) → EFAULT: unmapped
 */
import { type ErrorCode, MmlabError } from '@mmlab/protocol';
import { now, sleep } from '@mmlab/runtime';
import { mmuNotifierRecheck } from '@mmlab/subscriber';
import type { HcaContext } from './context';
import type { MemoryRegion } from './mr';

/** odp.c's MMU_NOTIFIER_TIMEOUT: the longest one wait for the notifier completion (ms). */
export const MMU_NOTIFIER_TIMEOUT_MS = 1000;
/** A refault whose completion was already done (a count left wrong) waits this long first. */
const REFAULT_PAUSE_MS = 10;

/**
 * Fault [addr, addr + pages) of an ODP MR in and program it; returns the pages mapped.
 * write: fault for write (writable entries); else mm may map read-only (e.g. the zero page).
 */
export async function pagefaultSingleDataSegment(
  ctx: HcaContext,
  mr: MemoryRegion,
  addr: number,
  pages: number,
  write: boolean,
  op?: string,
): Promise<number> {
  const t0 = now();
  let deadline = Date.now() + ctx.env.MMLAB_NPF_TIMEOUT_MS;
  const dying = () =>
    new MmlabError('EFAULT', `pid ${mr.pid} was released during the page fault of MR ${mr.id}`);
  ctx.tracer.emit({ kind: 'npf.begin', op, agent: ctx.name, pid: mr.pid, addr, pages, write });
  let retries = 0;
  let result: 'ok' | ErrorCode = 'ok';
  try {
    for (; ; retries++) {
      // (1) current_seq = ACCESS_ONCE(notifiers_seq)
      if (mr.dying) throw dying();
      const snap = mr.notifiers.snapshot();
      // (2) get_user_pages(): mm may sleep, fault pages in, and answer EFAULT. Its time (a
      // fault that reclaims memory first can take long) is no collision: it does not count
      // against MMLAB_NPF_TIMEOUT_MS, which bounds the retries for invalidations.
      const gup0 = Date.now();
      const r = await ctx.rpc.call('gup', {
        pid: mr.pid,
        addr,
        pages,
        write,
        pin: false,
        agent: ctx.name,
      });
      deadline += Date.now() - gup0;
      // (3) a slow page-fault work queue: up to MMLAB_NPF_DELAY_MS, woken as soon as an
      // invalidation reaches the MR after the snapshot (a deterministic test hook; the first
      // try only: a retry already follows an invalidation). npf.delay says the snapshot is
      // taken: a scenario starts its invalidation once it sees it (trace.wait).
      if (ctx.env.MMLAB_NPF_DELAY_MS > 0 && retries === 0) {
        ctx.tracer.emit({
          kind: 'npf.delay',
          op,
          agent: ctx.name,
          pid: mr.pid,
          addr,
          seq: snap.seq,
          ms: ctx.env.MMLAB_NPF_DELAY_MS,
        });
        const stalled = Date.now();
        await mr.notifiers.waitPast(snap, ctx.env.MMLAB_NPF_DELAY_MS);
        // The hook's stall is the test's time, not the fault's: it does not count against
        // MMLAB_NPF_TIMEOUT_MS (a control run on a slow machine would give up otherwise).
        deadline += Date.now() - stalled;
      }
      // (4) mutex_lock(&umem_mutex); ib_umem_mmu_notifier_retry()
      const unlock = await mr.umemMutex.acquire();
      try {
        if (mr.dead)
          throw new MmlabError('EINVAL', `MR ${mr.id} was deregistered during the page fault`);
        const recheck = mmuNotifierRecheck(mr.notifiers, snap.seq, {
          skip: ctx.skipSeqRecheck,
          countersActive: mr.mnCountersActive,
        });
        if (recheck === 'install') {
          // mlx5_ib_update_mtt(): program the MTT, in the same tick as the re-check.
          for (const p of r.pages) if (mr.contains(p.addr)) mr.install(ctx, p, op);
          return r.pages.length;
        }
      } finally {
        unlock();
      }
      // -EAGAIN: the MR is being killed → EFAULT; else wait for the invalidations to end.
      if (mr.dying) throw dying();
      const left = deadline - Date.now();
      if (left <= 0)
        throw new MmlabError(
          'EAGAIN',
          `${ctx.name}: page fault at 0x${addr.toString(16)} of pid ${mr.pid} still colliding ` +
            `with invalidations after ${retries + 1} tries (notifiers_count ` +
            `${mr.notifiers.notifiersCount})`,
        );
      const t = Date.now();
      await mr.notifiers.waitForCompletion(Math.min(left, MMU_NOTIFIER_TIMEOUT_MS));
      if (Date.now() === t) await sleep(Math.min(left, REFAULT_PAUSE_MS));
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
