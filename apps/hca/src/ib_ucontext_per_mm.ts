/**
 * Models: struct ib_ucontext's ODP part (drivers/infiniband/core/umem_odp.c, 3.19): what one
 * device keeps per address space — its mmu_notifier registration, the ODP umems of that mm
 * (umem_tree), the callbacks in progress (notifier_count) and the umems registered while one
 * was (no_private_counters).
 *
 * Invariants:
 *   - registered ⇔ at least one ODP MR of the mm exists (outside regLock, which every change
 *     of either holds): the first ODP MR registers the subscriber, the last one's dereg
 *     unregisters it; pinned MRs never register (the pre-ODP way);
 *   - notifierCount counts callbacks, not ranges: every start, invalidate_page and release
 *     raises it, every end and invalidate_page lowers it (release never does: the mm is gone);
 *   - a umem in noPrivateCounters has mnCountersActive false: its faults retry until
 *     notifierCount comes back to 0, which activates its counters (a start it did not see
 *     must not be paired with an end it does see);
 *   - a released mm (release received) is revived only by a new registration, which also
 *     resets notifierCount (atomic_set(&context->notifier_count, 0)).
 */
import { Mutex } from 'async-mutex';
import type { MemoryRegion } from './mr';

export class PerMm {
  readonly odpMrs = new Set<MemoryRegion>();
  /** mmu_notifier_register() succeeded and no unregister since */
  registered = false;
  /** release received: the mm is going away (until a new registration) */
  released = false;
  /** ib_ucontext->notifier_count */
  notifierCount = 0;
  /** ib_ucontext->no_private_counters */
  readonly noPrivateCounters = new Set<MemoryRegion>();
  /** serializes registration, unregistration and changes of odpMrs */
  readonly regLock = new Mutex();

  constructor(readonly pid: number) {}

  /**
   * The live ODP MRs overlapping [start, end), in MR-number order (the umem_mutex lock order).
   * Models: rbt_ib_umem_for_each_in_range() (umem_rbtree.c, 3.19).
   */
  overlapping(start: number, end: number): MemoryRegion[] {
    return [...this.odpMrs]
      .filter((mr) => !mr.dead && mr.overlaps(start, end))
      .sort((a, b) => a.id - b.id);
  }

  /** Models: ib_ucontext_notifier_start_account() (umem_odp.c, 3.19). */
  notifierStartAccount(): void {
    this.notifierCount++;
  }

  /**
   * Models: ib_ucontext_notifier_end_account() (umem_odp.c, 3.19): at 0, the umems added
   * meanwhile get their private counters and their waiting faults go on.
   */
  notifierEndAccount(): void {
    if (--this.notifierCount !== 0) return;
    for (const mr of this.noPrivateCounters) {
      mr.mnCountersActive = true;
      mr.notifiers.completeAll();
    }
    this.noPrivateCounters.clear();
  }

  /**
   * A new ODP umem joins the context. Models: the umem_tree part of ib_umem_odp_get()
   * (umem_odp.c, 3.19). The first umem revives a released context.
   */
  addUmem(mr: MemoryRegion): void {
    this.odpMrs.add(mr);
    if (this.odpMrs.size === 1) {
      this.notifierCount = 0;
      this.released = false;
    }
    if (this.notifierCount === 0 || this.odpMrs.size === 1) mr.mnCountersActive = true;
    else {
      mr.mnCountersActive = false;
      this.noPrivateCounters.add(mr);
    }
  }

  /** Models: the umem_tree part of ib_umem_odp_release() (umem_odp.c, 3.19). */
  removeUmem(mr: MemoryRegion): void {
    this.odpMrs.delete(mr);
    this.noPrivateCounters.delete(mr);
  }
}
