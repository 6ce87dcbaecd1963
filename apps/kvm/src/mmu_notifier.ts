/**
 * Models: kvm_mmu_notifier_ops (virt/kvm/kvm_main.c, v3.7): invalidate_page,
 * invalidate_range_start, invalidate_range_end, clear_flush_young, test_young, change_pte,
 * release — every 2012 callback. KVM's handlers, plugged into the subscriber core
 * (NotifierSubscriber, libs/subscriber: envelope, once per inv, callback faults, lease, fence).
 *
 * In the kernel each VM (struct kvm) registers its own notifier on the VMM's mm; here the KVM
 * instance registers once per process (its subscriber name) and every callback goes to each VM
 * of that process, as the kernel's list walk would call each VM's notifier.
 *
 * Each handler's accounting happens in the tick of mn.recv, before any await (a tick is atomic,
 * as the mmu_lock section that does it in v3.7): range_start raises mmu_notifier_count,
 * invalidate_page and change_pte bump mmu_notifier_seq. A fault's mmu_notifier_retry() (in one
 * tick under mmu_lock) therefore sees every callback that arrived before it:
 *
 *   vcpu0 fault (kvm0)                        callbacks (kvm0)
 *   mmu_seq = 7; gup(a) → pfn 12              recv range_start [a, b): count 1 (same tick)
 *   lock mmu_lock; retry(7): count 1          lock mmu_lock (waits); zap, flush vCPUs; ack
 *   unlock; wait for the end ...              recv range_end: seq 8, count 0 → complete
 *   mmu_seq = 8; gup(a) again
 *
 * range_end needs no lock here: seq++ then count-- in one tick is what v3.7's smp_wmb() orders.
 * stall() (the callback faults' latency, hang) comes where KVM's own work begins; the
 * instance's invalidateLatencyMs (a slow KVM) is spent after the zap, outside mmu_lock, in the
 * two sleepable invalidations (range_start, invalidate_page) only: change_pte and the young
 * callbacks come under mm's PT lock and must not sleep.
 */
import { PAGE_SIZE, type ReqParsed, TASK_SIZE } from '@mmlab/protocol';
import { sleep } from '@mmlab/runtime';
import type { CallbackCtx, NotifierOps } from '@mmlab/subscriber';
import type { KvmContext } from './context';
import type { Vm } from './vm';

export class KvmMmuNotifier implements NotifierOps {
  constructor(
    private readonly ctx: KvmContext,
    /** the live VMs of pid on this instance */
    private readonly vmsOf: (pid: number) => Vm[],
  ) {}

  private async slowKvm(): Promise<void> {
    const ms = this.ctx.latency.sample();
    if (ms > 0) await sleep(ms);
  }

  /** Models: kvm_mmu_notifier_invalidate_range_start() (v3.7). */
  readonly invalidateRangeStart = async (
    req: ReqParsed<'mnInvalidateRangeStart'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const vms = this.vmsOf(req.pid);
    for (const vm of vms) vm.notifiers.startAccount(); // kvm->mmu_notifier_count++
    await stall();
    await Promise.all(vms.map((vm) => vm.unmapHvaRange(req.start, req.end, 'zap', op)));
    if (vms.length > 0) await this.slowKvm();
  };

  /**
   * Models: kvm_mmu_notifier_invalidate_range_end() (v3.7): seq++, then count--; the faults
   * waiting for the VM go on when it reaches 0. Start and end are paired by nothing but the
   * count (an end with another range still lowers it: KVM's count is per VM, not per range).
   */
  readonly invalidateRangeEnd = async (
    req: ReqParsed<'mnInvalidateRangeEnd'>,
    { stall }: CallbackCtx,
  ): Promise<void> => {
    const vms = this.vmsOf(req.pid);
    await stall(); // a slow end keeps the VM closed to faults longer: safe, never early
    for (const vm of vms) vm.notifiers.endAccount();
  };

  /**
   * Models: kvm_mmu_notifier_invalidate_page() (v3.7): seq++ (before the zap: the fault that
   * resolved the old page retries), kvm_unmap_hva(), flush; the page is still allocated until
   * the ack.
   */
  readonly invalidatePage = async (
    req: ReqParsed<'mnInvalidatePage'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const vms = this.vmsOf(req.pid);
    for (const vm of vms) vm.notifiers.bump();
    await stall();
    await Promise.all(
      vms.map((vm) => vm.unmapHvaRange(req.addr, req.addr + PAGE_SIZE, 'page', op)),
    );
    if (vms.length > 0) await this.slowKvm();
  };

  /**
   * Models: kvm_mmu_notifier_change_pte() (v3.7): seq++, kvm_set_spte_hva() under mmu_lock; no
   * sleeping (it comes under mm's PT lock), so a slow KVM's invalidateLatencyMs is not spent
   * here. A COW's new PTE is writable: the sPTE is dropped (the guest refaults onto the copy);
   * a read-only one (KSM) switches it.
   */
  readonly changePte = async (
    req: ReqParsed<'mnChangePte'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const vms = this.vmsOf(req.pid);
    for (const vm of vms) vm.notifiers.bump();
    await stall();
    await Promise.all(vms.map((vm) => vm.setSpteHva(req.addr, req, op)));
  };

  /** Models: kvm_mmu_notifier_clear_flush_young() (v3.7; a range here, an address there). */
  readonly clearFlushYoung = async (
    req: ReqParsed<'mnClearFlushYoung'>,
    { op, stall }: CallbackCtx,
  ): Promise<boolean> => {
    const vms = this.vmsOf(req.pid);
    await stall();
    const young = await Promise.all(vms.map((vm) => vm.ageHva(req.start, req.end, op)));
    return young.some(Boolean);
  };

  /** Models: kvm_mmu_notifier_test_young() (v3.7). */
  readonly testYoung = async (
    req: ReqParsed<'mnTestYoung'>,
    { op, stall }: CallbackCtx,
  ): Promise<boolean> => {
    const vms = this.vmsOf(req.pid);
    await stall();
    const young = await Promise.all(vms.map((vm) => vm.testAgeHva(req.addr, op)));
    return young.some(Boolean);
  };

  /**
   * Models: kvm_mmu_notifier_release() → kvm_arch_flush_shadow_all() (v3.7): every sPTE of
   * every VM of the process goes; nothing maps there again (the mm is gone: gup fails).
   */
  readonly release = async (
    req: ReqParsed<'mnRelease'>,
    { op, stall }: CallbackCtx,
  ): Promise<void> => {
    const vms = this.vmsOf(req.pid);
    for (const vm of vms) vm.released = true;
    await stall();
    await Promise.all(vms.map((vm) => vm.unmapHvaRange(0, TASK_SIZE, 'release', op)));
  };
}
