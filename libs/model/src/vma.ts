/**
 * A VMA as stored in Redis: "start:end:prot:flags" (vpn, end exclusive; flags "", "shared" or
 * "nonlinear": shared and remapped by remap_file_pages, VM_NONLINEAR; "hugetlb" or
 * "hugetlbshared": VM_HUGETLB, a MAP_HUGETLB mapping, private or shared),
 * and for a mapping of a file ":ino:delta" after it — delta = vm_pgoff - vm_start in pages, so
 * the file page vpn maps is vpn + delta (a split keeps delta, mremap changes it). The Lua side
 * is vma_parse/vma_fmt (lua.ts).
 */
import type { Prot } from '@mmlab/protocol';

export interface Vma {
  start: number;
  end: number;
  prot: Prot;
  shared: boolean;
  /** VM_NONLINEAR (shared too): remap_file_pages put file pages out of order in it */
  nonlinear?: boolean;
  /** VM_HUGETLB: mapped by huge entries from the hugetlbfs pool (start aligned to a huge page) */
  hugetlb?: boolean;
  /** vm_file: the file mapped (its inode number) and delta (its page at vpn is vpn + delta) */
  file?: { ino: number; delta: number };
}

export function parseVma(m: string): Vma {
  const r =
    /^(\d+):(\d+):(none|r|rw):(shared|nonlinear|hugetlb|hugetlbshared)?(?::(\d+):(-?\d+))?$/.exec(
      m,
    );
  if (!r) throw new Error(`corrupt VMA ${JSON.stringify(m)}`);
  const v: Vma = {
    start: Number(r[1]),
    end: Number(r[2]),
    prot: r[3] as Prot,
    shared: r[4] !== undefined && r[4] !== 'hugetlb',
  };
  if (r[4] === 'hugetlb' || r[4] === 'hugetlbshared') v.hugetlb = true;
  if (r[4] === 'nonlinear') v.nonlinear = true;
  if (r[5] !== undefined) v.file = { ino: Number(r[5]), delta: Number(r[6]) };
  return v;
}

/** The flags part of a VMA member. */
const vmaFlags = (v: Vma): string =>
  v.nonlinear
    ? 'nonlinear'
    : v.hugetlb
      ? v.shared
        ? 'hugetlbshared'
        : 'hugetlb'
      : v.shared
        ? 'shared'
        : '';

export const formatVma = (v: Vma): string =>
  `${v.start}:${v.end}:${v.prot}:${vmaFlags(v)}` + (v.file ? `:${v.file.ino}:${v.file.delta}` : '');

/** linear_page_index(): the file page vpn maps in v (null: v maps no file) */
export const linearPageIndex = (v: Vma, vpn: number): number | null =>
  v.file ? vpn + v.file.delta : null;
