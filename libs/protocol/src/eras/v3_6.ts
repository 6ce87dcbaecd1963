/**
 * Linux v3.6 (yuhc/linux-3.6.5): before the seed. ptep_clear_flush_notify() and the pmdp_*_notify
 * macros of include/linux/mmu_notifier.h sent invalidate_page, or a range, while the PT lock was
 * held; set_pte_at_notify() fell back to invalidate_page. Three paths were already outside it.
 */
import type { Era } from './era';

export const V3_6: Era = {
  kernel: 'v3.6',
  title: 'Linux v3.6: notifier calls under the PT lock (subscribers may not sleep)',
  notify: {
    ptep_clear_flush_notify: 'page-under-ptl',
    __xip_unmap: 'page-under-ptl',
    // pmdp_clear_flush_notify: range start/end inside spin_lock(&mm->page_table_lock)
    do_huge_pmd_wp_page_fallback: 'range-under-ptl',
    do_huge_pmd_wp_page: 'range-under-ptl',
    // pmdp_splitting_flush_notify
    __split_huge_page_splitting: 'range-under-ptl',
    collapse_huge_page: 'range-under-ptl',
    // already outside: start before `again: spin_lock`, end after the loop
    __unmap_hugepage_range: 'range-outside-ptl',
    // start/end inside the retaken page_table_lock, around huge_ptep_clear_flush
    hugetlb_cow: 'range-under-ptl',
    // already outside: around the whole copy, before any PT lock
    copy_page_range: 'range-outside-ptl',
    // ptep_clear_flush, then set_pte_at_notify (change_pte, or its invalidate_page fallback)
    do_wp_page: 'change-pte-under-ptl',
    // already outside: around move_ptes' loop
    move_page_tables: 'range-outside-ptl',
    page_mkclean_one: 'page-under-ptl',
    try_to_unmap_one: 'page-under-ptl',
    // ptep_clear_flush_notify per PTE of the cluster
    try_to_unmap_cluster: 'page-under-ptl',
    // mm/ksm.c: ptep_clear_flush + set_pte_at_notify, no range
    write_protect_page: 'change-pte-under-ptl',
    replace_page: 'change-pte-under-ptl',
  },
  setPteAtNotify: 'set-then-change-or-page',
};
