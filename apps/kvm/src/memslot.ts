/**
 * Models: struct kvm_memslots / kvm_memory_slot (include/linux/kvm_host.h, v3.7) as
 * kvm_set_memory_region() (virt/kvm/kvm_main.c, v3.7) fills them: guest frames
 * [baseGfn, baseGfn + npages) backed by the VMM's host virtual range [userspaceAddr, +npages
 * pages). Plain state, no I/O.
 *
 * Invariants (checked by kvm_set_memory_region, EINVAL otherwise, nothing changed):
 *   - userspaceAddr is page-aligned and the host range ends inside TASK_SIZE;
 *   - no two slots overlap in guest frames (two may back the same host pages: an alias, as
 *     KVM allows; every sPTE is keyed by gfn, so aliases are separate sPTEs);
 *   - the slots are fixed for the VM's life (mmlab sets them at KVM_CREATE_VM only; KVM
 *     forbids changing them while an invalidation is in progress, kernel-notifiers.md §8.15).
 */
import { MmlabError, PAGE_SIZE, TASK_SIZE, hex, isPageAligned } from '@mmlab/protocol';

export interface Memslot {
  readonly baseGfn: number;
  readonly npages: number;
  /** the host virtual address of baseGfn */
  readonly userspaceAddr: number;
}

/** Guest frames [first, last) of one slot whose host pages meet an hva range. */
export interface GfnSpan {
  slot: Memslot;
  first: number;
  last: number;
}

export class Memslots {
  private readonly slots: readonly Memslot[];

  /** Models: kvm_set_memory_region() for each slot, all or nothing. */
  constructor(slots: ReadonlyArray<{ gfn: number; pages: number; addr: number }>) {
    const out: Memslot[] = [];
    for (const s of slots) {
      if (!isPageAligned(s.addr))
        throw new MmlabError('EINVAL', `memslot address ${hex(s.addr)} is not page aligned`);
      if (s.addr + s.pages * PAGE_SIZE > TASK_SIZE)
        throw new MmlabError(
          'EINVAL',
          `memslot [${hex(s.addr)}, +${s.pages} pages) ends past TASK_SIZE`,
        );
      const clash = out.find((o) => s.gfn < o.baseGfn + o.npages && o.baseGfn < s.gfn + s.pages);
      if (clash)
        throw new MmlabError(
          'EINVAL',
          `memslot gfn [${s.gfn}, ${s.gfn + s.pages}) overlaps gfn [${clash.baseGfn}, ${clash.baseGfn + clash.npages})`,
        );
      out.push({ baseGfn: s.gfn, npages: s.pages, userspaceAddr: s.addr });
    }
    this.slots = out.sort((a, b) => a.baseGfn - b.baseGfn);
  }

  get all(): readonly Memslot[] {
    return this.slots;
  }

  /** Models: gfn_to_memslot() (v3.7). */
  find(gfn: number): Memslot | undefined {
    return this.slots.find((s) => gfn >= s.baseGfn && gfn < s.baseGfn + s.npages);
  }

  /** Models: gfn_to_hva() (v3.7); undefined: no slot holds gfn (KVM: an MMIO exit). */
  hva(gfn: number): number | undefined {
    const s = this.find(gfn);
    return s && s.userspaceAddr + (gfn - s.baseGfn) * PAGE_SIZE;
  }

  /**
   * The guest frames whose host pages meet [start, end), slot by slot. Models: the slot walk
   * of kvm_handle_hva_range() (arch/x86/kvm/mmu.c, v3.7): hva_start/hva_end clipped to each
   * slot, turned into gfn_start/gfn_end.
   */
  gfnsOfHvaRange(start: number, end: number): GfnSpan[] {
    const out: GfnSpan[] = [];
    for (const slot of this.slots) {
      const slotEnd = slot.userspaceAddr + slot.npages * PAGE_SIZE;
      const lo = Math.max(start, slot.userspaceAddr);
      const hi = Math.min(end, slotEnd);
      if (lo >= hi) continue;
      const first = slot.baseGfn + Math.floor((lo - slot.userspaceAddr) / PAGE_SIZE);
      const last = slot.baseGfn + Math.ceil((hi - slot.userspaceAddr) / PAGE_SIZE);
      out.push({ slot, first, last });
    }
    return out;
  }
}
