/**
 * kvm->mmu_lock of one VM, and how a range zap holds it: the instance's mmuLock mode.
 *
 *   spin        Models: spin_lock(&kvm->mmu_lock) around kvm_unmap_hva_range() and
 *               kvm_flush_remote_tlbs() in kvm_mmu_notifier_invalidate_range_start()
 *               (virt/kvm/kvm_main.c, v3.7): held for the whole zap of the range, however many
 *               sPTEs it has. The zap runs in one JavaScript tick: nothing else of this KVM
 *               instance runs meanwhile (a spinning CPU with preemption off), not even guest
 *               accesses that hit their TLB.
 *   sleep       Models: a sleeping mmu_lock (a mutex: the conversion Avi Kivity found
 *               impossible while notifiers could not sleep, made possible by the 2012 patch,
 *               never merged in that form) with cond_resched_lock() between chunks of
 *               ZAP_CHUNK sPTEs: the lock is dropped and the holder yields between chunks, so
 *               faults and accesses elsewhere in the VM get in. (mmu_notifier_count is already
 *               raised: a fault into the range still retries.)
 *   generation  Models: kvm_mmu_invalidate_zap_all_pages() (arch/x86/kvm/mmu.c, v3.11):
 *               ++mmu_valid_gen under the lock, O(1); every sPTE of the VM is invalid from
 *               then on and refaults, and kvm_zap_obsolete_pages() frees the old ones later,
 *               in batches. v3.11 used it only for memslot changes and zap-all; using it for
 *               notifier ranges (invalidating the whole VM for any range) is the lab's own
 *               extension, the O(1) teardown Avi proposed in 2012.
 *
 * Every hold is traced at its release (kvm.mmu_lock: what, wait, hold, sPTEs zapped), so the
 * three can be compared (hold time of a large range's zap, fault latency while it runs).
 * A fault's re-check and install happen in one tick under the lock in every mode.
 */
import { Mutex } from 'async-mutex';
import type { EventOf, MmuLockMode } from '@mmlab/protocol';
import { type Tracer, now } from '@mmlab/runtime';

/** sleep: sPTEs zapped per hold before cond_resched_lock() drops the lock and yields. */
export const ZAP_CHUNK = 64;

export type HoldWhat = EventOf<'kvm.mmu_lock'>['what'];

export interface MmuLockOwner {
  readonly agent: string;
  readonly pid: number;
  readonly vm: number;
  readonly tracer: Tracer;
}

export interface Hold {
  /** drop the lock; zapped: sPTEs this hold removed (traced) */
  release(zapped?: number): void;
}

/** Yield the event loop once (cond_resched). */
export const yieldNow = (): Promise<void> => new Promise((r) => setImmediate(r));

export class MmuLock {
  private readonly mutex = new Mutex();

  constructor(
    readonly mode: MmuLockMode,
    private readonly owner: MmuLockOwner,
  ) {}

  /** Someone is waiting for the lock (spin_needbreak). */
  get contended(): boolean {
    return this.mutex.isLocked();
  }

  /** Take the lock for `what`; the returned hold traces itself when released. */
  async acquire(what: HoldWhat, op?: string): Promise<Hold> {
    const t0 = now();
    const unlock = await this.mutex.acquire();
    const t1 = now();
    let done = false;
    return {
      release: (zapped = 0) => {
        if (done) return;
        done = true;
        unlock();
        const o = this.owner;
        o.tracer.emit({
          kind: 'kvm.mmu_lock',
          op,
          agent: o.agent,
          pid: o.pid,
          vm: o.vm,
          mode: this.mode,
          what,
          waitMs: t1 - t0,
          heldMs: now() - t1,
          zapped,
        });
      },
    };
  }

  /** Run fn under the lock (released however fn ends); fn's number is the sPTEs it zapped. */
  async with<T>(
    what: HoldWhat,
    op: string | undefined,
    fn: () => T | Promise<T>,
    zapped?: (r: T) => number,
  ): Promise<T> {
    const h = await this.acquire(what, op);
    let n = 0;
    try {
      const r = await fn();
      n = zapped ? zapped(r) : 0;
      return r;
    } finally {
      h.release(n);
    }
  }
}
