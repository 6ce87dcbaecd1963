/**
 * Models: struct mmu_interval_notifier with mmu_interval_read_begin() / mmu_interval_read_retry()
 * / mmu_interval_set_seq() (mm/mmu_notifier.c), for one mm as this device sees it. It holds the
 * invalidation bookkeeping of the ODP fault path, and nothing else (plain state, no I/O).
 *
 * State:
 *   seq       bumped by every invalidation that reaches the device (set_seq), whether or not
 *             anything was mapped in its range (unconditional set_seq); never decreases.
 *   active    the invalidations between their start and their end, by key (the inv of
 *             invalidate_range_start/end; invalidate_page and release key their own): while a
 *             range is here, nothing may be installed in it.
 *   released  release() was received: the mm is going away; every fault fails (EFAULT) until
 *             a new registration revives it.
 *
 * The fault path's discipline (ib_umem_odp_map_dma_and_lock):
 *   s = readBegin(range)        waits while an active invalidation overlaps the range
 *   ... look the pages up through mm (may sleep) ...
 *   lock umem_mutex
 *   readRetry(s, range)?        true: an invalidation started since s, or one overlapping is
 *                               still active → unlock and start over; false: install, unlock
 *
 * Why the re-check is needed (the race the skip-seq-recheck injection reopens):
 *
 *   fault (hca)                               invalidation (mm → hca)
 *   s = readBegin([a, a+4K))  → 7
 *   gup(a) → pfn 12
 *                                             invalidate_range_start [a, b): seq 8, active
 *                                             zap MTT; ack → mm clears the PTE
 *   lock umem_mutex
 *   readRetry(7) → true: seq is 8             ← without it: MTT a → pfn 12, and pfn 12 is
 *   unlock, start over                          freed when mm's munmap completes
 *                                             invalidate_range_end: not active
 *
 * The seq is per mm, not per range (like KVM's mmu_invalidate_seq): an invalidation of some
 * other range of the same mm also makes a fault retry. That costs a retry, never correctness.
 */
import { MmlabError } from '@mmlab/protocol';

export interface Range {
  readonly start: number;
  readonly end: number;
}

const overlaps = (r: Range, start: number, end: number): boolean => r.start < end && start < r.end;

export class IntervalNotifier {
  private seq = 0;
  private readonly active = new Map<string, Range>();
  private released = false;
  private waiters = new Set<() => void>();

  get sequence(): number {
    return this.seq;
  }

  get isReleased(): boolean {
    return this.released;
  }

  /** The active invalidations (tests and diagnostics). */
  get activeRanges(): ReadonlyMap<string, Range> {
    return this.active;
  }

  /**
   * invalidate_range_start (and the first half of invalidate_page): [start, end) is active
   * under key until end(key); set_seq. A repeated key keeps its first range.
   */
  start(key: string, start: number, end: number): number {
    if (!this.active.has(key)) this.active.set(key, { start, end });
    return this.setSeq();
  }

  /** invalidate_range_end: key is no longer active; faults waiting on it go on. Unknown: false. */
  end(key: string): boolean {
    const known = this.active.delete(key);
    if (known) this.wake();
    return known;
  }

  /** mmu_interval_set_seq() without an active range (change_pte): in-flight faults retry. */
  setSeq(): number {
    ++this.seq;
    this.wake();
    return this.seq;
  }

  /**
   * Test hook (the slow page-fault work queue, MMLAB_NPF_DELAY_MS): wait at most ms for an
   * invalidation to reach the device after the snapshot seq (the sequence moved), then one more
   * macrotask, so the invalidation's own first steps (set_seq, then umem_mutex: all microtasks
   * in its tick) are done before the fault goes on. The re-check after it then provably runs
   * after that invalidation's start: the race skip-seq-recheck reopens, hit every time.
   */
  async waitSeqPast(seq: number, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.seq === seq && !this.released) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await this.waitForChange(left);
    }
    await new Promise<void>((r) => setImmediate(r));
  }

  /** release: the mm is gone; waiting and later faults fail with EFAULT. */
  release(): void {
    this.released = true;
    this.setSeq();
    this.wake();
  }

  /** A new registration on the same mm (after our own unregister's release): faults work again. */
  revive(): void {
    this.released = false;
  }

  /** Is an invalidation overlapping [start, end) between its start and its end? */
  overlapsActive(start: number, end: number): boolean {
    for (const r of this.active.values()) if (overlaps(r, start, end)) return true;
    return false;
  }

  /**
   * mmu_interval_read_begin(): wait until no active invalidation overlaps [start, end), then
   * return the sequence to re-check. EAGAIN when deadline (ms since the epoch) passes first,
   * EFAULT once the mm is released.
   */
  async readBegin(start: number, end: number, deadline: number): Promise<number> {
    for (;;) {
      if (this.released) throw new MmlabError('EFAULT', 'the address space was released');
      if (!this.overlapsActive(start, end)) return this.seq;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new MmlabError('EAGAIN', 'an invalidation of the range did not end in time');
      await this.waitForChange(left);
    }
  }

  /** mmu_interval_read_retry(): must the fault that began at seq start over? */
  readRetry(seq: number, start: number, end: number): boolean {
    return this.released || seq !== this.seq || this.overlapsActive(start, end);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = new Set();
    for (const f of w) f();
  }

  private waitForChange(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}
