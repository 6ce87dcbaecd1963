/**
 * A present PTE as stored in Redis: "pfn:gen:w", w = 1 writable, 0 read-only, 2 PROT_NONE
 * (present for the mm, inaccessible to every walker: pte_protnone), 3 cleared by a COW in
 * flight (pte_none to every walker; the old page is kept so that the COW can be undone), 4 a swap
 * entry (not present: pfn is the swap slot, gen the slot's generation; keys.ts {mem}:swap).
 */
export interface Pte {
  pfn: number;
  gen: number;
  writable: boolean;
  protnone?: boolean;
  /** w = 3: do_wp_page cleared it and has not set the new PTE yet */
  cowCleared?: boolean;
  /** w = 4: a swap entry — pfn is the swap slot, gen the slot's generation (swp_entry_t) */
  swap?: boolean;
}

export function parsePte(v: string): Pte {
  const m = /^(\d+):(\d+):([0-4])$/.exec(v);
  if (!m) throw new Error(`corrupt PTE ${JSON.stringify(v)}`);
  const pte: Pte = { pfn: Number(m[1]), gen: Number(m[2]), writable: m[3] === '1' };
  if (m[3] === '2') pte.protnone = true;
  if (m[3] === '3') pte.cowCleared = true;
  if (m[3] === '4') pte.swap = true;
  return pte;
}

/**
 * What put_page()/get_page() owe when a PTE goes or is copied: its frame, or for a swap entry
 * the slot as a negative pfn (swap_free()/swap_duplicate() in the same {mem} scripts).
 */
export const pteFrameRef = (p: Pte): { pfn: number; gen: number } =>
  p.swap ? { pfn: -p.pfn, gen: p.gen } : { pfn: p.pfn, gen: p.gen };

export const formatPte = (p: Pte): string =>
  `${p.pfn}:${p.gen}:${p.swap ? 4 : p.cowCleared ? 3 : p.protnone ? 2 : p.writable ? 1 : 0}`;
