/**
 * Models: tdp_page_fault() (arch/x86/kvm/mmu.c, v3.7) with try_async_pf() → gfn_to_pfn_async()
 * → hva_to_pfn() (virt/kvm/kvm_main.c), mmu_notifier_retry() (include/linux/kvm_host.h) and
 * __direct_map(): a guest access that found no usable sPTE (an EPT violation).
 *
 *   1. mmu_seq = kvm->mmu_notifier_seq (smp_rmb)
 *   2. resolve the host page of gfn's hva through mm: get_user_pages (mmlab.mm.by.<kvm>.gup, without
 *      pin, the subject the HCA's faults use), which may fault the page in and may sleep; for
 *      a write fault with write (a read-only or COW host page is broken / refused there); for a
 *      read, whatever the host PTE allows: writable only when it already is (hva_to_pfn_slow's
 *      __get_user_pages_fast(write=1) attempt), so a read-only host PTE gives a read-only sPTE
 *      and the guest's first write faults again, with write, and breaks COW on the host
 *   3. (MMLAB_NPF_DELAY_MS, the kvm subscriber's faultDelayMs: a test hook; first try only: it
 *      traces kvm.fault.delay, then waits up to that long for an invalidation to reach the VM
 *      after the snapshot, so the race step 4 closes is hit deterministically)
 *   4. spin_lock(mmu_lock); mmu_notifier_retry(vcpu, mmu_seq): count ≠ 0 or seq moved →
 *      unlock, drop the page (kvm_release_pfn_clean), and fault again; else __direct_map: the
 *      sPTE, in the same tick as the check; unlock
 * v3.7 returns to the guest, which faults again at once, spinning while the invalidation runs;
 * the lab waits for the VM's invalidations to complete instead (NotifierSeq's completion), up
 * to MMLAB_FAULT_DEADLINE_MS in all (EAGAIN). Inject kvm-skip-retry drops step 4's check.
 *
 * The race step 4 closes:
 *
 *   vcpu0 fault (kvm0)                        munmap (mm-0 → kvm0)
 *   mmu_seq = 7; gup(hva) → pfn 12 gen 3
 *   (delay hook)                              range_start [hva, +4K): count 1, zap, flush, ack
 *                                             clear the PTE, flush CPU TLBs
 *   lock; retry(7): count 1 → unlock, wait    (kvm-skip-retry: smap.set gfn → pfn 12 here)
 *                                             range_end: seq 8, count 0; free pfn 12
 *   mmu_seq = 8; gup(hva) → EFAULT: unmapped
 */
import { type ErrorCode, MmlabError, hex } from '@mmlab/protocol';
import { now, sleep } from '@mmlab/runtime';
import type { KvmContext } from './context';
import type { Vm } from './vm';

/** One wait for the VM's invalidations to complete, at most. */
export const RETRY_WAIT_MS = 1000;
/** A retry whose completion was already done (a count left wrong) waits this long first. */
const REFAULT_PAUSE_MS = 10;

export interface FaultResult {
  retries: number;
}

/** Fault gfn of vm in for a read or a write by vcpu; on return its sPTE is installed. */
export async function tdpPageFault(
  ctx: KvmContext,
  vm: Vm,
  vcpu: number,
  gfn: number,
  write: boolean,
  op?: string,
): Promise<FaultResult> {
  const t0 = now();
  const hva = vm.memslots.hva(gfn);
  if (hva === undefined)
    throw new MmlabError('EFAULT', `gfn ${gfn} of vm ${vm.id} is in no memslot (an MMIO exit)`);
  const base = { agent: ctx.name, pid: vm.pid, vm: vm.id, gfn, addr: hva };
  ctx.tracer.emit({ kind: 'kvm.fault.begin', op, ...base, vcpu, write });
  let deadline = Date.now() + ctx.env.MMLAB_FAULT_DEADLINE_MS;
  let retries = 0;
  let result: 'ok' | ErrorCode = 'ok';
  try {
    for (; ; retries++) {
      if (vm.dead) throw new MmlabError('EINVAL', `vm ${vm.id} was destroyed`);
      // (1) mmu_seq = kvm->mmu_notifier_seq
      const snap = vm.notifiers.snapshot();
      // (2) try_async_pf → hva_to_pfn: mm may sleep, fault the page in, or refuse it (EFAULT).
      const r = await ctx.rpc.call('gup', {
        pid: vm.pid,
        addr: hva,
        pages: 1,
        write,
        pin: false,
        agent: ctx.name,
      });
      const page = r.pages[0];
      if (!page) throw new MmlabError('EFAULT', `no host page at ${hex(hva)} of pid ${vm.pid}`);
      // (3) the test hook: the snapshot is taken and the page resolved (kvm.fault.delay)
      if (ctx.env.MMLAB_NPF_DELAY_MS > 0 && retries === 0) {
        ctx.tracer.emit({
          kind: 'kvm.fault.delay',
          op,
          ...base,
          seq: snap.seq,
          ms: ctx.env.MMLAB_NPF_DELAY_MS,
        });
        const stalled = Date.now();
        await vm.notifiers.waitPast(snap, ctx.env.MMLAB_NPF_DELAY_MS);
        deadline += Date.now() - stalled; // the hook's time is the test's, not the fault's
      }
      // (4) spin_lock(&kvm->mmu_lock); mmu_notifier_retry(); __direct_map()
      const hold = await vm.mmuLock.acquire('fault', op);
      try {
        if (vm.dead) throw new MmlabError('EINVAL', `vm ${vm.id} was destroyed during the fault`);
        if (ctx.skipRetry || !vm.notifiers.retry(snap.seq)) {
          vm.install(gfn, hva, page, op);
          return { retries };
        }
      } finally {
        hold.release();
      }
      // out_unlock: kvm_release_pfn_clean(pfn); the guest faults again once the VM's
      // invalidations are over.
      const left = deadline - Date.now();
      if (left <= 0)
        throw new MmlabError(
          'EAGAIN',
          `${ctx.name}: fault of vm ${vm.id} gfn ${gfn} still colliding with invalidations after ` +
            `${retries + 1} tries (mmu_notifier_count ${vm.notifiers.notifiersCount})`,
        );
      // Only the seq moved (an invalidation ended, or invalidate_page / change_pte): again at
      // once, with a new snapshot. An invalidation in progress: wait for its end.
      if (vm.notifiers.notifiersCount === 0) continue;
      const t = Date.now();
      await vm.notifiers.waitForCompletion(Math.min(left, RETRY_WAIT_MS));
      if (Date.now() === t) await sleep(Math.min(left, REFAULT_PAUSE_MS));
    }
  } catch (e) {
    result = MmlabError.wrap(e).code;
    throw e;
  } finally {
    ctx.tracer.emit({ kind: 'kvm.fault.end', op, ...base, retries, result, durMs: now() - t0 });
  }
}
