/**
 * Models: struct kvm (include/linux/kvm_host.h, v3.7) — one VM of a KVM instance: its
 * memslots, vCPUs, sPTE table, mmu_lock, and the notifier state its fault path checks
 * (mmu_notifier_count, mmu_notifier_seq), with the arch/x86/kvm/mmu.c (v3.7) operations the
 * notifier callbacks call on it: kvm_unmap_hva_range(), kvm_set_spte_hva(), kvm_age_hva(),
 * kvm_test_age_hva(), kvm_flush_remote_tlbs(), kvm_arch_flush_shadow_all().
 *
 * State and invariants:
 *   sptes      gfn → host frame; changed only under mmuLock (a fault's install, a zap), every
 *              change traced (smap.set / smap.clear, agent = the instance, with vm and gfn;
 *              smap.flush for a generation bump);
 *   notifiers  mmu_notifier_count / mmu_notifier_seq (NotifierSeq, libs/subscriber): raised
 *              and bumped in the tick a callback arrives; a fault installs only when
 *              mmu_notifier_retry() says no, in the same tick as that check, under mmuLock;
 *              v3.7's count is per VM, not per range: while any invalidation of the VM is in
 *              progress, every fault of the VM retries;
 *   vcpus      each vCPU's cached translations; every zap that removed an sPTE flushes them
 *              all (kvm_flush_remote_tlbs, under mmu_lock as v3.7 does) before the callback
 *              acks, so no vCPU uses a zapped translation once mm may free its frame;
 *   dead       destroyed (kvm_destroy_vm): faults in flight do not install, accesses fail;
 *   released   mm's release came (exit): everything was zapped, nothing maps again.
 */
import { MmlabError, type MmuLockMode, PAGE_SIZE, TASK_SIZE } from '@mmlab/protocol';
import { NotifierSeq } from '@mmlab/subscriber';
import type { KvmContext } from './context';
import { Memslots } from './memslot';
import { type Hold, type HoldWhat, MmuLock, ZAP_CHUNK, yieldNow } from './mmu_lock';
import { type Spte, SpteTable } from './spte';
import { Vcpu } from './vcpu';

/** generation: invalid sPTEs freed per hold of the lazy reclaim (kvm_zap_obsolete_pages). */
export const RECLAIM_BATCH = 256;

export class Vm {
  readonly sptes = new SpteTable();
  /** mmu_notifier_count, mmu_notifier_seq (and the completion faults wait on: see tdpPageFault) */
  readonly notifiers = new NotifierSeq();
  readonly mmuLock: MmuLock;
  readonly vcpus: readonly Vcpu[];
  dead = false;
  released = false;
  private reclaiming = false;

  constructor(
    private readonly ctx: KvmContext,
    readonly id: number,
    readonly pid: number,
    readonly memslots: Memslots,
    nvcpus: number,
    mode: MmuLockMode,
  ) {
    this.vcpus = Array.from({ length: nvcpus }, (_, i) => new Vcpu(i));
    this.mmuLock = new MmuLock(mode, { agent: ctx.name, pid, vm: id, tracer: ctx.tracer });
  }

  get mode(): MmuLockMode {
    return this.mmuLock.mode;
  }

  vcpu(i: number): Vcpu {
    const v = this.vcpus[i];
    if (!v)
      throw new MmlabError(
        'EINVAL',
        `vm ${this.id} has no vcpu ${i} (it has ${this.vcpus.length})`,
      );
    return v;
  }

  /**
   * Install gfn → page (caller holds mmuLock, in the tick of its mmu_notifier_retry()).
   * Models: __direct_map() → mmu_set_spte() (arch/x86/kvm/mmu.c, v3.7); a replaced sPTE's
   * frame is dropped from every vCPU's TLB (mmu_set_spte flushes when the pfn changes).
   */
  install(
    gfn: number,
    hva: number,
    p: { pfn: number; gen: number; writable: boolean },
    op?: string,
  ): void {
    const { prev, changed } = this.sptes.set(gfn, { ...p, accessed: true, hva });
    if (!changed) return;
    if (prev) {
      this.traceClear(gfn, prev, op);
      for (const v of this.vcpus) v.tlb.delete(gfn);
    }
    this.ctx.tracer.emit({
      kind: 'smap.set',
      op,
      agent: this.ctx.name,
      pid: this.pid,
      addr: hva,
      pfn: p.pfn,
      gen: p.gen,
      writable: p.writable,
      vm: this.id,
      gfn,
    });
  }

  /** Models: kvm_flush_remote_tlbs() (virt/kvm/kvm_main.c, v3.7): every vCPU acks. */
  async flushRemoteTlbs(): Promise<void> {
    await Promise.all(this.vcpus.map((v) => v.flush()));
  }

  /**
   * Zap the sPTEs whose host pages meet [start, end), holding mmu_lock as the instance's mode
   * says, and flush the vCPUs' TLBs before the lock is dropped; returns the sPTEs zapped (for
   * generation: made invalid). The caller has done the callback's accounting (count, seq).
   * Models: kvm_unmap_hva_range() → kvm_handle_hva_range(kvm_unmap_rmapp) and
   * kvm_flush_remote_tlbs() under spin_lock(&kvm->mmu_lock) (v3.7); see mmu_lock.ts for sleep
   * and generation.
   */
  async unmapHvaRange(start: number, end: number, what: HoldWhat, op?: string): Promise<number> {
    switch (this.mode) {
      case 'spin':
        return this.zapSpin(start, end, what, op);
      case 'sleep':
        return this.zapSleep(start, end, what, op);
      case 'generation':
        return this.zapGeneration(what, op);
    }
  }

  /** spin (v3.7): one hold for the whole range, zap and flush. */
  private async zapSpin(start: number, end: number, what: HoldWhat, op?: string): Promise<number> {
    const hold = await this.mmuLock.acquire(what, op);
    let zapped = 0;
    try {
      for (const s of this.memslots.gfnsOfHvaRange(start, end))
        for (const [gfn, e] of this.sptes.clearRange(s.first, s.last)) {
          this.traceClear(gfn, e, op);
          zapped++;
        }
      if (zapped > 0) await this.flushRemoteTlbs();
      return zapped;
    } finally {
      hold.release(zapped);
    }
  }

  /**
   * sleep: chunks of ZAP_CHUNK sPTEs; between two, cond_resched_lock(): drop the lock, yield,
   * take it again. The flush comes under the last hold, after every chunk.
   */
  private async zapSleep(start: number, end: number, what: HoldWhat, op?: string): Promise<number> {
    let hold: Hold = await this.mmuLock.acquire(what, op);
    let zapped = 0;
    let inHold = 0;
    try {
      for (const s of this.memslots.gfnsOfHvaRange(start, end)) {
        const victims = this.sptes.validIn(s.first, s.last).map(([gfn]) => gfn);
        for (const gfn of victims) {
          if (inHold >= ZAP_CHUNK) {
            // The vCPUs may still cache what this hold zapped: flush before the lock goes.
            await this.flushRemoteTlbs();
            hold.release(inHold);
            inHold = 0;
            await yieldNow();
            hold = await this.mmuLock.acquire(what, op);
          }
          const e = this.sptes.clear(gfn);
          if (!e) continue;
          this.traceClear(gfn, e, op);
          zapped++;
          inHold++;
        }
      }
      if (inHold > 0) await this.flushRemoteTlbs();
      return zapped;
    } finally {
      hold.release(inHold);
    }
  }

  /**
   * generation (the lab's extension of v3.11's kvm_mmu_invalidate_zap_all_pages() to notifier
   * ranges): ++mmu_valid_gen for any range, O(1); one smap.flush says every sPTE of the VM is
   * gone; the old entries are freed later (reclaim).
   */
  private async zapGeneration(what: HoldWhat, op?: string): Promise<number> {
    const hold = await this.mmuLock.acquire(what, op);
    let n = 0;
    try {
      n = this.sptes.bumpGen();
      if (n > 0) {
        this.ctx.tracer.emit({
          kind: 'smap.flush',
          op,
          agent: this.ctx.name,
          pid: this.pid,
          start: 0,
          end: TASK_SIZE,
          vm: this.id,
          entries: n,
        });
        await this.flushRemoteTlbs();
      }
      return n;
    } finally {
      hold.release(n);
      if (this.sptes.staleCount > 0) void this.reclaim();
    }
  }

  /** Models: kvm_zap_obsolete_pages() (v3.11): free the invalid sPTEs, a batch per hold. */
  private async reclaim(): Promise<void> {
    if (this.reclaiming) return;
    this.reclaiming = true;
    try {
      while (this.sptes.staleCount > 0) {
        await yieldNow();
        const hold = await this.mmuLock.acquire('reclaim');
        this.sptes.reclaimStale(RECLAIM_BATCH);
        hold.release();
      }
    } finally {
      this.reclaiming = false;
    }
  }

  /**
   * change_pte: the host PTE of hva now maps pfn/gen. Every valid sPTE of hva is dropped when
   * the new host PTE is writable (a COW's: do_wp_page's maybe_mkwrite), or else switched to the
   * new frame, read-only and not accessed (KSM's replace_page: a read-only PTE); one hold,
   * no sleeping; the vCPUs are flushed when any sPTE was there. Returns the sPTEs touched.
   * Models: kvm_set_spte_hva() → kvm_set_pte_rmapp() (arch/x86/kvm/mmu.c, v3.7 and v3.6 alike):
   *   if (pte_write(*ptep)) drop_spte(kvm, sptep);
   *   else { new_spte = pfn of *ptep, & ~PT_WRITABLE_MASK, & ~shadow_accessed_mask; }
   */
  async setSpteHva(
    hva: number,
    pte: { pfn: number; gen: number; writable: boolean },
    op?: string,
  ): Promise<number> {
    let touched = 0;
    const slots = this.memslots.gfnsOfHvaRange(hva, hva + PAGE_SIZE);
    const n = await this.mmuLock.with(
      'change_pte',
      op,
      async () => {
        for (const s of slots)
          for (const [gfn, e] of this.sptes.validIn(s.first, s.last)) {
            touched++;
            if (pte.writable) {
              this.sptes.clear(gfn); // drop_spte
              this.traceClear(gfn, e, op);
              for (const v of this.vcpus) v.tlb.delete(gfn);
              continue;
            }
            this.install(gfn, e.hva, { pfn: pte.pfn, gen: pte.gen, writable: false }, op);
            const now = this.sptes.get(gfn);
            if (now) now.accessed = false;
          }
        if (touched > 0) await this.flushRemoteTlbs();
        return touched;
      },
      () => (pte.writable ? touched : 0),
    );
    // What kernel history found (6bdb913f): in v3.7 invalidate_range_start came first and
    // zapped the sPTE, so change_pte arrives to nothing (found false); in v3.6 it finds it.
    if (slots.length > 0)
      this.ctx.tracer.emit({
        kind: 'kvm.change_pte',
        op,
        agent: this.ctx.name,
        pid: this.pid,
        vm: this.id,
        addr: hva,
        pfn: pte.pfn,
        gen: pte.gen,
        writable: pte.writable,
        found: n > 0,
      });
    return n;
  }

  /**
   * clear_flush_young: were any sPTEs of [start, end) accessed? Their bits are cleared, and the
   * vCPUs' TLBs flushed so the next access walks (and sets the bit) again. Models:
   * kvm_age_hva() → kvm_age_rmapp() with EPT accessed bits, then kvm_flush_remote_tlbs() (v3.7).
   */
  async ageHva(start: number, end: number, op?: string): Promise<boolean> {
    return this.mmuLock.with('young', op, async () => {
      let young = false;
      for (const s of this.memslots.gfnsOfHvaRange(start, end))
        for (const [, e] of this.sptes.validIn(s.first, s.last))
          if (e.accessed) {
            young = true;
            e.accessed = false;
          }
      if (young) await this.flushRemoteTlbs();
      return young;
    });
  }

  /** test_young. Models: kvm_test_age_hva() → kvm_test_age_rmapp() (v3.7). */
  async testAgeHva(hva: number, op?: string): Promise<boolean> {
    return this.mmuLock.with('young', op, () =>
      this.memslots
        .gfnsOfHvaRange(hva, hva + PAGE_SIZE)
        .some((s) => this.sptes.validIn(s.first, s.last).some(([, e]) => e.accessed)),
    );
  }

  private traceClear(gfn: number, e: Spte, op?: string): void {
    this.ctx.tracer.emit({
      kind: 'smap.clear',
      op,
      agent: this.ctx.name,
      pid: this.pid,
      addr: e.hva,
      pfn: e.pfn,
      gen: e.gen,
      vm: this.id,
      gfn,
    });
  }
}
