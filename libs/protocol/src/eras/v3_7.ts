/**
 * Linux v3.7 as shipped (robacklin/linux-3.7.2): the seed ("mm: move all mmu notifier
 * invocations to be done outside the PT lock", 2ec74c3e) and its companion 6bdb913f ("mm: wrap
 * calls to set_pte_at_notify with invalidate_range_start and invalidate_range_end"). No
 * notifier call that may sleep is made under a PT lock; change_pte alone still is, and must not
 * sleep.
 */
import type { Era } from './era';

export const V3_7: Era = {
  kernel: 'v3.7',
  title: 'Linux v3.7: every sleepable notifier call outside the PT lock (the seed + 6bdb913f)',
  notify: {
    ptep_clear_flush_notify: 'page-after-unlock',
    __xip_unmap: 'page-after-unlock',
    do_huge_pmd_wp_page_fallback: 'range-outside-ptl',
    do_huge_pmd_wp_page: 'range-outside-ptl',
    __split_huge_page_splitting: 'range-outside-ptl',
    collapse_huge_page: 'range-outside-ptl',
    __unmap_hugepage_range: 'range-outside-ptl',
    hugetlb_cow: 'range-outside-ptl',
    copy_page_range: 'range-outside-ptl',
    do_wp_page: 'range-outside-ptl',
    move_page_tables: 'range-outside-ptl',
    page_mkclean_one: 'page-after-unlock',
    try_to_unmap_one: 'page-after-unlock',
    try_to_unmap_cluster: 'range-outside-ptl',
    write_protect_page: 'range-outside-ptl',
    replace_page: 'range-outside-ptl',
  },
  setPteAtNotify: 'change-then-set',
};
