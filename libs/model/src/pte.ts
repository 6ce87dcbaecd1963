/**
 * A present PTE as stored in Redis: "pfn:gen:w", w = 1 writable, 0 read-only, 2 PROT_NONE
 * (present for the mm, inaccessible to every walker: pte_protnone).
 */
export interface Pte {
  pfn: number;
  gen: number;
  writable: boolean;
  protnone?: boolean;
}

export function parsePte(v: string): Pte {
  const m = /^(\d+):(\d+):([012])$/.exec(v);
  if (!m) throw new Error(`corrupt PTE ${JSON.stringify(v)}`);
  const pte: Pte = { pfn: Number(m[1]), gen: Number(m[2]), writable: m[3] === '1' };
  if (m[3] === '2') pte.protnone = true;
  return pte;
}

export const formatPte = (p: Pte): string =>
  `${p.pfn}:${p.gen}:${p.protnone ? 2 : p.writable ? 1 : 0}`;
