/**
 * Models: the KVM module of one host (virt/kvm/kvm_main.c, arch/x86/kvm/mmu.c, v3.7) — one
 * mmlab instance (kvm0, kvm1, ...) holds any number of VMs, each created on a process (the
 * VMM's address space), with its memslots, vCPUs and sPTE table (vm.ts), and the vCPUs' guest
 * loads and stores, which go through the vCPU's TLB, then the sPTEs, straight to the frames in
 * Redis as the CPU does under EPT (mm is not on the access path; a miss is tdp_page_fault).
 *
 * State (one KVM process):
 *   vms      VM number → Vm; numbers are never reused by one incarnation
 *   procs    pid → its VMs and the instance's notifier registration there (the first VM of a
 *            process registers, the last one's destroy unregisters; regLock orders them)
 *   notifier the subscriber core (libs/subscriber) with KVM's handlers (KvmMmuNotifier)
 */
import { Mutex } from 'async-mutex';
import { type Access, MmlabError, type ReqParsed, TASK_SIZE } from '@mmlab/protocol';
import { type CallbackFaults, type SpteCounts } from '@mmlab/runtime';
import { NotifierSubscriber, subscriberDepsOf } from '@mmlab/subscriber';
import type { KvmContext } from './context';
import { Memslots } from './memslot';
import { KvmMmuNotifier } from './mmu_notifier';
import { tdpPageFault } from './tdp_page_fault';
import { Vm } from './vm';

/** Guest faults one access may take before it gives up (EAGAIN). */
export const MAX_FAULTS_PER_ACCESS = 16;

interface PerProcess {
  readonly vms: Set<Vm>;
  registered: boolean;
  readonly regLock: Mutex;
}

export interface GuestAccessResult {
  value: number;
  pfn: number;
  gen: number;
  faults: number;
  tlbHit: boolean;
  stale: boolean;
}

export class Kvm {
  readonly notifier: NotifierSubscriber;
  private readonly vms = new Map<number, Vm>();
  private readonly procs = new Map<number, PerProcess>();
  private nextVm = 1;

  constructor(
    readonly ctx: KvmContext,
    /** crash (a callback fault): default SIGKILL to this process */
    kill?: () => void,
  ) {
    this.notifier = new NotifierSubscriber(
      subscriberDepsOf(ctx, 'kvm_mmu_notifier_', kill),
      new KvmMmuNotifier(ctx, (pid) => [...(this.procs.get(pid)?.vms ?? [])]),
    );
  }

  get name(): string {
    return this.ctx.name;
  }

  get faults(): CallbackFaults {
    return this.notifier.faults;
  }

  start(): Promise<void> {
    return this.notifier.start();
  }

  stop(): void {
    this.notifier.stop();
  }

  /**
   * A clean shutdown, once the clients' requests are drained (the callbacks still answered):
   * every VM destroyed — its sPTEs zapped, the last VM of each process unregistering the
   * notifier (mm sends release, answered here) — then every invalidation acked here waited
   * for until its end; all of it within ms; drop() lets the liveness lease go last.
   * Models: kvm_vm_release() → kvm_destroy_vm() (v3.7) for every VM: the VMM exits.
   */
  async teardown(ms: number): Promise<{ vms: number; failed: number; quiet: boolean }> {
    const ids = [...this.vms.keys()].sort((a, b) => a - b);
    const t = await this.notifier.teardown(
      ids,
      (id) => this.destroyVm(id),
      ms,
      (id, e) =>
        this.ctx.log.warn(`${this.name}: VM ${id} not destroyed at shutdown: ${String(e)}`),
    );
    return { vms: ids.length, ...t };
  }

  /** The shutdown's last step: the liveness lease dropped (NotifierSubscriber.drop). */
  drop(): Promise<void> {
    return this.notifier.drop();
  }

  /** The sPTEs of every live VM, valid and obsolete (the mmlab_kvm_sptes gauge). */
  spteCounts(): SpteCounts {
    let valid = 0;
    let obsolete = 0;
    for (const vm of this.vms.values()) {
      valid += vm.sptes.validCount;
      obsolete += vm.sptes.staleCount;
    }
    return { valid, obsolete };
  }

  /** A VM by number (tests and diagnostics). */
  vm(id: number): Vm | undefined {
    return this.vms.get(id);
  }

  private proc(pid: number): PerProcess {
    let p = this.procs.get(pid);
    if (!p) this.procs.set(pid, (p = { vms: new Set(), registered: false, regLock: new Mutex() }));
    return p;
  }

  /**
   * KVM_CREATE_VM with its memslots and vCPUs: the slots are checked first (EINVAL, nothing
   * created); the first VM of a process registers the instance as its notifier subscriber,
   * with every callback (kvm_mmu_notifier_ops has them all), before the VM exists, so no
   * fault can precede the registration. Models: kvm_create_vm() → kvm_init_mmu_notifier(),
   * kvm_set_memory_region(), kvm_vm_ioctl_create_vcpu() (v3.7).
   */
  async createVm(req: ReqParsed<'kvmCreateVm'>): Promise<{ vm: number }> {
    const slots = new Memslots(req.memslots);
    const p = this.proc(req.pid);
    return p.regLock.runExclusive(async () => {
      if (!p.registered) {
        await this.ctx.rpc.call('notifierRegister', { pid: req.pid, subscriber: this.name });
        p.registered = true;
      }
      const vm = new Vm(
        this.ctx,
        this.nextVm++,
        req.pid,
        slots,
        req.vcpus,
        this.ctx.env.MMLAB_MMU_LOCK,
      );
      p.vms.add(vm);
      this.vms.set(vm.id, vm);
      return { vm: vm.id };
    });
  }

  /**
   * Models: kvm_destroy_vm() (v3.7): the VM stops answering, every sPTE is zapped
   * (kvm_arch_flush_shadow_all) and the vCPUs flushed; the last VM of the process unregisters
   * (mm sends release first: it finds no VM left). An unknown VM: {destroyed: false}.
   */
  async destroyVm(id: number): Promise<{ destroyed: boolean }> {
    const vm = this.vms.get(id);
    if (!vm) return { destroyed: false };
    this.vms.delete(id);
    vm.dead = true;
    const op = this.ctx.ids.next('destroy_vm');
    await vm.unmapHvaRange(0, TASK_SIZE, 'destroy', op);
    const p = this.proc(vm.pid);
    await p.regLock.runExclusive(async () => {
      p.vms.delete(vm);
      if (p.vms.size > 0 || !p.registered) return;
      p.registered = false;
      try {
        await this.ctx.rpc.call('notifierUnregister', { pid: vm.pid, subscriber: this.name });
      } catch (e) {
        // Still registered at worst: later callbacks for pid find no VM and are acked.
        this.ctx.log.warn(`${this.name}: unregister from pid ${vm.pid} failed: ${String(e)}`);
      }
    });
    return { destroyed: true };
  }

  /**
   * A guest load or store by one vCPU at gfn: the vCPU's TLB; a miss walks the sPTEs (the
   * hardware walk: no mmu_lock; it sets the accessed bit and fills the TLB); no usable sPTE (or
   * a write through a read-only one) is an EPT violation: tdp_page_fault, then again.
   * Models: vcpu_enter_guest() → kvm_mmu_page_fault() → tdp_page_fault() (x86, v3.7).
   */
  async guestAccess(
    vmId: number,
    vcpuId: number,
    gfn: number,
    rw: Access,
    value?: number,
  ): Promise<GuestAccessResult> {
    const op = this.ctx.ids.next(rw === 'read' ? 'guest_read' : 'guest_write');
    for (let faults = 0; ; faults++) {
      const vm = this.vms.get(vmId);
      if (!vm || vm.dead) throw new MmlabError('EINVAL', `${this.name} has no vm ${vmId}`);
      const vcpu = vm.vcpu(vcpuId);
      if (vm.released)
        throw new MmlabError('EFAULT', `the VMM (pid ${vm.pid}) of vm ${vmId} has exited`);
      const hva = vm.memslots.hva(gfn);
      if (hva === undefined)
        throw new MmlabError('EFAULT', `gfn ${gfn} of vm ${vmId} is in no memslot (an MMIO exit)`);
      // TLB, then the walk: in this tick, and the access registered in flight in it too.
      let t = vcpu.tlb.get(gfn);
      const tlbHit = t !== undefined && (rw === 'read' || t.writable);
      if (!tlbHit) {
        const s = vm.sptes.get(gfn);
        if (s && (rw === 'read' || s.writable)) {
          s.accessed = true;
          t = { pfn: s.pfn, gen: s.gen, writable: s.writable };
          vcpu.tlb.set(gfn, t);
        } else t = undefined;
      }
      if (t) {
        const finish = vcpu.begin();
        try {
          return await this.frameAccess(vm, hva, t, rw, value, faults, tlbHit, op);
        } finally {
          finish();
        }
      }
      if (faults >= MAX_FAULTS_PER_ACCESS)
        throw new MmlabError('EAGAIN', `${faults} guest faults at gfn ${gfn} of vm ${vmId}`);
      await tdpPageFault(this.ctx, vm, vcpuId, gfn, rw === 'write', op);
    }
  }

  /** The load or store straight to the frame (refused with ENODEV once mm fenced us). */
  private async frameAccess(
    vm: Vm,
    hva: number,
    t: { pfn: number; gen: number },
    rw: Access,
    value: number | undefined,
    faults: number,
    tlbHit: boolean,
    op: string,
  ): Promise<GuestAccessResult> {
    const r = await this.notifier.access({ op, pid: vm.pid, addr: hva }, t, rw, value);
    return { ...r, faults, tlbHit };
  }
}
