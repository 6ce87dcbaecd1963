/**
 * Models: the MTT of an mkey (the device's memory translation table, written by UMRs in
 * mlx5_ib_update_mtt(), 3.19) together with ib_umem_odp's page_list: virtual page → frame, as the
 * HCA translates an RDMA access. Plain state, no I/O: callers trace what changes.
 *
 * Invariants:
 *   - one entry per virtual page number; an entry remembers the frame's gen at install time,
 *     so a DMA through an entry whose frame was freed or reused is reported stale;
 *   - `writable` only when both the MR allows writes and mm mapped the page writable
 *     (3.19's ODP has no young callbacks: the device keeps no accessed bits).
 * For an ODP MR, an entry exists only between an install whose ib_umem_mmu_notifier_retry()
 * passed and the invalidation, change_pte, release or dereg that removes it (see
 * libs/subscriber notifier_seq.ts).
 */
export interface MttEntry {
  pfn: number;
  gen: number;
  writable: boolean;
}

export type Translation = MttEntry;

export class Mtt {
  private readonly entries = new Map<number, MttEntry>();

  get size(): number {
    return this.entries.size;
  }

  get(vpn: number): MttEntry | undefined {
    return this.entries.get(vpn);
  }

  /**
   * Install vpn → t. Returns what was there before (`prev`, to be traced as removed when it
   * differs) and whether anything changed.
   */
  set(vpn: number, t: Translation): { prev?: MttEntry; changed: boolean } {
    const prev = this.entries.get(vpn);
    if (prev && prev.pfn === t.pfn && prev.gen === t.gen && prev.writable === t.writable)
      return { prev, changed: false };
    this.entries.set(vpn, { pfn: t.pfn, gen: t.gen, writable: t.writable });
    return { prev, changed: true };
  }

  /** Remove one entry; returns it, if there was one. */
  clear(vpn: number): MttEntry | undefined {
    const e = this.entries.get(vpn);
    if (e) this.entries.delete(vpn);
    return e;
  }

  /** Remove every entry with vpn in [first, last); returns them in vpn order. */
  clearRange(first: number, last: number): Array<[number, MttEntry]> {
    const out = this.inRange(first, last);
    for (const [vpn] of out) this.entries.delete(vpn);
    return out;
  }

  /** Entries with vpn in [first, last), in vpn order. */
  inRange(first: number, last: number): Array<[number, MttEntry]> {
    const out: Array<[number, MttEntry]> = [];
    if (last - first <= this.entries.size) {
      for (let v = first; v < last; v++) {
        const e = this.entries.get(v);
        if (e) out.push([v, e]);
      }
    } else {
      for (const [v, e] of this.entries) if (v >= first && v < last) out.push([v, e]);
      out.sort((a, b) => a[0] - b[0]);
    }
    return out;
  }
}
