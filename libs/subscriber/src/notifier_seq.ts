/**
 * Models: the invalidation count and sequence a secondary MMU's fault path checks, as the first
 * sleepable-notifier drivers kept them: ib_umem_odp's notifiers_count / notifiers_seq /
 * notifier_completion with ib_umem_notifier_start_account(), ib_umem_notifier_end_account() and
 * ib_umem_mmu_notifier_retry() (drivers/infiniband/core/umem_odp.c, include/rdma/ib_umem_odp.h,
 * 3.19) — the same discipline as KVM's mmu_notifier_count / mmu_notifier_seq /
 * mmu_notifier_retry() (virt/kvm/kvm_main.c, v3.7). Plain state, no I/O.
 *
 * State:
 *   count   raised by every invalidate_range_start that reaches this holder, lowered by every
 *           invalidate_range_end that reaches it. Start and end are paired by nothing but this
 *           count: the driver decides which holders a callback reaches (for ib_umem_odp, every
 *           umem overlapping the callback's OWN range), so an end with another range than its
 *           start leaves it wrong — above 0 for ever (faults retry for ever), or below 0, or at
 *           0 while an invalidation is still in progress (faults map inside it).
 *   seq     bumped by every end (and by a bare bump()); never decreases.
 *   done    the completion (notifier_completion): not done at first (init_completion) and again
 *           whenever count leaves 0 (reinit_completion); done when count comes back to 0
 *           (complete_all) or by completeAll() (release: the holder is dying). waiters are the
 *           faults waiting for it.
 *
 * The fault path (pagefault_single_data_segment, tdp_page_fault):
 *   s = sequence                 snapshot, before looking the page up
 *   ... get_user_pages (may sleep) ...
 *   lock (umem_mutex / mmu_lock)
 *   retry(s)?                    count ≠ 0, or seq moved: an invalidation is in progress or
 *                                ended meanwhile → unlock, waitForCompletion(), fault again;
 *                                else install, unlock
 *
 *   fault (device)                            invalidation (mm → device)
 *   s = seq → 7
 *   gup(a) → pfn 12
 *                                             range_start [a, b): count 1; zap; ack
 *                                             mm clears the PTE
 *   lock; retry(7): count 1 → again           (without it: a → pfn 12, which munmap frees)
 *   waitForCompletion ...                     range_end [a, b): seq 8, count 0 → complete_all
 *   s = 8; gup(a) → EFAULT: unmapped
 */
export class NotifierSeq {
  private count = 0;
  private seq = 0;
  private done = false;
  private waiters = new Set<() => void>();
  /** woken by every change of count or seq (the test hook waitPast) */
  private watchers = new Set<() => void>();

  get sequence(): number {
    return this.seq;
  }

  /** invalidations started and not ended here (may go below 0 with an unmatched end) */
  get notifiersCount(): number {
    return this.count;
  }

  /** start_account: an invalidation reaching this holder starts (reinit_completion at 0). */
  startAccount(): void {
    if (this.count++ === 0) this.done = false;
    this.changed();
  }

  /** end_account: seq++, count--; at 0 the waiting faults go on (complete_all). */
  endAccount(): void {
    this.seq++;
    if (--this.count === 0) this.completeAll();
    this.changed();
  }

  /** A sequence bump without a count (change_pte): a fault in flight retries. */
  bump(): void {
    this.seq++;
    this.changed();
  }

  /** mmu_notifier_retry(): must a fault that snapshot seq start over? */
  retry(seq: number): boolean {
    return this.count !== 0 || seq !== this.seq;
  }

  /** complete_all(&notifier_completion): wake every waiting fault. */
  completeAll(): void {
    this.done = true;
    const w = this.waiters;
    this.waiters = new Set();
    for (const f of w) f();
  }

  /** A snapshot for waitPast: what a fault saw when it took its sequence. */
  snapshot(): { seq: number; count: number } {
    return { seq: this.seq, count: this.count };
  }

  /**
   * Test hook (a slow page-fault work queue, the HCA's MMLAB_NPF_DELAY_MS): wait at most ms
   * until an invalidation reaches this holder after the snapshot (count or seq moved), then one
   * macrotask more, so that invalidation's own first steps (all microtasks of its tick: the
   * zap's umem_mutex) come before the caller goes on. The re-check after it then provably runs
   * after that invalidation started: the race skip-seq-recheck reopens, hit every time.
   */
  async waitPast(snap: { seq: number; count: number }, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.seq === snap.seq && this.count === snap.count) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.watchers.delete(wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        this.watchers.add(wake);
      });
    }
    await new Promise<void>((r) => setImmediate(r));
  }

  private changed(): void {
    const w = this.watchers;
    this.watchers = new Set();
    for (const f of w) f();
  }

  /**
   * wait_for_completion_timeout(&notifier_completion): at once when the completion is done,
   * else until the count comes back to 0 or completeAll(); false when ms passed first.
   */
  waitForCompletion(ms: number): Promise<boolean> {
    if (this.done) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve(true);
      };
      const t = setTimeout(
        () => {
          this.waiters.delete(done);
          resolve(false);
        },
        Math.max(0, ms),
      );
      this.waiters.add(done);
    });
  }
}
