/** A present PTE as stored in Redis: "pfn:gen:w". */
export interface Pte {
  pfn: number;
  gen: number;
  writable: boolean;
}

export function parsePte(v: string): Pte {
  const m = /^(\d+):(\d+):([01])$/.exec(v);
  if (!m) throw new Error(`corrupt PTE ${JSON.stringify(v)}`);
  return { pfn: Number(m[1]), gen: Number(m[2]), writable: m[3] === '1' };
}

export const formatPte = (p: Pte): string => `${p.pfn}:${p.gen}:${p.writable ? 1 : 0}`;
