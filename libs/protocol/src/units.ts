/** Address-space geometry, x86-64 flavoured: 4 KiB pages, 512 PTEs per page-table page. */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** PTEs per page-table page: one split PTE lock (pte_lockptr) covers this many pages. */
export const PTRS_PER_PTE = 512;
/** A PMD maps PTRS_PER_PTE pages: 2 MiB, the THP size. */
export const HPAGE_PMD_NR = PTRS_PER_PTE;
/** Lowest address mmap hands out (like mmap_min_addr, far above it). */
export const MMAP_BASE = 0x10000000;
/** Highest user address (exclusive), kept inside the 2^53 doubles of JSON and Lua. */
export const TASK_SIZE = 2 ** 47;
/** pfn of the shared zero page (ZERO_PAGE(0)); never allocated, never freed. */
export const ZERO_PFN = 0;

export const vpnOf = (addr: number): number => Math.floor(addr / PAGE_SIZE);
export const addrOf = (vpn: number): number => vpn * PAGE_SIZE;
/** Index of the page-table page (the PMD entry) that maps vpn. */
export const pmdIndexOf = (vpn: number): number => Math.floor(vpn / PTRS_PER_PTE);
export const isPageAligned = (addr: number): boolean => addr % PAGE_SIZE === 0;
export const hex = (n: number): string => '0x' + n.toString(16);
