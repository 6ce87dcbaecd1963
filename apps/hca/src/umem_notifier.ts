/**
 * Models: ib_umem_notifiers (drivers/infiniband/core/umem_odp.c, 3.19: release,
 * invalidate_page, invalidate_range_start, invalidate_range_end — no change_pte, no young
 * callbacks) with mlx5_ib_invalidate_range() behind them. The HCA's handlers,
 * plugged into the subscriber core (NotifierSubscriber, libs/subscriber), which gives them the
 * envelope (mn.recv, PT-lock check, once per inv, mn.done, ack), the callback faults, the
 * liveness lease and the fence. Pinned MRs are never touched.
 *
 * Start and end are paired by RANGE, not by inv (ib_umem_notifier_invalidate_range_start/_end):
 * start raises notifiers_count on every umem overlapping its range, end lowers it (and bumps
 * notifiers_seq) on every umem overlapping ITS OWN range. An end sent with another range than
 * its start (inject range-end-mismatch, the `haddr` bug) leaves a umem's count above 0 — its
 * faults retry for ever (EAGAIN) — or lowers one it never raised (below 0: stuck too; or to 0
 * while another invalidation is in progress: a fault maps inside it). A resent start is not
 * counted twice: the subscriber core runs it once per inv.
 *
 * Each handler's accounting happens in the tick of mn.recv; stall() (the callback faults'
 * latency, hang) comes where the driver's part begins (the zap, the device wait). So nothing
 * can be installed in a range after its mn.recv and before its end:
 *
 *   fault (hca0)                              callbacks (hca0)
 *   s = notifiers_seq → 7; gup(a)             recv range_start [a, b): count 1 (same tick)
 *   lock umem_mutex; retry(7): count 1        zap, device latency, drain DMA; ack
 *   unlock; wait for the completion ...       recv range_end [a, b): seq 8, count 0 → complete
 *   s = 8; gup(a) again
 */
import { PAGE_SIZE, type ReqParsed, TASK_SIZE } from '@mmlab/protocol';
import type { CallbackCtx, NotifierOps } from '@mmlab/subscriber';
import type { HcaContext } from './context';
import type { PerMm } from './ib_ucontext_per_mm';
import { mlx5IbInvalidateRange } from './invalidate_range';

interface Span {
  start: number;
  end: number;
}

const pageOf = (addr: number): Span => ({ start: addr, end: addr + PAGE_SIZE });

export class UmemNotifier implements NotifierOps {
  constructor(
    private readonly ctx: HcaContext,
    /** the per-mm state of pid (created on first use) */
    private readonly mmOf: (pid: number) => PerMm,
  ) {}

  /**
   * Models: ib_umem_notifier_invalidate_range_start() → invalidate_range_start_trampoline()
   * → mlx5_ib_invalidate_range() (umem_odp.c, odp.c, 3.19): count on every overlapping umem.
   */
  readonly invalidateRangeStart = async (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    mm.notifierStartAccount();
    for (const mr of mm.overlapping(req.start, req.end)) mr.startAccount();
    await stall();
    await mlx5IbInvalidateRange(this.ctx, mm, req.start, req.end, op);
  };

  /**
   * Models: ib_umem_notifier_invalidate_range_end() → invalidate_range_end_trampoline()
   * (umem_odp.c, 3.19): uncount on every umem overlapping THIS range (not its start's);
   * waiting faults go on where a count comes back to 0.
   */
  readonly invalidateRangeEnd = async (
    req: ReqParsed<'mnInvalidateRangeEnd'>,
    { stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    // A slow end keeps the range closed to faults longer: safe, never early.
    await stall();
    for (const mr of mm.overlapping(req.start, req.end)) mr.endAccount();
    mm.notifierEndAccount();
  };

  /**
   * Models: ib_umem_notifier_invalidate_page() → invalidate_page_trampoline() (umem_odp.c,
   * 3.19): start, zap and end over one page, in one callback.
   */
  readonly invalidatePage = async (
    req: ReqParsed<'mnInvalidatePage'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    const page = pageOf(req.addr);
    const mrs = mm.overlapping(page.start, page.end);
    mm.notifierStartAccount();
    for (const mr of mrs) mr.startAccount();
    try {
      await stall();
      await mlx5IbInvalidateRange(this.ctx, mm, page.start, page.end, op);
    } finally {
      for (const mr of mrs) mr.endAccount();
      mm.notifierEndAccount();
    }
  };

  /**
   * release: the mm is going away (exit, or our own unregister). Models:
   * ib_umem_notifier_release() → ib_umem_notifier_release_trampoline() (umem_odp.c, 3.19):
   * every umem counted (never uncounted), marked dying, its waiting faults woken (to fail with
   * EFAULT), then zapped whole; the device waited for.
   */
  readonly release = async (
    req: ReqParsed<'mnRelease'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    mm.notifierStartAccount();
    mm.released = true;
    for (const mr of mm.overlapping(0, TASK_SIZE)) {
      mr.startAccount();
      mr.dying = true;
      mr.notifiers.completeAll();
    }
    await stall();
    await mlx5IbInvalidateRange(this.ctx, mm, 0, TASK_SIZE, op);
  };
}
