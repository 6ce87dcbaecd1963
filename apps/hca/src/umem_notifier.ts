/**
 * Models: ib_umem_notifier_ops (drivers/infiniband/core/umem_odp.c, 2014: release,
 * invalidate_page, invalidate_range_start, invalidate_range_end) with mlx5's per-umem
 * invalidation behind them, plus the 2012 change_pte, clear_flush_young and test_young. The
 * callbacks arrive as NATS requests from mm on mmlab.sub.<name>.*; each may sleep (mm holds no
 * PT lock while it waits, which we verify in Redis on receipt).
 *
 * Every callback: mn.recv; the sender's PT locks checked in Redis (mn.ptl_held if it still
 * holds one: it must not, we are about to sleep); the work, once per (callback, inv) however
 * many times mm resends it; mn.done; the ack echoing inv. Pinned MRs are never touched.
 *
 * The lab's callback-level faults (CallbackFaults, set by subChaos) wrap the work: its first
 * step — the interval-notifier bookkeeping the kernel's core does before it calls the driver
 * (start, set_seq, release) — still happens in the tick of mn.recv; the fault's stall
 * (latency, hang) comes where the driver's part begins (the zap, the device wait); crash
 * after the work, before the ack; drop/dup/late-ack on each reply.
 *
 * State changes that faults must see happen in the tick the callback arrives, before any
 * await (a JavaScript tick is atomic), so nothing can be installed in a range after its
 * mn.recv and before its end:
 *
 *   fault (hca0)                              callbacks (hca0)
 *                                             recv range_start [a, b) → active, seq++ (same tick)
 *   lock umem_mutex; read_retry → retry       zap, device latency, drain DMA; ack
 *   read_begin(a): waits ...                  recv range_end → not active; faults woken
 *   ... gup again
 */
import { type MnCallback, PAGE_SIZE, type ReqParsed, TASK_SIZE } from '@mmlab/protocol';
import { type CallbackFaults, inSpan } from '@mmlab/runtime';
import { CallbackLog } from './callback_log';
import type { HcaContext } from './context';
import type { PerMm } from './ib_ucontext_per_mm';
import { mlx5IbInvalidateRange } from './invalidate_range';

interface CallbackReq {
  pid: number;
  inv: string;
  owner: string;
}

interface Span {
  start: number;
  end: number;
}

const pageOf = (addr: number): Span => ({ start: addr, end: addr + PAGE_SIZE });
const key = (callback: MnCallback, inv: string): string => `${callback}|${inv}`;

export class UmemNotifier {
  private readonly log = new CallbackLog();

  constructor(
    private readonly ctx: HcaContext,
    /** the per-mm state of pid (created on first use) */
    private readonly mmOf: (pid: number) => PerMm,
    private readonly faults: CallbackFaults,
  ) {}

  /** invalidate_range_start → mlx5_ib_invalidate_range() for each overlapping ODP umem. */
  invalidateRangeStart(req: ReqParsed<'mnInvalidateRangeStart'>): Promise<{ inv: string }> {
    return this.callback('invalidate_range_start', req, req, async (mm, op, stall) => {
      // A start whose end already came (it cannot, from a correct mm) must not stay active.
      if (this.log.has(key('invalidate_range_end', req.inv))) mm.notifier.setSeq();
      else mm.notifier.start(req.inv, req.start, req.end);
      await stall();
      await mlx5IbInvalidateRange(this.ctx, mm, req.start, req.end, op);
      return { inv: req.inv };
    });
  }

  /** invalidate_range_end: the range may be mapped again; waiting faults go on. */
  invalidateRangeEnd(req: ReqParsed<'mnInvalidateRangeEnd'>): Promise<{ inv: string }> {
    return this.callback('invalidate_range_end', req, req, async (mm, _op, stall) => {
      // A slow end keeps the range closed to faults longer: safe, never early.
      await stall();
      mm.notifier.end(req.inv); // an unknown inv is still acked
      return { inv: req.inv };
    });
  }

  /** invalidate_page (2012): start and end over one page, in one callback. */
  invalidatePage(req: ReqParsed<'mnInvalidatePage'>): Promise<{ inv: string }> {
    const page = pageOf(req.addr);
    return this.callback('invalidate_page', req, page, async (mm, op, stall) => {
      const k = `page|${req.inv}`;
      mm.notifier.start(k, page.start, page.end);
      try {
        await stall();
        await mlx5IbInvalidateRange(this.ctx, mm, page.start, page.end, op);
      } finally {
        mm.notifier.end(k);
      }
      return { inv: req.inv };
    });
  }

  /**
   * change_pte (KSM's set_pte_at_notify): drop the entry rather than follow the new pfn (the
   * 2012 wrap in range_start/end has zapped it already). Runs without sleeping on umem_mutex —
   * the kernel calls it under the PT lock — so the removal and set_seq share one tick.
   */
  changePte(req: ReqParsed<'mnChangePte'>): Promise<{ inv: string }> {
    const page = pageOf(req.addr);
    return this.callback('change_pte', req, page, async (mm, op, stall) => {
      mm.notifier.setSeq();
      for (const mr of mm.overlapping(page.start, page.end))
        mr.zap(this.ctx, page.start, page.end, op);
      await stall();
      await this.ctx.inflight.drain(req.pid, page.start, page.end);
      return { inv: req.inv };
    });
  }

  /** clear_flush_young: test and clear the accessed bits of [start, end) in the MTTs. */
  clearFlushYoung(req: ReqParsed<'mnClearFlushYoung'>): Promise<{ inv: string; young: boolean }> {
    return this.callback('clear_flush_young', req, req, async (mm, _op, stall) => {
      await stall();
      return { inv: req.inv, young: this.young(mm, req, true) };
    });
  }

  /** test_young: was addr accessed by the device since its bit was last cleared? */
  testYoung(req: ReqParsed<'mnTestYoung'>): Promise<{ inv: string; young: boolean }> {
    const page = pageOf(req.addr);
    return this.callback('test_young', req, page, async (mm, _op, stall) => {
      await stall();
      return { inv: req.inv, young: this.young(mm, page, false) };
    });
  }

  /**
   * release: the mm is going away (exit, or our own unregister): zap everything of pid,
   * wait for the device, and fail every fault and DMA on its ODP MRs from now on (EFAULT).
   */
  release(req: ReqParsed<'mnRelease'>): Promise<{ inv: string }> {
    const all: Span = { start: 0, end: TASK_SIZE };
    return this.callback('release', req, all, async (mm, op, stall) => {
      mm.notifier.release();
      await stall();
      await mlx5IbInvalidateRange(this.ctx, mm, all.start, all.end, op);
      return { inv: req.inv };
    });
  }

  private young(mm: PerMm, span: Span, clear: boolean): boolean {
    let young = false;
    for (const mr of mm.overlapping(span.start, span.end))
      if (mr.young(span.start, span.end, clear)) young = true;
    return young;
  }

  /**
   * The envelope of every callback: recv, PT-lock check, the work once per inv (through the
   * callback faults), done. With telemetry on, one span (`ib_umem_notifier_<callback>`) inside
   * the request's handler span.
   */
  private callback<T>(
    callback: MnCallback,
    req: CallbackReq,
    span: Span,
    work: (mm: PerMm, op: string, stall: () => Promise<void>) => Promise<T>,
  ): Promise<T> {
    return inSpan(
      `ib_umem_notifier_${callback}`,
      () => ({
        attributes: {
          'mmlab.agent': this.ctx.name,
          'mmlab.pid': req.pid,
          'mmlab.inv': req.inv,
          'mmlab.mn.callback': callback,
          'mmlab.start': `0x${span.start.toString(16)}`,
          'mmlab.end': `0x${span.end.toString(16)}`,
        },
      }),
      () => this.envelope(callback, req, span, work),
    );
  }

  private async envelope<T>(
    callback: MnCallback,
    req: CallbackReq,
    span: Span,
    work: (mm: PerMm, op: string, stall: () => Promise<void>) => Promise<T>,
  ): Promise<T> {
    const { ctx } = this;
    const op = ctx.ids.next(callback);
    const base = { op, agent: ctx.name, pid: req.pid, callback, inv: req.inv };
    ctx.tracer.emit({ kind: 'mn.recv', ...base, start: span.start, end: span.end });
    const checked = this.checkPtl(req, span, base);
    try {
      // work() runs up to its first await now, in the tick of the mn.recv (around() calls it
      // at once). A resend of an inv whose work is done gets its result without redoing it,
      // and without its stall: the reply faults still act on its reply.
      return await this.faults.around(callback, req.inv, (stall) =>
        this.log.run(key(callback, req.inv), () => work(this.mmOf(req.pid), op, stall)),
      );
    } finally {
      await checked;
      ctx.tracer.emit({ kind: 'mn.done', ...base });
    }
  }

  /** Does the sending op still hold a PT lock of the range? (It must not: we may sleep.) */
  private async checkPtl(
    req: CallbackReq,
    span: Span,
    base: { op: string; agent: string; pid: number; callback: MnCallback; inv: string },
  ): Promise<void> {
    try {
      const lock = await this.ctx.store.ptlHeldBy(req.pid, req.owner, span.start, span.end);
      if (lock) this.ctx.tracer.emit({ kind: 'mn.ptl_held', ...base, lock, owner: req.owner });
    } catch (e) {
      this.ctx.log.warn(`${this.ctx.name}: PT-lock check of ${req.inv} failed: ${String(e)}`);
    }
  }
}
