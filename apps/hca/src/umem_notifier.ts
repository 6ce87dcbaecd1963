/**
 * Models: ib_umem_notifier_ops (drivers/infiniband/core/umem_odp.c, 2014: release,
 * invalidate_page, invalidate_range_start, invalidate_range_end) with mlx5's per-umem
 * invalidation behind them, plus the 2012 change_pte, clear_flush_young and test_young: the
 * HCA's handlers, plugged into the subscriber core (NotifierSubscriber, libs/subscriber),
 * which gives them the envelope (mn.recv, PT-lock check, once per inv, mn.done, ack), the
 * callback faults, the liveness lease and the fence. Pinned MRs are never touched.
 *
 * Each handler's first step — the interval-notifier bookkeeping the kernel's core does before
 * it calls the driver (start, set_seq, release) — happens in the tick of mn.recv; stall() (the
 * callback faults' latency, hang) comes where the driver's part begins (the zap, the device
 * wait). So nothing can be installed in a range after its mn.recv and before its end:
 *
 *   fault (hca0)                              callbacks (hca0)
 *                                             recv range_start [a, b) → active, seq++ (same tick)
 *   lock umem_mutex; read_retry → retry       zap, device latency, drain DMA; ack
 *   read_begin(a): waits ...                  recv range_end → not active; faults woken
 *   ... gup again
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
    /** has invalidate_range_end of inv been received (the subscriber core's log)? */
    private readonly endSeen: (inv: string) => boolean,
  ) {}

  /** invalidate_range_start → mlx5_ib_invalidate_range() for each overlapping ODP umem. */
  readonly invalidateRangeStart = async (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    // A start whose end already came (it cannot, from a correct mm) must not stay active.
    if (this.endSeen(req.inv)) mm.notifier.setSeq();
    else mm.notifier.start(req.inv, req.start, req.end);
    await stall();
    await mlx5IbInvalidateRange(this.ctx, mm, req.start, req.end, op);
  };

  /** invalidate_range_end: the range may be mapped again; waiting faults go on. */
  readonly invalidateRangeEnd = async (
    req: ReqParsed<'mnInvalidateRangeEnd'>,
    { stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    // A slow end keeps the range closed to faults longer: safe, never early.
    await stall();
    mm.notifier.end(req.inv); // an unknown inv is still acked
  };

  /** invalidate_page (2012): start and end over one page, in one callback. */
  readonly invalidatePage = async (
    req: ReqParsed<'mnInvalidatePage'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    const page = pageOf(req.addr);
    const k = `page|${req.inv}`;
    mm.notifier.start(k, page.start, page.end);
    try {
      await stall();
      await mlx5IbInvalidateRange(this.ctx, mm, page.start, page.end, op);
    } finally {
      mm.notifier.end(k);
    }
  };

  /**
   * change_pte (KSM's set_pte_at_notify): drop the entry rather than follow the new pfn (the
   * 2012 wrap in range_start/end has zapped it already). Runs without sleeping on umem_mutex —
   * the kernel calls it under the PT lock — so the removal and set_seq share one tick.
   */
  readonly changePte = async (
    req: ReqParsed<'mnChangePte'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    const page = pageOf(req.addr);
    mm.notifier.setSeq();
    for (const mr of mm.overlapping(page.start, page.end))
      mr.zap(this.ctx, page.start, page.end, op);
    await stall();
    await this.ctx.inflight.drain(req.pid, page.start, page.end);
  };

  /** clear_flush_young: test and clear the accessed bits of [start, end) in the MTTs. */
  readonly clearFlushYoung = async (
    req: ReqParsed<'mnClearFlushYoung'>,
    { stall }: CallbackCtx,
  ): Promise<boolean> => {
    const mm = this.mmOf(req.pid);
    await stall();
    return this.young(mm, req, true);
  };

  /** test_young: was addr accessed by the device since its bit was last cleared? */
  readonly testYoung = async (
    req: ReqParsed<'mnTestYoung'>,
    { stall }: CallbackCtx,
  ): Promise<boolean> => {
    const mm = this.mmOf(req.pid);
    await stall();
    return this.young(mm, pageOf(req.addr), false);
  };

  /**
   * release: the mm is going away (exit, or our own unregister): zap everything of pid,
   * wait for the device, and fail every fault and DMA on its ODP MRs from now on (EFAULT).
   */
  readonly release = async (
    req: ReqParsed<'mnRelease'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const mm = this.mmOf(req.pid);
    mm.notifier.release();
    await stall();
    await mlx5IbInvalidateRange(this.ctx, mm, 0, TASK_SIZE, op);
  };

  private young(mm: PerMm, span: Span, clear: boolean): boolean {
    let young = false;
    for (const mr of mm.overlapping(span.start, span.end))
      if (mr.young(span.start, span.end, clear)) young = true;
    return young;
  }
}
