/**
 * Models: a VM's shadow (TDP/EPT) page table as arch/x86/kvm/mmu.c (v3.7) keeps it for one
 * address space: guest frame → host frame, with the sPTE's writable and accessed bits, plus
 * v3.11's mmu_valid_gen (kvm_mmu_page.mmu_valid_gen) for the generation teardown. Plain state,
 * no I/O: callers trace what changes (smap.set / smap.clear / smap.flush).
 *
 * Why in the service and not in Redis: sPTEs are KVM's private memory (mm never reads them;
 * only the KVM fault path, the vCPUs' page walks and KVM's notifier callbacks do, all inside
 * one KVM instance, serialized by that VM's mmu_lock), and the checker sees them through the
 * trace as it sees the HCA's MTT. Redis would put a round trip on every guest access and make
 * mmu_lock a distributed lease for nothing (fsck does not check device tables either).
 *
 * Invariants:
 *   - an entry is valid iff its mmuGen equals validGen; only valid entries translate (the
 *     vCPU walk, test_young, change_pte ignore the others), and validCount counts them;
 *   - bumpGen() makes every entry invalid in O(1) (kvm_mmu_invalidate_zap_all_pages, v3.11);
 *     invalid entries stay until reclaimStale() or an install over the same gfn drops them
 *     (kvm_zap_obsolete_pages: lazily), and are never reported again (the bump already was);
 *   - `gen` is the host frame's gen when the entry was installed: an access through an entry
 *     whose frame was freed or reused is reported stale (no-stale-access).
 */
export interface Spte {
  pfn: number;
  gen: number;
  writable: boolean;
  accessed: boolean;
  /** the host virtual address the gfn was resolved through */
  hva: number;
  /** mmu_valid_gen at install */
  mmuGen: number;
}

export type SpteInput = Omit<Spte, 'mmuGen'>;

export class SpteTable {
  private readonly entries = new Map<number, Spte>();
  private gen = 0;
  private valid = 0;

  /** kvm->arch.mmu_valid_gen */
  get validGen(): number {
    return this.gen;
  }

  /** valid entries */
  get validCount(): number {
    return this.valid;
  }

  /** entries kept, valid or not (what reclaimStale still has to free) */
  get size(): number {
    return this.entries.size;
  }

  /** The valid sPTE of gfn (the hardware walk's view), if any. */
  get(gfn: number): Spte | undefined {
    const e = this.entries.get(gfn);
    return e && e.mmuGen === this.gen ? e : undefined;
  }

  /**
   * Install gfn → e (__direct_map → mmu_set_spte). Returns the valid entry it replaced, and
   * whether anything changed (the same frame, gen and writability: only the accessed bit).
   */
  set(gfn: number, e: SpteInput): { prev?: Spte; changed: boolean } {
    const prev = this.get(gfn);
    if (prev && prev.pfn === e.pfn && prev.gen === e.gen && prev.writable === e.writable) {
      prev.accessed ||= e.accessed;
      return { prev, changed: false };
    }
    if (!prev) this.valid++;
    this.entries.set(gfn, { ...e, mmuGen: this.gen });
    return { prev, changed: true };
  }

  /** Drop the valid entry of gfn (drop_spte); returns it. An invalid one goes silently. */
  clear(gfn: number): Spte | undefined {
    const e = this.entries.get(gfn);
    if (!e) return undefined;
    this.entries.delete(gfn);
    if (e.mmuGen !== this.gen) return undefined;
    this.valid--;
    return e;
  }

  /** Drop every entry with gfn in [first, last); returns the valid ones, in gfn order. */
  clearRange(first: number, last: number): Array<[number, Spte]> {
    const gfns: number[] = [];
    if (last - first <= this.entries.size) {
      for (let g = first; g < last; g++) if (this.entries.has(g)) gfns.push(g);
    } else {
      for (const g of this.entries.keys()) if (g >= first && g < last) gfns.push(g);
      gfns.sort((a, b) => a - b);
    }
    const out: Array<[number, Spte]> = [];
    for (const g of gfns) {
      const e = this.clear(g);
      if (e) out.push([g, e]);
    }
    return out;
  }

  /** The valid entries with gfn in [first, last), in gfn order (nothing changed). */
  validIn(first: number, last: number): Array<[number, Spte]> {
    const out: Array<[number, Spte]> = [];
    if (last - first <= this.entries.size) {
      for (let g = first; g < last; g++) {
        const e = this.get(g);
        if (e) out.push([g, e]);
      }
    } else {
      for (const [g, e] of this.entries)
        if (g >= first && g < last && e.mmuGen === this.gen) out.push([g, e]);
      out.sort((a, b) => a[0] - b[0]);
    }
    return out;
  }

  /**
   * O(1): every entry becomes invalid (kvm_mmu_invalidate_zap_all_pages, v3.11: ++mmu_valid_gen).
   * Returns how many valid entries that was.
   */
  bumpGen(): number {
    const n = this.valid;
    this.gen++;
    this.valid = 0;
    return n;
  }

  /** Free up to max invalid entries (kvm_zap_obsolete_pages, in batches); returns how many. */
  reclaimStale(max: number): number {
    let n = 0;
    for (const [g, e] of this.entries) {
      if (n >= max) break;
      if (e.mmuGen === this.gen) continue;
      this.entries.delete(g);
      n++;
    }
    return n;
  }

  /** invalid entries still kept */
  get staleCount(): number {
    return this.entries.size - this.valid;
  }
}
