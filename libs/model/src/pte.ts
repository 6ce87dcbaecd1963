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
  /** w = 5: a file PTE of a nonlinear mapping (pte_file) — pfn is the file page, gen 0 */
  file?: boolean;
}

export function parsePte(v: string): Pte {
  const m = /^(\d+):(\d+):([0-5])$/.exec(v);
  if (!m) throw new Error(`corrupt PTE ${JSON.stringify(v)}`);
  const pte: Pte = { pfn: Number(m[1]), gen: Number(m[2]), writable: m[3] === '1' };
  if (m[3] === '2') pte.protnone = true;
  if (m[3] === '3') pte.cowCleared = true;
  if (m[3] === '4') pte.swap = true;
  if (m[3] === '5') pte.file = true;
  return pte;
}

/** A present PTE: it maps a frame (not a swap entry, a file PTE or a COW's cleared one). */
export const ptePresent = (p: Pte): boolean => !p.swap && !p.file && !p.cowCleared;

/**
 * What put_page()/get_page() owe when a PTE goes or is copied: its frame, or for a swap entry
 * the slot as a negative pfn (swap_free()/swap_duplicate() in the same {mem} scripts); nothing
 * for a file PTE (it names a file page, not a frame).
 */
export const pteFrameRef = (p: Pte): Array<{ pfn: number; gen: number }> =>
  p.file ? [] : [p.swap ? { pfn: -p.pfn, gen: p.gen } : { pfn: p.pfn, gen: p.gen }];

export const formatPte = (p: Pte): string =>
  `${p.pfn}:${p.gen}:${p.file ? 5 : p.swap ? 4 : p.cowCleared ? 3 : p.protnone ? 2 : p.writable ? 1 : 0}`;
