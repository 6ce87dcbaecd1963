/** A VMA as stored in Redis: "start:end:prot:flags" (vpn, end exclusive; flags "" or "shared"). */
import type { Prot } from '@mmlab/protocol';

export interface Vma {
  start: number;
  end: number;
  prot: Prot;
  shared: boolean;
}

export function parseVma(m: string): Vma {
  const r = /^(\d+):(\d+):(none|r|rw):(shared)?$/.exec(m);
  if (!r) throw new Error(`corrupt VMA ${JSON.stringify(m)}`);
  return { start: Number(r[1]), end: Number(r[2]), prot: r[3] as Prot, shared: r[4] === 'shared' };
}

export const formatVma = (v: Vma): string =>
  `${v.start}:${v.end}:${v.prot}:${v.shared ? 'shared' : ''}`;
