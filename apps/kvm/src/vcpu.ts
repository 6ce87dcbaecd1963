/**
 * Models: struct kvm_vcpu (v3.7) as far as memory goes: the translations the CPU caches while
 * it runs the guest (the TLB's guest-physical → host-physical entries under EPT), the guest
 * accesses it has in flight through them, and KVM_REQ_TLB_FLUSH: kvm_flush_remote_tlbs()
 * (virt/kvm/kvm_main.c, v3.7) makes the request to every vCPU and kicks it out of guest mode;
 * the flusher goes on once each has left guest mode, i.e. once the access it was executing
 * through an old translation has finished.
 *
 * Invariant: an access is registered in flight in the same tick as the TLB lookup (or walk)
 * that gave it its translation, so a flush that clears the entry afterwards waits for it:
 *
 *   vcpu0 (guest_read gfn 3)                 invalidate_range_start (kvm0)
 *   t = tlb.get(3); begin()                  ← same tick
 *   frameAccess(t.pfn) ...                   zap sPTE 3; flush: tlb cleared, waits
 *   ... lands; finish()                      → flushed; ack → mm may free t.pfn now
 *
 * A vCPU in the fault path (outside guest mode) holds no translation and is not waited for.
 */
export interface VcpuTlbEntry {
  pfn: number;
  gen: number;
  writable: boolean;
}

export class Vcpu {
  /** gfn → cached translation */
  readonly tlb = new Map<number, VcpuTlbEntry>();
  private readonly inflight = new Set<Promise<void>>();

  constructor(readonly id: number) {}

  /** An access through a cached translation starts; call the result when it landed. */
  begin(): () => void {
    let finish!: () => void;
    const p = new Promise<void>((r) => (finish = r));
    this.inflight.add(p);
    return () => {
      this.inflight.delete(p);
      finish();
    };
  }

  /** KVM_REQ_TLB_FLUSH: drop every cached translation, ack once the accesses in flight landed. */
  async flush(): Promise<number> {
    const n = this.tlb.size;
    this.tlb.clear();
    await Promise.all([...this.inflight]);
    return n;
  }
}
