/**
 * Redis key layout. Every key of one address space carries the hash tag `{p:<pid>}`, and every
 * key of physical memory the tag `{mem}`, so each Lua script touches exactly one slot and stays
 * valid on Redis Cluster. Scripts receive every key they touch in KEYS.
 *
 * Physical memory ({mem}) — struct page, packed: one record of FRAME_BYTES per pfn in one string.
 *   {mem}:meta   hash: frames (pfns 1..frames are memory; pfn 0 is the zero page), formatted,
 *                layout (FRAME_LAYOUT: the record layout the table was formatted with), and
 *                the free list's ends: free (the pfn at its head, 0 = none), hwm (the highest
 *                pfn ever handed out: hwm+1..frames are free and were never allocated) and
 *                nr_free (NR_FREE_PAGES: how many frames are free)
 *   {mem}:frames string: the frame table (mem_map). The record of pfn p is the FRAME_BYTES bytes at
 *                offset p*FRAME_BYTES, read and written only by the Lua helpers of mem/lua.ts
 *                (BITFIELD, big-endian fields as BITFIELD reads them) and decoded by
 *                mem/frame.ts; nobody outside libs/model knows this layout:
 *                  byte  0  u32 gen       generation, bumped at every allocation (never decreases;
 *                                         wraps after 2^32 allocations of one frame)
 *                  byte  4  i32 refcount  page->_count: mappings + pins (≥ mapcount; 0 iff free).
 *                                         Signed like the kernel's atomic_t, so that a count
 *                                         driven below 0 stays visible to fsck
 *                  byte  8  i32 mapcount  page->_mapcount + 1: PTEs mapping it (signed, as above)
 *                  byte 12  u32 next      page->lru.next: on a free frame, the next pfn of the free
 *                                         list (0 = the end of the chain); reclaim will thread
 *                                         its LRU lists through next/prev of used frames
 *                  byte 16  u32 prev      page->lru.prev: reserved for reclaim's LRU (0 today)
 *                  byte 20  u8  state     0 free | 1 used | 2 zero (pfn 0 only); other: corrupt
 *                  byte 21  u8  flags     page->flags, bits reserved (0 today):
 *                                           0 PG_lru, 1 PG_referenced, 2 PG_swapcache (reclaim)
 *                                           3 PG_ksm (a KSM page, {mem}:ksm; in v3.7
 *                                             PageKsm is the PAGE_MAPPING_KSM bits of
 *                                             page->mapping)
 *                                           4 PG_head, 5 PG_tail (compound pages: THP —
 *                                             2^order frames, the head's pfn aligned to
 *                                             2^order, all of one gen — and hugetlbfs's
 *                                             pool for its whole life)
 *                                           6, 7 free for later use
 *                  byte 22  u16 reserved  the compound order of a head page (hugetlbfs's
 *                                         pool, THP) or of a THP tail (its head is
 *                                         pfn - pfn % 2^order), or KSM's stable node; else 0
 *                  byte 24  i64 data      the page's one word of content: any safe integer
 *                                         (Value in libs/protocol, |v| < 2^53) fits
 *                A zero-filled record is a free frame that was never allocated (gen 0, counts 0,
 *                off the chain), so memFormat is one SETRANGE at any size.
 *                The free list (free_hot_cold_page / buffered_rmqueue: LIFO, a freed frame is
 *                reused at once, as a hot page is): the chain from meta's free through the next
 *                fields, then the never-allocated hwm+1..frames in order. A frame is freed by
 *                pushing it at the head of the chain and allocated from the head (or, with the
 *                chain empty, as hwm+1). Nothing but the table and three meta fields: 0 bytes
 *                a frame beyond its record.
 *              Invariants (fsck: frame-state, free-list-*): pfn 0 is the zero page; every pfn
 *              1..frames is free or used; a free frame has refcount and mapcount 0 and is on the
 *              free list exactly once; a used one has refcount ≥ mapcount ≥ 0 and refcount ≥ 1
 *              and is not on it; nr_free is the free list's length.
 *   {mem}:fenced set of agents (subscribers or CPUs whose liveness lease expired): their
 *                accesses are refused, as an IOMMU would after the device is detached; a CPU
 *                lifts its own fence after flushing its whole TLB (LivenessLease.ensure)
 *   {mem}:once   hash: batch id → 1: a put_page batch of an intent (below) that was applied, so
 *                that the replica finishing a dead one's operation never puts it twice; a
 *                get_page batch of fork's (<id>#c<n>) → 1 applied | undone (rolled back first:
 *                a late get of a stopped replica is then refused)
 *   {mem}:pending pfn → "gen|incarnation|pid|vpn|old": a frame allocated for a fault (or a COW)
 *                of pid at vpn by that mm incarnation and not known to be installed yet; old
 *                ("pfn:gen", or empty) is the page a COW replaces, whose put_page is still owed — or, for a
 *                swap-in's page ("-slot:gen"), the swap entry it replaces (its swap_free owed).
 *                Dropped atomically with the first get_page/put_page of the frame (whoever
 *                finds the frame in a PTE proves it installed: the COW's put of old is then
 *                done by that same script) or by its owner once installed. A tag whose owner
 *                died is reaped (orphan_ranges.ts): put back when no PTE of pid holds it (rolled
 *                back), old put when one does (rolled forward).
 *                Also "gen|incarnation|reserve": a frame of that incarnation's per-replica
 *                batch (its per_cpu_pages list, apps/mm/src/kernel/page_alloc.ts), taken by
 *                rmqueueBulk and charged there as a fresh allocation (gen bumped, refcount 1,
 *                mapcount 1, data 0) before any fault uses it. The tag stays until the owner
 *                reports the frame installed (its next rmqueueBulk: the tag goes, the frame is an
 *                ordinary mapped page) or gives it back unused (rmqueueBulk: freed), or until
 *                the first get_page/put_page of the frame (only a frame found in a PTE is put or
 *                got: it was installed). A reserve frame of a live incarnation that no PTE maps
 *                is legal (its charge is its mapping); a dead incarnation's is reaped
 *                (reserveReap: installed ones untagged, the rest freed) — fsck:
 *                reserve-dead-owner. A reserve frame is installed only by the fault script, in
 *                a pid its owner indexed first ({mm}:invpids) and that records the install in
 *                {p:<pid>}:rsv in the same script.
 *                Also u:<rec> → a record of a multi-step change of one incarnation ("0|incarnation|
 *                kind|..."), ended by that owner or, once it is dead, by a reaper
 *                (orphan_ranges.ts; fsck: pending-dead-owner while one is left):
 *                  isolated|pfn:gen ...  reclaim's isolated batch (isolateLruPages, isolatedReap)
 *                  replace|pid|vpn|kpfn:kgen|pfn:gen  KSM's replace_page (ksmReplaceGet/End)
 *                  unmap|pid|vpn|pfn:gen|slot:sgen  reclaim's try_to_unmap_one of an isolated page
 *                    at pid's vpn, its slot's swap_duplicate taken in the same step (slot 0: a
 *                    file's page); unmapRecordEnd owes the page's put once the PTE no longer
 *                    maps it, else the duplicate's swap_free (a reaper reads which: unmapFence)
 *                  huge|pool|pid|hvpn|pfn:gen|olds  a huge page (pool thp: a compound page;
 *                    hugetlb: a pool page) allocated for pid's entry at hvpn, in the allocation's
 *                    step (allocHugePage, hugetlbAlloc); olds "pfn:gen ..." the pages its install
 *                    owes a put (do_huge_pmd_wp_page's and hugetlb_cow's old page,
 *                    collapse_huge_page's small pages). hugeRecordEnd: installed → the olds'
 *                    puts, else the new page's own (the reaper reads which after fencing the
 *                    owner off pid: hugeFence)
 *                  split|pid|hvpn|pfn:gen  split_huge_page of that compound page in flight
 *                    (splitRecordOpen, before its first mapping is split); ended by
 *                    __split_huge_page_refcount (splitHugePage with the record) — a reaper
 *                    splits the mappings still huge first
 *   {mem}:swap   hash, the swap device and the swap cache (mm/swapfile.c, mm/swap_state.c):
 *                  s<slot> → "gen|count|cpfn|cgen|data": one swap slot (1..meta swap_slots) —
 *                    gen bumped at each get_swap_page (a swap PTE names slot and gen, so a
 *                    stale one is told apart), count the swap PTEs that hold it (swap_map's
 *                    count), cpfn/cgen the page in the swap cache for it (0: none;
 *                    SWAP_HAS_CACHE), data the page's word as pageout wrote it
 *                  p<pfn> → slot: the frame is in the swap cache (PageSwapCache,
 *                    page_private) for that slot; the swap cache holds one reference
 *                A slot is free when its count is 0 and it has no cache page; meta keeps
 *                swap_slots (the device's size: config.swapSlots, 0 = no swap), nr_swap_free
 *                and swap_next (where get_swap_page looks first).
 *              Invariants (fsck: swap-*): count = the swap PTEs naming slot and gen in every
 *              address space; a cache page is a used frame of that gen with p<pfn> naming the
 *              slot back; nr_swap_free is the number of free slots.
 *   {mem}:lru, {mem}:lru:active  zsets of used frames (member pfn, score: when it was added, µs —
 *                Redis TIME, or for a per-replica batch frame the time its fault installed it,
 *                reported with the install: a batch frame joins the list then, not when taken):
 *                the inactive and the active anonymous LRU lists (lruvec, mm/vmscan.c v3.7).
 *                A new anonymous page goes on the active list (page_add_new_anon_rmap), a page
 *                read in from swap on the inactive one; a frame leaves both when freed.
 *                Reclaim deactivates the active list's oldest when the inactive list is the
 *                shorter (shrink_active_list, clearing their young bits), isolates from the
 *                inactive list's oldest end and activates the referenced ones. A frame being
 *                reclaimed is on neither (isolated, with one extra reference). Kept only on a
 *                machine with swap (meta swap_slots > 0): without swap nothing is reclaimed,
 *                and a sorted-set entry (~100 B) would cost three times the frame's record.
 *   {mem}:pagecache hash, the files and their page caches (struct inode, address_space,
 *                mm/filemap.c v3.7) — one hash for every file, so that looking a page up and
 *                allocating its frame are one {mem} script:
 *                  ino_next    the last inode number given (files are numbered from 1)
 *                  f<ino>      "pages|xip": the file's size in pages (i_size) and whether it is
 *                              an XIP file (1: no page cache, its pages are the backing store's)
 *                  c<ino>:<i>  pfn: page i of file ino is cached in that frame (the radix tree
 *                              of page->mapping; the frame's gen is its record's)
 *                  d<ino>:<i>  the page's word on the backing store (absent: 0, a hole)
 *                  p<pfn>      "ino:i:dirty": the frame is page i of ino in the page cache
 *                              (page->mapping, page->index) and, dirty = 1, PG_dirty: written
 *                              since writeback last cleaned it (mapped writable, or by write())
 *                  m<ino>      1: a shmem object (shmem_zero_setup behind MAP_SHARED|
 *                              MAP_ANONYMOUS): no d<ino>:<i>, its pages go to swap — an
 *                              unmapped page's c<ino>:<i> becomes "s<slot>:<gen>" (the swap
 *                              entry shmem_writepage leaves in the radix tree, holding one count
 *                              of the slot) until shmem_getpage reads it back
 *                The page cache holds one reference of a cached frame (add_to_page_cache's
 *                page_cache_get), as the swap cache does; its mappings add theirs.
 *                XIP files (mm/filemap_xip.c v3.7) have no page cache and no d<ino>:<i>: an
 *                allocated block (get_xip_mem(create = 1): a write(), or a fault of a shared
 *                writable mapping) is a frame owned by the file for its whole life, holding the
 *                data — c<ino>:<i> → pfn as above, and p<pfn> = "ino:i:x" (x: an XIP block,
 *                never dirty, never written back, never reclaimed, on no LRU list); the file's
 *                reference is its refcount's 1, its mappings add theirs. A hole has no entry.
 *                  sparse      pfn of __xip_sparse_page: the one zero-filled frame every hole
 *                              of every XIP file is mapped read-only to, allocated on first use
 *                              and never freed (refcount 1 + its mapcount: each PTE mapping it
 *                              holds a mapping reference), on no LRU list, in no cache
 *                  xs_seq      xip_sparse_seq: sparse-page faults ever begun (write_seqcount_
 *                              begin); __xip_unmap scans again when it moved meanwhile
 *                  xs_busy     sparse-page faults between their lookup and their install (0 at
 *                              rest: __xip_unmap waits while it is not)
 *              Invariants (fsck: pagecache-*): c<ino>:<i> = pfn iff p<pfn> = "ino:i:…", and the
 *              frame is used; i < the file's pages; a file's pages are never in the swap cache;
 *              only a shmem object's entries are swap entries (counted by swap-count);
 *              "x" entries are exactly an XIP file's (its pages), and neither they nor the
 *              sparse page are on an LRU list; the sparse page is used, in no cache, with
 *              refcount = mapcount + 1; xs_busy is 0 at rest.
 *   {mem}:hugetlb hash, the hugetlbfs pool (struct hstate, mm/hugetlb.c v3.7; scripts and key
 *                helpers in mm/hugetlb-scripts.ts and mm/hugetlb-store.ts): order (huge pages
 *                are 2^order frames: config hugePageOrder), base (the first head pfn, 2^order),
 *                nr_hugepages (config hugetlbPages), free_huge_pages, and free ("pfn pfn ...":
 *                the heads of the free huge pages, hugepage_freelists; the last one is taken
 *                first). Reserved once, right after memFormat and before any allocation
 *                (hugetlbFormat): the pool is pfns base .. base + nr * 2^order - 1, which the
 *                buddy free list never holds (hwm starts above it; pfns 1 .. base - 1 are its
 *                chain). Every pool page is compound for its whole life: its head's flags have
 *                PG_head and its reserved u16 the order, its tails PG_tail. A free one: every
 *                frame free, counts 0, on no list but this one. One in use (alloc_huge_page):
 *                every frame used with the same gen (bumped together at each allocation: a
 *                subpage's translation names it), the tails' counts 0, the head's refcount and
 *                mapcount the huge entries mapping it ({p:<pid>}:hugetlb; no pins on hugetlb
 *                memory); its last entry gone, it goes back on this list (free_huge_page). Pool
 *                pages are on no LRU list: reclaim never sees them.
 *              Invariants (fsck: hugetlb): free_huge_pages is the free list's length; the free
 *              list names distinct pool heads, exactly the pool pages not in use; the rules
 *              above on frames (frame-state, free-list-*, mapcount, refcount, pinned-vm) leave
 *              the pool's frames to this one.
 *   {mem}:ksm    hash, KSM's stable tree (mm/ksm.c v3.7: stable_node, the rb-tree ordered by page
 *                content — here one word, so a hash by content), written only by ksm/scripts.ts:
 *                  d<data>  "pfn:gen": the KSM page holding that content (stable_tree_search)
 *                  p<pfn>   data: the frame's stable node (page->mapping with PAGE_MAPPING_KSM)
 *                A frame with PG_ksm (flags bit 3) is a KSM page: anonymous, mapped read-only by
 *                every PTE that maps it (replace_page: mk_pte(kpage, vm_page_prot) of a private
 *                VMA), never reused by do_wp_page (always copied), on no LRU list (reclaim
 *                skips KSM pages: v3.7 swaps them through rmap_walk_ksm, mmlab does not). Freed
 *                when its last reference goes, and then out of the tree (free_push: ksm_free).
 *              Invariants (fsck: ksm): p<pfn> = data iff d<data> = "pfn:gen"; such a frame is
 *              used, of that gen, holds that data and has PG_ksm; every PG_ksm frame has its
 *              p<pfn>; no PTE maps a PG_ksm frame writable.
 *
 * An address space ({p:<pid>}) — mm_struct and its page tables:
 *   :mm        hash: seq (mm_lock_seq: bumped at every mmap_sem write acquire and release),
 *              mmapNext (next free vpn for mmap), state, pinnedVm (mm->pinned_vm: pages pinned
 *              by pinned registrations, ≤ the memlock limit; not inherited by fork)
 *   :vma       zset: score = start vpn, member = "start:end:prot:flags" (vpn, end exclusive;
 *              flags '', shared, nonlinear, hugetlb or hugetlbshared: vma.ts)
 *   :pte       hash: the PTEs, packed (fixed-width pfn, gen, w and flag bits), one field per
 *              64 PTEs (an eighth of a page-table page; layout and helpers in mm/lua.ts, the
 *              only code that reads or writes it). A PTE is (pfn, gen, w), w = 1 writable, 0 read-only, 2 PROT_NONE, 3 cleared
 *              by a COW in flight: do_wp_page's ptep_clear_flush, with the old page kept so that
 *              a COW that dies or loses its lease can be undone — a walker sees pte_none, a fault
 *              finding no PT-lock holder puts the old read-only PTE back. Scripts give a PTE as
 *              "pfn:gen:w" (pte.ts). pte_none: not stored; 64 PTEs all none are no field
 *   :fenced    set of mm incarnations refused on this address space: a replica whose pending
 *              frames here were reaped as dead (any fault script it runs here is refused), or
 *              whose index entry for this pid was dropped as dead (invFence: it may open or
 *              take over no invalidation or intent here)
 *   :pmds      set of pmd indexes that have PTEs (page-table pages in use)
 *   :pmdhuge   hash, the transparent huge page entries (pmd_trans_huge; apps/mm huge_memory.ts,
 *              helpers in mm/thp-lua.ts): o → the huge page order (hugePageOrder: a huge page is
 *              2^o frames and maps the 2^o-aligned virtual range), and for each huge mapping
 *              <hvpn> (its first vpn, 2^o-aligned) → "pfn:gen:w": the head frame of a compound
 *              page and its gen, w = 1 writable, 0 read-only, 3 cleared by a huge COW, fallback,
 *              split or collapse in flight (pmdp_clear_flush: pmd_none to every walker; a fault
 *              finding no page_table_lock holder puts it back read-only). ONE entry per huge
 *              page, guarded by mm->page_table_lock (:ptl:mm), never by a split PTE lock.
 *              A walker of vpn inside it sees subpage head + (vpn - hvpn), gen the head's.
 *              Invariants (fsck: thp): the range lies in an anonymous private VMA and holds no
 *              PTE; the head is a used frame of that gen with PG_head and order o, its 2^o - 1
 *              tails used frames of the same gen with PG_tail and order o; the head's mapcount
 *              is the number of huge entries naming it in every address space, its refcount at
 *              least that plus the tails' refcounts (their pins: a pin of a subpage is counted
 *              on the tail and on the head, as v3.7's tail-page refcounting does); a compound
 *              frame is mapped by no PTE.
 *   :ptl:<i>   the split PTE lock of pmd i (pte_lockptr): "owner|token", PX ttl
 *   :ptl:mm    mm->page_table_lock
 *   :ptlmax    hash: lock → highest fencing token granted (the resource side of fencing)
 *   :fence     counter: fencing tokens, strictly increasing per address space
 *   :sem:w     mmap_sem held for write: "owner|token", PX ttl
 *   :sem:r     zset: mmap_sem held for read, member "owner|token", score = its lease's expiry
 *              (Redis TIME, ms); a writer waits for every live member, a reader for no
 *              writer; the lease-free fault path checks :sem:w only (it reads, as a reader)
 *   :cpumask   set of agents that may cache translations of this mm (mm_cpumask)
 *   :mn        hash: notifier subscribers registered on this mm → "<registration time>|<the
 *              callbacks it implements, comma-separated>" (its mmu_notifier_ops)
 *   :inv       hash: inv → the open range invalidation (JSON: pid op start end event
 *              subscribers; never changed once written): written before its
 *              invalidate_range_start is sent, deleted once its invalidate_range_end was acked
 *   :invown    hash: inv → "<incarnation>|<open|ending>": the mm incarnation that owes its end
 *              (the sender, or the replica that took it over from a dead sender) and whether
 *              mn.range_end was traced already (ending). Invariant: a field of :inv has one here
 *              and vice versa; the owner only changes by the invClaim script. Invariant: the
 *              owner of every record here (and of every intent below) has this pid in its
 *              index {mm}:invpids:<incarnation>, or is in :fenced (then it owns none here any
 *              more and can open or claim none): the orphan-range reaper reads the index, not
 *              every pid (orphan_ranges.ts). invOpen, invClaim, intentOpen and intentClaim
 *              refuse an incarnation in :fenced (FENCED).
 *   :rsv       hash: mm incarnation → "pfn:gen pfn:gen ...": the reserve frames ({mem}:pending
 *              "…|reserve") that incarnation's faults installed here, appended by the fault
 *              script that installs one (the install and its record are one step). Entries the
 *              owner has since reported installed to {mem} are dropped by its next fault script
 *              here (its drop list); the rest tell the reaper, once it fenced a dead owner off
 *              this pid (pcpFence), which of the owner's reserve frames were installed (kept)
 *              and which never were (freed). The reaper deletes the field once {mem} has no
 *              reserve frame of that owner left (reserveForget). Invariant: a reserve frame
 *              installed here and still tagged in {mem} is listed in its owner's field.
 *   :hugetlb   hash: the huge entries of the hugetlb VMAs (huge_pte, mm/hugetlb.c v3.7): field
 *              hvpn (the first vpn of a huge page, a multiple of 2^order) → "pfn:gen:w", pfn the
 *              pool head, gen its gen, w 1 writable or 0 read-only, or 3: cleared by a
 *              hugetlb_cow in flight (its old page kept: pte_none to a walker; put back
 *              read-only by hugetlbLookup once page_table_lock is free). ONE entry per huge page (not
 *              2^order PTEs), written only under mm->page_table_lock (:ptl:mm, fenced) or into a
 *              child being forked; a walker of a 4 KiB page of it gets the subpage pfn + (vpn
 *              - hvpn) by a fault (hugetlb_fault). Invariants (fsck: hugetlb): every entry lies
 *              in a hugetlb VMA of a live mm at a huge page boundary, names a used pool head of
 *              its gen, is writable only in an rw VMA, and is read-only in a private mapping
 *              while its page is mapped more than once (fork's write-protect, until hugetlb_cow)
 *   :unmapped:<rec>  "1" PX (a minute at least): try_to_unmap_one's PTE step of the record rec
 *              ({mem}:pending u:<rec> unmap) was done — written by that step (tryToUnmapOne) in
 *              the same script, read by the reaper's fence (unmapFence) to tell an unmapped page
 *              from one a swap-in mapped again since; it expires on its own
 *   :intents   set of the ids of the multi-step operations in flight (intent records)
 *   :intent:<id> hash, one per multi-step operation (munmap, mprotect, mremap, fork), written before
 *              its first change and deleted after its last (id: "<incarnation>/<op>"):
 *                owner   the mm incarnation running it (the starter, or the replica that took
 *                        it over from a dead one: intentClaim); a PT lock asked for the
 *                        operation by anyone else is refused (the incarnation is fenced)
 *                rec     JSON: the syscall and its arguments, and where its caller waits
 *                cleared "pfn:gen ..." frames whose PTEs were cleared and not yet put (appended
 *                        by zapPteRange in the same script; zapHugePmd appends the heads of the
 *                        huge entries it cleared, hugetlbZap its pool pages as "h<pfn>:<gen>",
 *                        put back to the pool), batch: how many batches were put ({mem}:once
 *                        <id>#<n>, and <id>#<n>h for the batch's pool pages)
 *                newVpn  mremap: where move_vma put the VMA (set by vmaMove in the same script)
 *                chunks  fork: how many copy_pte_range chunks were read (chunk:<n>: their
 *                        frames "pfn:gen ...", written by copyPteRange in the same script); the
 *                        child's get_page of chunk n is the {mem}:once batch <id>#c<n>
 *              Invariant: an id is in :intents iff its hash exists.
 */
import { pmdIndexOf } from '@mmlab/protocol';

export const MEM = {
  meta: '{mem}:meta',
  frames: '{mem}:frames',
  fenced: '{mem}:fenced',
  once: '{mem}:once',
  pending: '{mem}:pending',
  swap: '{mem}:swap',
  lru: '{mem}:lru',
  active: '{mem}:lru:active',
  pagecache: '{mem}:pagecache',
  ksm: '{mem}:ksm',
  pins: '{mem}:pins',
} as const;
/** The roles of the {mem} keys, in the order every {mem} script receives them as KEYS. */
export const MEM_ROLES = [
  'meta',
  'frames',
  'fenced',
  'once',
  'pending',
  'swap',
  'lru',
  'active',
  'pagecache',
  'ksm',
  'pins',
] as const satisfies ReadonlyArray<keyof typeof MEM>;
export const MEM_KEYS: string[] = MEM_ROLES.map((r) => MEM[r]);

/**
 * The record of one frame in {mem}:frames (the layout above, as data): field → BITFIELD type and
 * byte offset. mem/lua.ts builds the Lua accessors from it and mem/frame.ts the decoder, so the
 * layout is written once.
 */
export const FRAME_FIELDS = {
  gen: { type: 'u32', offset: 0 },
  ref: { type: 'i32', offset: 4 },
  map: { type: 'i32', offset: 8 },
  next: { type: 'u32', offset: 12 },
  prev: { type: 'u32', offset: 16 },
  state: { type: 'u8', offset: 20 },
  flags: { type: 'u8', offset: 21 },
  reserved: { type: 'u16', offset: 22 },
  data: { type: 'i64', offset: 24 },
} as const satisfies Record<string, { type: `${'u' | 'i'}${8 | 16 | 32 | 64}`; offset: number }>;
export type FrameField = keyof typeof FRAME_FIELDS;
/** Bytes per frame record: a 1M-frame machine's table is 32 MiB. */
export const FRAME_BYTES = 32;
/** What {mem}:meta's layout names: memFormat refuses a table formatted with another one. */
export const FRAME_LAYOUT = `frames/${FRAME_BYTES}B/v1`;
/** The state byte of a frame record. */
export const FRAME_STATE = { free: 0, used: 1, zero: 2 } as const;
/** The flags byte of a frame record: bits for reclaim, KSM (PG_ksm: ksm/scripts.ts) and THP. */
export const PAGE_FLAGS = {
  PG_lru: 1 << 0,
  PG_referenced: 1 << 1,
  PG_swapcache: 1 << 2,
  PG_ksm: 1 << 3,
  PG_head: 1 << 4,
  PG_tail: 1 << 5,
} as const;

/**
 * Notifier subscribers ({sub}):
 *   {sub}:live:<name>   liveness lease of a subscriber or of a CPU agent (cpu<N>) (PX ttl,
 *                       renewed by the agent itself, never on the callback or shootdown path;
 *                       LivenessLease). While it lives mm waits for the agent however long it
 *                       takes; once it expired mm fences the agent ({mem}:fenced) and goes on.
 *   {sub}:regs:<name>   set of pids the subscriber is registered on
 */
export const subKeys = (name: string) => ({
  live: `{sub}:live:${name}`,
  regs: `{sub}:regs:${name}`,
});

/**
 * mm replicas ({mm}):
 *   {mm}:live:<incarnation>  liveness lease of one mm process (<instance>.<boot id>: a restarted
 *                            replica is a new incarnation), PX ttl, renewed by its own timer
 *                            (LivenessLease). Once it expired, the open invalidations that
 *                            incarnation owns are finished by another replica (orphan_ranges.ts).
 *   {mm}:invpids:<incarnation> set of the pids on which that incarnation may own open range
 *                            invalidations ({p:<pid>}:invown) or intents: the index the reaper
 *                            reads instead of every process. Added to (invIndex) before the
 *                            incarnation's first invOpen, intentOpen, invClaim or intentClaim on
 *                            the pid, and before its first install of a reserve frame there (once
 *                            per incarnation and pid: Store caches it), never in
 *                            the same script (another slot); a pid is dropped (invUnindex) only
 *                            by the reaper, once the incarnation is dead, fenced off that pid
 *                            ({p:<pid>}:fenced) and owns nothing there. A pid here with nothing
 *                            of the incarnation's (it died between invIndex and invOpen, or
 *                            its records were closed) costs one read of the pid when it dies.
 *   {mm}:dead                set of the incarnations the reaper found dead (mmMarkDead, which
 *                            reads their index in the same script): invIndex refuses them from
 *                            then on, so a dead incarnation that was only stopped can index no
 *                            new pid — the pids it may have installed reserve frames in are
 *                            exactly the ones the reaper read and fenced. One entry per dead
 *                            incarnation, never removed (as :fenced).
 *   {mm}:invowners           set of the incarnations that have an :invpids set (the reaper's
 *                            list of whose leases to check). Invariant: it ∈ :invowners iff
 *                            {mm}:invpids:<it> exists (both written by the same scripts).
 */
export const mmKeys = (incarnation: string) => ({
  live: `{mm}:live:${incarnation}`,
  invpids: `{mm}:invpids:${incarnation}`,
});
export const MM_INDEX = { invowners: '{mm}:invowners', dead: '{mm}:dead' } as const;

/**
 * {mm}:crash:<token>  "<instance>|<epoch ms>": who fired the crash point armed with token, when (SET NX: one
 * replica per token fires; libs/protocol mmCrashPoint), kept a minute for the test to read.
 */
export const crashKey = (token: string): string => `{mm}:crash:${token}`;

/**
 * {g}:kswapd  "<mm incarnation>" PX ttl: the replica whose kswapd reclaims for the zone now
 *             (apps/mm vmscan.ts balancePgdat); renewed at each batch, deleted when it is done.
 */
export const GLOBAL = {
  nextPid: '{g}:nextpid',
  nextCpu: '{g}:nextcpu',
  kswapd: '{g}:kswapd',
} as const;

export const procKeys = (pid: number) => {
  const t = `{p:${pid}}`;
  return {
    mm: `${t}:mm`,
    vma: `${t}:vma`,
    pte: `${t}:pte`,
    pmds: `${t}:pmds`,
    pmdhuge: `${t}:pmdhuge`,
    /** the hugetlb entries (:hugetlb; mm/hugetlb-store.ts hugetlbKey, the hugetlb scripts' huge) */
    hugetlb: `${t}:hugetlb`,
    /** mm->page_table_lock's lease key (the THP scripts' role ptlmm: procKeys().ptl(PAGE_TABLE_LOCK)) */
    ptlmm: `${t}:ptl:mm`,
    ptlmax: `${t}:ptlmax`,
    fence: `${t}:fence`,
    semW: `${t}:sem:w`,
    semR: `${t}:sem:r`,
    cpumask: `${t}:cpumask`,
    mn: `${t}:mn`,
    inv: `${t}:inv`,
    invown: `${t}:invown`,
    fenced: `${t}:fenced`,
    rsv: `${t}:rsv`,
    intents: `${t}:intents`,
    intent: (id: string) => `${t}:intent:${id}`,
    /** try_to_unmap_one's mark of its record rec (the PTE step done): see :unmapped:<rec> */
    unmapped: (rec: string) => `${t}:unmapped:${rec}`,
    /** key of a PT lock: 'mm' for page_table_lock, else the pmd index */
    ptl: (lock: string) => `${t}:${lock}`,
  };
};
export type ProcKeys = ReturnType<typeof procKeys>;

/**
 * PT-lock names, as traced and as the last part of their lease key (procKeys().ptl):
 * ptl:<pmd index> for the split PTE lock of one page-table page (pte_lockptr), ptl:mm for
 * mm->page_table_lock. Every lock name is built here.
 */
export const pteLockName = (pmdIndex: number): string => `ptl:${pmdIndex}`;
export const PAGE_TABLE_LOCK = 'ptl:mm';
/** The split PTE lock covering vpn (a page number). */
export const pteLockOfVpn = (vpn: number): string => pteLockName(pmdIndexOf(vpn));
