/**
 * Models: struct ib_ucontext_per_mm (drivers/infiniband/core/umem_odp.c, 2014–2019): what one
 * device keeps per address space — its mmu_notifier registration, the ODP umems of that mm,
 * and the invalidation state their faults check.
 *
 * Invariants:
 *   - registered ⇔ at least one ODP MR of the mm exists (outside regLock, which every change
 *     of either holds): the first ODP MR registers the subscriber, the last one's dereg
 *     unregisters it; pinned MRs never register (the pre-ODP way);
 *   - a released mm (release received) is revived only by a new registration.
 */
import { Mutex } from 'async-mutex';
import { IntervalNotifier } from '@mmlab/subscriber';
import type { MemoryRegion } from './mr';

export class PerMm {
  readonly notifier = new IntervalNotifier();
  readonly odpMrs = new Set<MemoryRegion>();
  /** mmu_notifier_register() succeeded and no unregister since */
  registered = false;
  /** serializes registration, unregistration and changes of odpMrs */
  readonly regLock = new Mutex();

  constructor(readonly pid: number) {}

  /** The live ODP MRs overlapping [start, end), in MR-number order (the umem_mutex lock order). */
  overlapping(start: number, end: number): MemoryRegion[] {
    return [...this.odpMrs]
      .filter((mr) => !mr.dead && mr.overlaps(start, end))
      .sort((a, b) => a.id - b.id);
  }
}
