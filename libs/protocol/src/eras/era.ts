/**
 * Kernel eras: where each path of the mm tells the secondary MMUs, relative to the page-table
 * lock it changes entries under — chosen here, once per kernel version, instead of by flags
 * scattered through the paths (docs/eras.md). A path asks `notifyOf(ctx, site)` and branches on
 * the answer; an era is one module (v3_6.ts, v3_7.ts) giving every site its ordering, so a later
 * kernel is one more module and one more line in ERAS.
 */
import type { Kernel } from '../fields';

/**
 * The call sites the seed (and its v3.7 companion 6bdb913f) changed, by the kernel function
 * that sends the notification. Each has one row in the README's seed table (seed.ts).
 */
export const SEED_SITES = [
  'ptep_clear_flush_notify',
  '__xip_unmap',
  'do_huge_pmd_wp_page_fallback',
  'do_huge_pmd_wp_page',
  '__split_huge_page_splitting',
  'collapse_huge_page',
  '__unmap_hugepage_range',
  'hugetlb_cow',
  'copy_page_range',
  'do_wp_page',
  'move_page_tables',
  'page_mkclean_one',
  'try_to_unmap_one',
  'try_to_unmap_cluster',
  // 6bdb913f, the v3.7 companion: set_pte_at_notify wrapped in range start/end
  'write_protect_page',
  'replace_page',
] as const;
export type SeedSite = (typeof SEED_SITES)[number];

/**
 * How one path tells the secondary MMUs, relative to the PT lock (the split PTE lock, or
 * mm->page_table_lock for huge entries) it changes the entries under:
 *   page-under-ptl       ptep_clear_flush_notify(): invalidate_page while the lock is held
 *   page-after-unlock    invalidate_page after pte_unmap_unlock, before the page is freed
 *   range-under-ptl      invalidate_range_start/end while page_table_lock is held
 *                        (pmdp_clear_flush_notify, pmdp_splitting_flush_notify, v3.6's hugetlb_cow)
 *   range-outside-ptl    invalidate_range_start before the lock is taken, _end after it is
 *                        dropped, with mmun_start/mmun_end saved once
 *   change-pte-under-ptl set_pte_at_notify() alone: change_pte under the lock, and to a
 *                        subscriber without change_pte, invalidate_page (v3.6's fallback)
 * Only range-outside-ptl and page-after-unlock let a subscriber sleep (v3.7's promise); the
 * checker's no-sleep-under-ptlock reports a sleepable callback sent any other way.
 */
export type Notify =
  | 'page-under-ptl'
  | 'page-after-unlock'
  | 'range-under-ptl'
  | 'range-outside-ptl'
  | 'change-pte-under-ptl';

export interface Era {
  readonly kernel: Kernel;
  /** what the era is, in one line (the README and reports) */
  readonly title: string;
  /** every seed site's ordering */
  readonly notify: Readonly<Record<SeedSite, Notify>>;
  /**
   * set_pte_at_notify(): v3.6 set_pte_at() then mmu_notifier_change_pte(), which falls back to
   * invalidate_page for a subscriber without change_pte ('set-then-change-or-page'); v3.7
   * (6bdb913f) mmu_notifier_change_pte() first, to subscribers that have it only, inside a
   * range the caller opened ('change-then-set')
   */
  readonly setPteAtNotify: 'set-then-change-or-page' | 'change-then-set';
}

/** One line per ordering: what the README's table and the docs say of it. */
export const NOTIFY_TEXT: Readonly<Record<Notify, string>> = {
  'page-under-ptl': 'invalidate_page under the PT lock',
  'page-after-unlock': 'invalidate_page after the unlock, before the page is freed',
  'range-under-ptl': 'range start/end under page_table_lock',
  'range-outside-ptl': 'range start before the lock, end after it',
  'change-pte-under-ptl':
    'set_pte_at_notify under the PT lock: change_pte, or invalidate_page to a subscriber without it',
};

/** Whether an ordering sends a sleepable callback while a PT lock is held. */
export const sleepsUnderPtl = (n: Notify): boolean =>
  n === 'page-under-ptl' || n === 'range-under-ptl' || n === 'change-pte-under-ptl';
