/**
 * The seed's call sites as the README's table shows them: where each lives in the kernel, the
 * mmlab function that models it, its example (examples/seed/, run in both eras by the test
 * suite) and what v3.6 and v3.7 do there (the eras' own tables). README.md carries the table
 * renderSeedTable() makes (eras.spec.ts checks it).
 */
import { type SeedSite, NOTIFY_TEXT, SEED_SITES } from './era';
import { V3_6 } from './v3_6';
import { V3_7 } from './v3_7';

export interface SeedRow {
  /** the kernel file the hunk is in (v3.7) */
  readonly kernel: string;
  /** the mmlab function that models it (file: function); null: not modelled yet */
  readonly mmlab: string | null;
  /** its example under examples/seed/; null: none yet */
  readonly example: string | null;
}

export const SEED_ROWS: Readonly<Record<SeedSite, SeedRow>> = {
  ptep_clear_flush_notify: {
    kernel:
      'include/linux/mmu_notifier.h (removed; pmdp_clear_flush_notify, pmdp_splitting_flush_notify too)',
    mmlab: 'apps/mm/src/kernel/mmu_notifier.ts: ptepClearFlushNotify',
    example: 'examples/seed/try_to_unmap_one.yaml',
  },
  __xip_unmap: {
    kernel: 'mm/filemap_xip.c',
    mmlab: 'apps/mm/src/kernel/filemap_xip.ts: xipUnmap',
    example: 'examples/seed/__xip_unmap.yaml',
  },
  do_huge_pmd_wp_page_fallback: {
    kernel: 'mm/huge_memory.c',
    mmlab: 'apps/mm/src/kernel/huge_memory.ts: doHugePmdWpPageFallback',
    example: 'examples/seed/do_huge_pmd_wp_page_fallback.yaml',
  },
  do_huge_pmd_wp_page: {
    kernel: 'mm/huge_memory.c',
    mmlab: 'apps/mm/src/kernel/huge_memory.ts: doHugePmdWpPage',
    example: 'examples/seed/do_huge_pmd_wp_page.yaml',
  },
  __split_huge_page_splitting: {
    kernel: 'mm/huge_memory.c',
    mmlab: 'apps/mm/src/kernel/huge_memory.ts: splitHugePage',
    example: 'examples/seed/__split_huge_page_splitting.yaml',
  },
  collapse_huge_page: {
    kernel: 'mm/huge_memory.c',
    mmlab: 'apps/mm/src/kernel/huge_memory.ts: collapseHugePage',
    example: 'examples/seed/collapse_huge_page.yaml',
  },
  __unmap_hugepage_range: {
    kernel: 'mm/hugetlb.c',
    mmlab: 'apps/mm/src/kernel/hugetlb.ts: unmapHugepageRange',
    example: 'examples/seed/__unmap_hugepage_range.yaml',
  },
  hugetlb_cow: {
    kernel: 'mm/hugetlb.c',
    mmlab: 'apps/mm/src/kernel/hugetlb.ts: hugetlbCow',
    example: 'examples/seed/hugetlb_cow.yaml',
  },
  copy_page_range: {
    kernel: 'mm/memory.c',
    mmlab: 'apps/mm/src/kernel/fork.ts: copyPageRange',
    example: 'examples/seed/copy_page_range.yaml',
  },
  do_wp_page: {
    kernel: 'mm/memory.c',
    mmlab: 'apps/mm/src/kernel/memory.ts: doWpPage',
    example: 'examples/seed/do_wp_page.yaml',
  },
  move_page_tables: {
    kernel: 'mm/mremap.c',
    mmlab: 'apps/mm/src/kernel/mremap.ts: mremapSteps',
    example: 'examples/seed/move_page_tables.yaml',
  },
  page_mkclean_one: {
    kernel: 'mm/rmap.c',
    mmlab: 'apps/mm/src/kernel/filemap.ts: pageMkcleanOne',
    example: 'examples/seed/page_mkclean_one.yaml',
  },
  try_to_unmap_one: {
    kernel: 'mm/rmap.c',
    mmlab: 'apps/mm/src/kernel/vmscan.ts: tryToUnmapOne',
    example: 'examples/seed/try_to_unmap_one.yaml',
  },
  try_to_unmap_cluster: {
    kernel: 'mm/rmap.c',
    mmlab: 'apps/mm/src/kernel/vmscan.ts: tryToUnmapCluster',
    example: 'examples/seed/try_to_unmap_cluster.yaml',
  },
  write_protect_page: {
    kernel: 'mm/ksm.c (6bdb913f)',
    mmlab: 'apps/mm/src/kernel/ksm.ts: writeProtectPage',
    example: 'examples/seed/write_protect_page.yaml',
  },
  replace_page: {
    kernel: 'mm/ksm.c (6bdb913f)',
    mmlab: 'apps/mm/src/kernel/ksm.ts: replacePage',
    example: 'examples/seed/write_protect_page.yaml',
  },
};

const cell = (s: string): string => s.replace(/\|/g, '\\|');
const code = (s: string): string => '`' + s + '`';

/** The README's table of the seed's call sites (markdown, one row per site). */
export function renderSeedTable(): string {
  const rows = SEED_SITES.map((site) => {
    const r = SEED_ROWS[site];
    return [
      code(site) + ' — ' + r.kernel,
      r.mmlab ? code(r.mmlab) : 'not modelled yet',
      r.example ? `[${code(r.example.replace('examples/seed/', ''))}](${r.example})` : '—',
      NOTIFY_TEXT[V3_6.notify[site]],
      NOTIFY_TEXT[V3_7.notify[site]],
    ]
      .map(cell)
      .join(' | ');
  });
  return [
    '| seed call site — kernel file | mmlab | example | v3.6 (`kernel: v3.6`) | v3.7 (`kernel: v3.7`) |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r} |`),
  ].join('\n');
}
