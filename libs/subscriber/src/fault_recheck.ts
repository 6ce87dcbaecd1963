/**
 * Models: the re-check that ends one attempt of a secondary MMU's fault, taken under its lock
 * (kvm->mmu_lock, umem_mutex): mmu_notifier_retry() in tdp_page_fault() (include/linux/
 * kvm_host.h, arch/x86/kvm/mmu.c, v3.7) and ib_umem_mmu_notifier_retry() in
 * pagefault_single_data_segment() (include/rdma/ib_umem_odp.h, drivers/infiniband/hw/mlx5/odp.c,
 * 3.19). Pure: the fault paths in apps/kvm and apps/hca call it, and the interleaving specs
 * (fault_interleavings.spec.ts) drive it under fast-check's scheduler.
 *
 * Outcomes:
 *   install  no invalidation reached the holder since the snapshot (count 0, seq unchanged):
 *            program the translation now, in the same tick, still under the lock
 *   refault  an invalidation started and ended meanwhile (seq moved, count back at 0), or a
 *            bare bump (invalidate_page, change_pte): fault again at once with a new snapshot
 *   wait     an invalidation is in progress (count ≠ 0): wait for its completion, then fault
 *            again (v3.7's KVM returns to the guest and spins on the fault instead)
 * A holder whose counters are not active (ib_umem_odp's mn_counters_active false: registered
 * during a callback) never installs. skip is the injected bug (skip-seq-recheck,
 * kvm-skip-retry): the check dropped, always install.
 *
 *   fault                                     invalidation
 *   s = seq → 7; gup(a) → pfn 12
 *                                             range_start [a, b): count 1; zap
 *   lock; recheck(7) → wait                   (skip: install a → pfn 12 inside the range)
 *                                             range_end: seq 8, count 0
 *   lock; recheck(7) → refault                (seq moved: pfn 12 may be freed)
 */
import type { NotifierSeq } from './notifier_seq';

export type Recheck = 'install' | 'refault' | 'wait';

export interface RecheckOptions {
  /** the injected bug: no re-check at all */
  skip?: boolean;
  /** ib_umem_odp's mn_counters_active (default true) */
  countersActive?: boolean;
}

/** Under the secondary MMU's lock: may the fault that snapshot snapSeq install its page? */
export function mmuNotifierRecheck(
  n: NotifierSeq,
  snapSeq: number,
  o: RecheckOptions = {},
): Recheck {
  if (o.skip) return 'install';
  if (o.countersActive !== false && !n.retry(snapSeq)) return 'install';
  return n.notifiersCount === 0 ? 'refault' : 'wait';
}
