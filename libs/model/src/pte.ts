/**
 * A present PTE as stored in Redis: "pfn:gen:w", w = 1 writable, 0 read-only, 2 PROT_NONE
 * (present for the mm, inaccessible to every walker: pte_protnone), 3 cleared by a COW in
 * flight (pte_none to every walker; the old page is kept so that the COW can be undone).
 */
export interface Pte {
  pfn: number;
  gen: number;
  writable: boolean;
  protnone?: boolean;
  /** w = 3: do_wp_page cleared it and has not set the new PTE yet */
  cowCleared?: boolean;
}

export function parsePte(v: string): Pte {
  const m = /^(\d+):(\d+):([0-3])$/.exec(v);
  if (!m) throw new Error(`corrupt PTE ${JSON.stringify(v)}`);
  const pte: Pte = { pfn: Number(m[1]), gen: Number(m[2]), writable: m[3] === '1' };
  if (m[3] === '2') pte.protnone = true;
  if (m[3] === '3') pte.cowCleared = true;
  return pte;
}

export const formatPte = (p: Pte): string =>
  `${p.pfn}:${p.gen}:${p.cowCleared ? 3 : p.protnone ? 2 : p.writable ? 1 : 0}`;
