/**
 * The wire contract: every NATS request subject, declared once, with its request and reply
 * schemas. Services subscribe with these subjects, callers send with them, and
 * docs/protocol.md is generated from this table (`npm run protocol:doc`).
 *
 * A subject containing `{id}` is per instance (one CPU, one mm replica); use `subjectFor`.
 */
import { z } from 'zod';
import { SubFault } from './chaos';
import {
  Access,
  Addr,
  Agent,
  Dispatch,
  Gen,
  Gfn,
  Ino,
  InjectMode,
  MapFlag,
  MmuLockMode,
  MnCallback,
  Mode,
  Pages,
  Pfn,
  Pid,
  Prot,
  ThpMode,
  Value,
} from './fields';

export interface RpcDef<Req extends z.ZodType = z.ZodType, Res extends z.ZodType = z.ZodType> {
  readonly subject: string;
  readonly doc: string;
  /** Kernel function (or hardware behaviour) the handler models. */
  readonly models: string;
  /** Queue group: one member answers (mm replicas); absent: every subscriber gets it. */
  readonly queue?: string;
  /** Broadcast: every instance answers; callers collect several replies. */
  readonly broadcast?: boolean;
  /**
   * The request acts for an identity (a device's pins, a subscriber's registration): the field
   * of the request naming it. Its subject carries that identity (`mmlab.mm.by.{as}.gup`), and
   * only that identity (and the lab) may publish there (libs/protocol permissions.ts): the
   * server refuses a request whose field names anyone else (EPERM, nothing changed).
   */
  readonly actor?: 'agent' | 'subscriber';
  readonly request: Req;
  readonly response: Res;
}

const def = <Req extends z.ZodType, Res extends z.ZodType>(d: RpcDef<Req, Res>): RpcDef<Req, Res> =>
  d;
const empty = z.strictObject({});

const ms = z.number().int().nonnegative();

/**
 * The configuration one service instance runs with, as it parsed its environment at start-up
 * (libs/runtime EnvSchema). `mmlab run` against a lab it did not start compares a scenario's
 * config with these, since none of them can be changed for one run.
 */
export const ServiceConfig = z.object({
  service: z.string(),
  instance: z.string(),
  /** MMLAB_MODE */
  mode: Mode,
  /** MMLAB_FRAMES */
  frames: z.number().int().positive(),
  /** MMLAB_SWAP_SLOTS (absent: a service older than swap, 0) */
  swapSlots: z.number().int().nonnegative().optional(),
  /** MMLAB_THP, MMLAB_HUGE_PAGE_ORDER, MMLAB_HUGETLB_PAGES (absent: a service older than huge pages) */
  thp: ThpMode.optional(),
  hugePageOrder: z.number().int().optional(),
  hugetlbPages: z.number().int().nonnegative().optional(),
  /** MMLAB_WATERMARK_LOW/HIGH (low 0: no kswapd) */
  watermarks: z.object({ low: z.number().int(), high: z.number().int() }).optional(),
  /** MMLAB_LEASE_TTL_MS */
  leaseTtlMs: ms,
  /** MMLAB_SOFTLOCKUP_MS */
  softlockupMs: ms,
  /** MMLAB_DISPATCH */
  dispatch: Dispatch,
  /** MMLAB_INJECT */
  inject: z.array(InjectMode),
  /** MMLAB_CALLBACK_TIMEOUT_MS */
  callbackTimeoutMs: ms,
  /** MMLAB_SUBSCRIBER_LEASE_MS */
  subscriberLeaseMs: ms,
  /** MMLAB_INVALIDATE_LATENCY (a subscriber's device latency spec) */
  invalidateLatency: z.string(),
  /** MMLAB_NPF_DELAY_MS (hca: npfDelayMs; kvm: faultDelayMs) */
  npfDelayMs: ms,
  /** MMLAB_MMU_LOCK (kvm: how its mmu_lock is held for a range zap) */
  mmuLock: MmuLockMode.optional(),
  /** RLIMIT_MEMLOCK in pages: MMLAB_MEMLOCK_PAGES, else a quarter of the frames */
  memlockPages: ms,
});
export type ServiceConfig = z.infer<typeof ServiceConfig>;

/**
 * how a fault was resolved; swap: do_swap_page read the page in (from the swap cache or its
 * slot); hugetlb: hugetlb_fault found or made the huge entry (hugetlb_no_page, or
 * hugetlb_cow's reuse), hugetlb-cow: hugetlb_cow copied the huge page
 */
export const FaultKind = z.enum([
  'zero',
  'anon',
  'wp-copy',
  'wp-reuse',
  'spurious',
  'swap',
  'file',
  /** do_huge_pmd_anonymous_page: a huge page mapped by one huge entry (pfn: the subpage) */
  'thp',
  /** do_huge_pmd_wp_page: the huge page reused in place (mapped once) */
  'thp-reuse',
  /** do_huge_pmd_wp_page: a new huge page, a copy of the shared one */
  'thp-copy',
  /** do_huge_pmd_wp_page_fallback: no huge page free, the huge entry replaced by small copies */
  'thp-fallback',
  'hugetlb',
  'hugetlb-cow',
]);
export type FaultKind = z.infer<typeof FaultKind>;

/** enum mmu_notifier_event: why a range is invalidated. */
export const MnEvent = z.enum(['unmap', 'clear', 'protection_vma', 'protection_page', 'release']);
export type MnEvent = z.infer<typeof MnEvent>;

/** A subscriber's name: its instance, which is also the {id} of its mmlab.sub.{id}.* subjects. */
export const SubscriberName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);

/**
 * Fields every notifier callback carries. `inv` identifies the invalidation (a retransmission
 * reuses it; an ack must echo it). `owner` is the sending operation as it appears in lock
 * owners ("<mm instance>/<op>"): the subscriber checks in Redis, on receipt, whether that
 * owner still holds a PT lock of the range (it must not: callbacks may sleep).
 */
const callback = {
  pid: Pid,
  inv: z.string().min(1).max(128),
  owner: z.string().min(1).max(200),
};
const Ack = z.object({ inv: z.string() });

/** One page as get_user_pages() / hmm_range_fault() reports it. */
export const GupPage = z.object({ addr: Addr, pfn: Pfn, gen: Gen, writable: z.boolean() });
export type GupPage = z.infer<typeof GupPage>;
export const HcaAccess = z.enum(['read', 'write']);

/**
 * A crash point of mm (apps/mm/src/kernel/crash_point.ts): `<syscall>.<step>` (munmap.zapped)
 * or `<kernel function>.<step>` (do_wp_page.ptl_held).
 */
export const CrashPointName = z
  .string()
  .max(64)
  .regex(/^[a-z_]+\.[a-z_]+$/, { error: 'expected a crash point: <syscall>.<step>' });
/**
 * What a crash point does to the operation that reaches it: kill its replica (SIGKILL), stop it
 * (SIGSTOP), or lose-lease: stop renewing the PT lock it holds and wait for a newer holder.
 */
export const CrashAction = z.enum(['kill', 'stop', 'lose-lease']);
export type CrashAction = z.infer<typeof CrashAction>;

export const RPC = {
  processCreate: def({
    subject: 'mmlab.mm.process.create',
    doc: 'Create an empty address space and return its pid.',
    models: 'mm_alloc() / execve of an empty image',
    queue: 'mm',
    request: empty,
    response: z.object({ pid: Pid }),
  }),
  mmap: def({
    subject: 'mmlab.mm.mmap',
    doc: 'Map anonymous memory, or a file from its page pgoff (file: its ino), private (the default, or flags: [private]) or shared (flags: [shared]); return the start address.',
    models: 'do_mmap_pgoff(), mm/mmap.c v3.7',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      pages: Pages,
      prot: Prot,
      flags: z.array(MapFlag).default([]),
      file: Ino.optional(),
      pgoff: z
        .number()
        .int()
        .nonnegative()
        .max(2 ** 32)
        .default(0),
    }),
    response: z.object({ addr: Addr }),
  }),
  munmap: def({
    subject: 'mmlab.mm.munmap',
    doc: 'Unmap [addr, addr + pages): zap the PTEs, shoot down CPU TLBs, free the frames, drop the VMAs.',
    models: 'do_munmap() → unmap_region() → zap_page_range()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages }),
    response: z.object({
      zapped: z.number().int().nonnegative(),
      freed: z.number().int().nonnegative(),
    }),
  }),
  fault: def({
    subject: 'mmlab.mm.fault',
    doc: 'Resolve a page fault at addr for a read or write by agent; replies with the PTE now installed.',
    models: 'handle_mm_fault() → do_anonymous_page() / do_wp_page()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, access: Access, agent: Agent }),
    response: z.object({
      pfn: Pfn,
      gen: Gen,
      writable: z.boolean(),
      kind: FaultKind,
      retries: z.number().int().nonnegative(),
    }),
  }),
  fork: def({
    subject: 'mmlab.mm.fork',
    doc: 'Fork: a child address space sharing every anonymous frame; private writable pages become copy-on-write in both.',
    models: 'dup_mm() → dup_mmap() → copy_page_range()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid }),
    response: z.object({ pid: Pid }),
  }),
  mprotect: def({
    subject: 'mmlab.mm.mprotect',
    doc: 'Change the protection of [addr, addr + pages); a downgrade write-protects or hides the PTEs.',
    models: 'mprotect_fixup() → change_protection()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages, prot: Prot }),
    response: z.object({ changed: z.number().int().nonnegative() }),
  }),
  mremap: def({
    subject: 'mmlab.mm.mremap',
    doc: 'Move [addr, addr + pages) to a new place (MREMAP_MAYMOVE), growing or shrinking it to newPages; returns the new address.',
    models: 'mremap() → move_vma() → move_page_tables()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages, newPages: Pages.optional() }),
    response: z.object({ addr: Addr, moved: z.number().int().nonnegative() }),
  }),
  madvise: def({
    subject: 'mmlab.mm.madvise',
    doc: 'MADV_DONTNEED: drop the pages of the range (the next touch sees zero); the VMA stays.',
    models: 'madvise_dontneed_single_vma() → zap_page_range()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages, advice: z.enum(['dontneed']) }),
    response: z.object({
      zapped: z.number().int().nonnegative(),
      freed: z.number().int().nonnegative(),
    }),
  }),
  exit: def({
    subject: 'mmlab.mm.exit',
    doc: 'The process exits, taking no mmap_sem (the last mm_users reference is gone): it is marked exiting first (every later fault, syscall or gup on it fails with ESRCH, and an operation still running on it is not waited for), then every notifier subscriber gets release, then every page is unmapped and freed. An exit that failed half way may be run again.',
    models: 'exit_mmap(): mmu_notifier_release() then unmap_vmas() / free_pgtables()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid }),
    response: z.object({ freed: z.number().int().nonnegative() }),
  }),
  gup: def({
    subject: 'mmlab.mm.by.{as}.gup',
    actor: 'agent',
    doc: "Fault in and look up [addr, addr + pages) for a device: with pin (a pinned registration), all of it under mmap_sem for write (other faults and syscalls of the process wait), the pages are first charged to the process's pinned_vm against its locked-memory limit (MMLAB_MEMLOCK_PAGES; ENOMEM before any page is touched when they do not fit), then each frame gets a reference that only unpin drops; without pin nothing is held (ODP). EFAULT for every page the mapping refuses (unmapped, PROT_NONE, read-only for a write).",
    models:
      'ib_umem_get() → get_user_pages(write=1, force=!writable) (v3.7 / 3.19); get_user_pages() for ODP faults',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      addr: Addr,
      pages: Pages,
      write: z.boolean(),
      force: z
        .boolean()
        .optional()
        .describe('FOLL_FORCE: with write, a read-only mapping does not refuse the page'),
      pin: z.boolean(),
      agent: SubscriberName.describe(
        'the device (its instance) the pages are for: the identity the request is sent as',
      ),
    }),
    response: z.object({ pages: z.array(GupPage) }),
  }),
  unpin: def({
    subject: 'mmlab.mm.by.{as}.unpin',
    actor: 'agent',
    doc: "Drop the references gup took with pin, all or nothing (EINVAL, nothing changed, when a page is not a frame in use with that gen), and give the pages back to pid's pinned_vm.",
    models: 'ib_umem_release(): put_page() of each page, mm->pinned_vm -= npages',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      pages: z.array(z.object({ pfn: Pfn, gen: Gen })).max(1 << 20),
      agent: SubscriberName.describe(
        'the device (its instance) the pages are for: the identity the request is sent as',
      ),
    }),
    response: z.object({ freed: z.number().int().nonnegative() }),
  }),
  notifierRegister: def({
    subject: 'mmlab.mm.by.{as}.notifier.register',
    actor: 'subscriber',
    doc: 'Register subscriber on pid: from the reply on it gets every callback for pid. Atomic with respect to invalidations in flight.',
    models: 'mmu_notifier_register()',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      subscriber: SubscriberName,
      ops: z
        .array(MnCallback)
        .min(1)
        .default([...MnCallback.options])
        .describe(
          'the callbacks the subscriber implements (its mmu_notifier_ops; default all): a callback it lacks is not sent to it, and a change_pte becomes invalidate_page for it in legacy (v3.6) mode',
        ),
    }),
    response: z.object({ registered: z.boolean() }),
  }),
  notifierUnregister: def({
    subject: 'mmlab.mm.by.{as}.notifier.unregister',
    actor: 'subscriber',
    doc: 'Unregister subscriber from pid; release is called first if the mm is still live. No callback runs after the reply.',
    models: 'mmu_notifier_unregister()',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, subscriber: SubscriberName }),
    response: z.object({ unregistered: z.boolean() }),
  }),
  meminfo: def({
    subject: 'mmlab.mm.meminfo',
    doc: "Frame accounting (total, free and allocated frames), and the PT-lock and mmap_sem leases held right now, read from Redis (a run ends with none). The mm replicas' batches of frames taken ahead for write faults are given back first (drain_all_pages), so free counts every frame nothing maps.",
    models: '/proc/meminfo (and /proc/lock_stat for the locks)',
    queue: 'mm',
    request: empty,
    response: z.object({
      frames: z.number().int(),
      free: z.number().int(),
      allocated: z.number().int(),
      locks: z.array(
        z.object({
          lock: z.string().describe("'ptl:<pmd index>', 'ptl:mm' (page_table_lock) or 'mmap_sem'"),
          pid: Pid,
          owner: z.string().describe('holder: <mm instance>/<op>'),
          token: z.number().int().describe('fencing token of the hold'),
          ttlMs: z.number().int().nonnegative().describe('what is left of the lease'),
        }),
      ),
    }),
  }),
  reclaim: def({
    subject: 'mmlab.mm.reclaim',
    doc: 'One synchronous reclaim pass, whatever the watermarks: frees up to `pages` anonymous frames by writing them to swap slots (try_to_unmap_one on every PTE that maps each, invalidate_page to the secondary MMUs, pageout, __remove_mapping). A pinned page is unmapped and written out but stays in the swap cache. Without swap (swapSlots 0) nothing can be reclaimed.',
    models: 'try_to_free_pages() → shrink_page_list(), mm/vmscan.c v3.7',
    queue: 'mm',
    request: z.strictObject({
      pages: z
        .number()
        .int()
        .positive()
        .max(1 << 20),
    }),
    response: z.object({
      scanned: z.number().int(),
      reclaimed: z.number().int(),
      referenced: z.number().int(),
      pinned: z.number().int(),
      swapFull: z.boolean(),
    }),
  }),
  ksmMerge: def({
    subject: 'mmlab.mm.ksm.merge',
    doc: "One synchronous ksmd pass over the given ranges (each a process, a start address and a length): anonymous pages of equal content (the frame's one data word) are merged into one KSM page (PG_ksm, a stable-tree entry), mapped read-only everywhere — write_protect_page and replace_page, each with set_pte_at_notify (change_pte) under the PT lock, inside invalidate_range_start/end in v3.7. A page with references beyond its mappings (a pin) is refused. Also merges into a KSM page of an earlier pass. A replica dying mid-merge leaves every page merged or not (replace_page's get_page of the KSM page is recorded, and finished by a surviving replica); the caller is told EOWNERDEAD or times out.",
    models: 'ksm_do_scan() → cmp_and_merge_page(), mm/ksm.c v3.7 (v3.6 in legacy)',
    queue: 'mm',
    request: z.strictObject({
      ranges: z
        .array(z.strictObject({ pid: Pid, addr: Addr, pages: Pages }))
        .min(1)
        .max(64),
    }),
    response: z.object({
      /** pages looked at (present anonymous PTEs) */
      scanned: z.number().int().nonnegative(),
      /** PTEs now mapping a KSM page that did not before (the first of a pair counted too) */
      merged: z.number().int().nonnegative(),
      /** KSM pages made by this pass (stable_tree_insert) */
      stable: z.number().int().nonnegative(),
      /** pages refused, with why (write_protect_page: pinned; the PTE changed: gone) */
      refused: z.array(z.object({ pid: Pid, addr: Addr, reason: z.string() })),
    }),
  }),
  fileCreate: def({
    subject: 'mmlab.mm.file.create',
    doc: 'Create a file of `pages` pages, all holes (read as 0), with a page cache; xip: an XIP file (no page cache: mapped and written in place).',
    models: 'vfs_create() of a regular file, with its address_space',
    queue: 'mm',
    request: z.strictObject({
      pages: z
        .number()
        .int()
        .positive()
        .max(1 << 20),
      xip: z.boolean().default(false),
    }),
    response: z.object({ ino: Ino }),
  }),
  fileWrite: def({
    subject: 'mmlab.mm.file.write',
    doc: 'write() of one word to page `page` of a file, through its page cache (the page is read in when not cached, and becomes dirty): every mapping of the page sees it at once. An XIP file is written in place (__xip_file_write): a hole gets its block first, and __xip_unmap takes the sparse page away from every mapping of the page (invalidate_page to the secondary MMUs: after the PT lock in v3.7, under it in v3.6). Files do not grow: a page past the end is EINVAL.',
    models: 'generic_perform_write(), mm/filemap.c v3.7',
    queue: 'mm',
    request: z.strictObject({ ino: Ino, page: z.number().int().nonnegative(), value: Value }),
    response: z.object({ pfn: Pfn, gen: Gen, cached: z.boolean() }),
  }),
  fileRead: def({
    subject: 'mmlab.mm.file.read',
    doc: 'read() of page `page` of a file, through its page cache (read in from the backing store when not cached); an XIP file in place (a hole reads 0, with pfn 0 and gen 0, and allocates nothing).',
    models: 'do_generic_file_read(), mm/filemap.c v3.7',
    queue: 'mm',
    request: z.strictObject({ ino: Ino, page: z.number().int().nonnegative() }),
    response: z.object({ value: Value, pfn: Pfn, gen: Gen, cached: z.boolean() }),
  }),
  msync: def({
    subject: 'mmlab.mm.msync',
    doc: "msync(MS_SYNC) of [addr, addr + pages) of a process: for every page of a shared file mapping there that is cached, page_mkclean write-protects each PTE mapping it (invalidate_page to the secondary MMUs: after the PT lock in v3.7, under it in v3.6) and a dirty page is written back to the file's store. Pages of private or anonymous mappings have nothing to write.",
    models:
      'sys_msync() → vfs_fsync_range() → write_cache_pages() → clear_page_dirty_for_io() → page_mkclean(), v3.7',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr, pages: Pages }),
    response: z.object({
      /** pages of shared file mappings in the range that were cached */
      cached: z.number().int().nonnegative(),
      /** PTEs page_mkclean write-protected */
      cleaned: z.number().int().nonnegative(),
      /** pages written back */
      written: z.number().int().nonnegative(),
    }),
  }),
  thpSplit: def({
    subject: 'mmlab.mm.thp.split',
    doc: 'split_huge_page() of the transparent huge page mapped at addr of a process: in every address space mapping it, the huge entry becomes 2^order PTEs (range start/end over the whole huge range: outside page_table_lock in v3.7, under it in v3.6), then the compound page becomes small pages. EINVAL when no huge page is mapped at addr.',
    models: 'split_huge_page() → __split_huge_page_splitting(), mm/huge_memory.c v3.7',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr }),
    response: z.object({
      /** the huge page's head */
      pfn: Pfn,
      gen: Gen,
      /** huge entries split (address spaces mapping it) */
      split: z.number().int().nonnegative(),
    }),
  }),
  thpCollapse: def({
    subject: 'mmlab.mm.thp.collapse',
    doc: 'collapse_huge_page() (one khugepaged pass) of the 2^order-aligned range around addr of a process: under mmap_sem for write, its small anonymous pages (every PTE present, none shared) are copied into a new huge page that replaces them with one huge entry (range start/end around the clear: outside page_table_lock in v3.7, under it in v3.6); the small pages are freed. EINVAL when the range is not collapsible (not in one anonymous private VMA, a PTE missing, shared or swapped, or already huge) or THP is off; ENOMEM when no huge page is free.',
    models: 'khugepaged → collapse_huge_page(), mm/huge_memory.c v3.7',
    queue: 'mm',
    request: z.strictObject({ pid: Pid, addr: Addr }),
    response: z.object({ pfn: Pfn, gen: Gen }),
  }),
  remapFilePages: def({
    subject: 'mmlab.mm.remap_file_pages',
    doc: "remap_file_pages(): map file page `pgoff` onward at [addr, addr + pages) of a shared mapping of a file. A shmem object (MAP_SHARED|MAP_ANONYMOUS) becomes a nonlinear mapping (VM_NONLINEAR: file PTEs inside invalidate_range_start/end, then the pages are faulted in); a file with dirty accounting gets a linear VMA of its own instead (the kernel's mmap_region emulation: page_mkclean cannot see nonlinear mappings).",
    models: 'sys_remap_file_pages(), mm/fremap.c v3.7',
    queue: 'mm',
    request: z.strictObject({
      pid: Pid,
      addr: Addr,
      pages: Pages,
      pgoff: z
        .number()
        .int()
        .nonnegative()
        .max(2 ** 31),
    }),
    response: z.object({
      nonlinear: z.boolean(),
      /** PTEs installed (file PTEs), or zapped by the linear emulation */
      ptes: z.number().int().nonnegative(),
    }),
  }),
  swapinfo: def({
    subject: 'mmlab.mm.swapinfo',
    doc: 'The swap device and the anonymous LRU lists: slots, free slots, pages in the swap cache, frames on the inactive and the active list.',
    models: '/proc/swaps and the LRU lines of /proc/meminfo',
    queue: 'mm',
    request: empty,
    response: z.object({
      slots: z.number().int(),
      free: z.number().int(),
      cached: z.number().int(),
      inactive: z.number().int(),
      active: z.number().int(),
    }),
  }),
  mmDebug: def({
    subject: 'mmlab.mm.{id}.debug',
    doc: 'Arm a stall on one mm replica: its next PT-lock-holding operation sleeps ms while holding the lock (to kill or pause it there).',
    models: 'a debugger breakpoint inside a spin_lock() section',
    request: z.strictObject({ stallUnderPtlMs: z.number().int().nonnegative().max(600_000) }),
    response: z.object({ armed: z.boolean() }),
  }),
  mmCrashPoint: def({
    subject: 'mmlab.mm.{id}.crash_point',
    doc: 'Arm a crash point on one mm replica: the first operation of the lab to reach `point` (`<syscall>.<step>`, e.g. `munmap.vma_unmapped`, or `<kernel function>.<step>`, e.g. `do_wp_page.ptl_held`) on an armed replica kills that replica there (SIGKILL) or stops it (SIGSTOP); `lose-lease`, at a point that holds a PT lock, stops only that operation: it stops renewing the lease of the lock and waits there until another holder has been granted the lock (a newer fencing token) and released it, then goes on with its stale token (a holder paused past its TTL, while its replica keeps serving). Arm several replicas with the same `token`: only one of them fires (a Redis SET NX on the token), so the replica that finishes the operation does not die at the same point. An empty point disarms.',
    models: 'a fault-injection point (the kernel has none here: a CPU cannot die mid-munmap)',
    request: z.strictObject({
      point: CrashPointName.or(z.literal('')),
      token: z.string().min(1).max(64),
      action: CrashAction.default('kill'),
    }),
    response: z.object({ armed: z.boolean() }),
  }),
  mmDrainPages: def({
    subject: 'mmlab.mm.{id}.drain_pages',
    doc: "Give one mm replica's batch of frames back to the free list (the frames it took ahead for write faults: keys.ts {mem}:pending reserve tags), if it still runs as `incarnation` (else it answers false and does nothing). A replica whose write fault found memory empty asks it of every replica that holds a batch before it answers ENOMEM, and meminfo before it counts.",
    models:
      'drain_all_pages() (an IPI to every CPU, each running drain_local_pages()), mm/page_alloc.c v3.7',
    request: z.strictObject({ incarnation: z.string().min(1).max(128) }),
    response: z.object({ drained: z.boolean() }),
  }),
  cpuAccess: def({
    subject: 'mmlab.cpu.{id}.access',
    doc: 'A load or store by one CPU: TLB lookup, page walk on a miss, fault to mm and retry, then the frame access.',
    models: 'a user-mode load/store through the MMU',
    request: z.strictObject({ pid: Pid, addr: Addr, op: Access, value: Value.optional() }),
    response: z.object({
      value: Value,
      pfn: Pfn,
      gen: Gen,
      faults: z.number().int().nonnegative(),
      tlbHit: z.boolean(),
      stale: z.boolean(),
    }),
  }),
  cpuFlushTlb: def({
    subject: 'mmlab.cpu.{id}.flush_tlb',
    doc: "Shoot down this CPU's TLB entries of pid in [start, end), after in-flight accesses through them complete.",
    models: 'flush_tlb_mm_range() IPI → flush_tlb_func()',
    request: z.strictObject({
      pid: Pid,
      start: Addr,
      end: Addr,
      op: z.string().max(128).optional(),
    }),
    response: z.object({ flushed: z.number().int().nonnegative() }),
  }),
  mnInvalidateRangeStart: def({
    subject: 'mmlab.sub.{id}.invalidate_range_start',
    doc: 'Stop using [start, end) of pid and install nothing there until the matching end; ack when the device no longer uses it (may sleep).',
    models: 'mmu_notifier_ops.invalidate_range_start',
    request: z.strictObject({ ...callback, start: Addr, end: Addr, event: MnEvent }),
    response: Ack,
  }),
  mnInvalidateRangeEnd: def({
    subject: 'mmlab.sub.{id}.invalidate_range_end',
    doc: 'The invalidation of [start, end) with the same inv is over: mappings may be installed again.',
    models: 'mmu_notifier_ops.invalidate_range_end',
    request: z.strictObject({ ...callback, start: Addr, end: Addr, event: MnEvent }),
    response: Ack,
  }),
  mnInvalidatePage: def({
    subject: 'mmlab.sub.{id}.invalidate_page',
    doc: 'The PTE of addr changed (patched: after the PT lock is dropped, before the old page is freed; legacy v3.6: under it, as the change_pte of a subscriber without one): drop the mapping of that page.',
    models: 'mmu_notifier_ops.invalidate_page (2012)',
    request: z.strictObject({ ...callback, addr: Addr }),
    response: Ack,
  }),
  mnChangePte: def({
    subject: 'mmlab.sub.{id}.change_pte',
    doc: 'The PTE of addr now points at pfn/gen, writable or not (set_pte_at_notify: COW gives a writable PTE, KSM a read-only one): update or drop the secondary mapping. Sent under the PT lock: answer without sleeping.',
    models: 'mmu_notifier_ops.change_pte',
    request: z.strictObject({
      ...callback,
      addr: Addr,
      pfn: Pfn,
      gen: Gen,
      /** pte_write() of the new PTE: KVM drops its sPTE when it is (kvm_set_pte_rmapp, v3.7) */
      writable: z.boolean(),
    }),
    response: Ack,
  }),
  mnClearFlushYoung: def({
    subject: 'mmlab.sub.{id}.clear_flush_young',
    doc: 'Test and clear the accessed bits of [start, end) in the secondary MMU.',
    models: 'mmu_notifier_ops.clear_flush_young',
    request: z.strictObject({ ...callback, start: Addr, end: Addr }),
    response: z.object({ inv: z.string(), young: z.boolean() }),
  }),
  mnTestYoung: def({
    subject: 'mmlab.sub.{id}.test_young',
    doc: 'Whether the secondary MMU accessed addr since the bit was last cleared.',
    models: 'mmu_notifier_ops.test_young',
    request: z.strictObject({ ...callback, addr: Addr }),
    response: z.object({ inv: z.string(), young: z.boolean() }),
  }),
  mnRelease: def({
    subject: 'mmlab.sub.{id}.release',
    doc: 'The address space is going away: drop every mapping of pid; nothing more will be sent for it.',
    models: 'mmu_notifier_ops.release',
    request: z.strictObject(callback),
    response: Ack,
  }),
  hcaRegMr: def({
    subject: 'mmlab.hca.{id}.reg_mr',
    doc: 'Register a memory region over [addr, addr + pages) of pid: ODP (nothing pinned, the device table fills on demand) or pinned (every page faulted in and pinned now; ENOMEM when it does not fit).',
    models: 'ibv_reg_mr() → ib_umem_odp_get() / ib_umem_get()',
    request: z.strictObject({
      pid: Pid,
      addr: Addr,
      pages: Pages,
      odp: z.boolean(),
      access: z.array(HcaAccess).min(1),
    }),
    response: z.object({ mr: z.number().int().positive() }),
  }),
  hcaDeregMr: def({
    subject: 'mmlab.hca.{id}.dereg_mr',
    doc: 'Deregister a memory region: its device mappings are dropped and its pins released.',
    models: 'ibv_dereg_mr()',
    request: z.strictObject({ mr: z.number().int().positive() }),
    response: z.object({ dereg: z.boolean() }),
  }),
  hcaRdmaWrite: def({
    subject: 'mmlab.hca.{id}.rdma_write',
    doc: 'An RDMA WRITE into the MR at addr (a page of it); a miss in the device table raises a network page fault first.',
    models:
      'an RDMA WRITE hitting the HCA, with ODP page-fault handling (mlx5_ib_mr_wqe_pfault_handler)',
    request: z.strictObject({ mr: z.number().int().positive(), addr: Addr, value: Value }),
    response: z.object({
      pfn: Pfn,
      gen: Gen,
      npf: z.number().int().nonnegative(),
      stale: z.boolean(),
    }),
  }),
  hcaRdmaRead: def({
    subject: 'mmlab.hca.{id}.rdma_read',
    doc: 'An RDMA READ from the MR at addr.',
    models: 'an RDMA READ hitting the HCA',
    request: z.strictObject({ mr: z.number().int().positive(), addr: Addr }),
    response: z.object({
      value: Value,
      pfn: Pfn,
      gen: Gen,
      npf: z.number().int().nonnegative(),
      stale: z.boolean(),
    }),
  }),
  hcaPrefetch: def({
    subject: 'mmlab.hca.{id}.prefetch',
    doc: 'Map [addr, addr + pages) of the MR ahead of use (read, or write).',
    models: 'ibv_advise_mr(IBV_ADVISE_MR_ADVICE_PREFETCH[_WRITE], FLUSH)',
    request: z.strictObject({
      mr: z.number().int().positive(),
      addr: Addr,
      pages: Pages,
      write: z.boolean().default(false),
    }),
    response: z.object({ mapped: z.number().int().nonnegative() }),
  }),
  kvmCreateVm: def({
    subject: 'mmlab.kvm.{id}.create_vm',
    doc: "Create a VM on pid (the VMM's address space) with its memslots (guest frames [gfn, gfn + pages) backed by the host range [addr, addr + pages)) and vcpus vCPUs; the instance registers as pid's notifier subscriber with its first VM there. EINVAL (nothing created) for overlapping or unaligned slots.",
    models:
      'KVM_CREATE_VM → kvm_create_vm() (mmu_notifier_register), KVM_SET_USER_MEMORY_REGION → kvm_set_memory_region(), KVM_CREATE_VCPU (v3.7)',
    request: z.strictObject({
      pid: Pid,
      memslots: z
        .array(z.strictObject({ gfn: Gfn, pages: Pages, addr: Addr }))
        .min(1)
        .max(32),
      vcpus: z.number().int().positive().max(64),
    }),
    response: z.object({ vm: z.number().int().positive() }),
  }),
  kvmDestroyVm: def({
    subject: 'mmlab.kvm.{id}.destroy_vm',
    doc: "Destroy a VM: its sPTEs are zapped and its vCPUs' TLBs flushed; the last VM of a process unregisters the instance's notifier there. An unknown VM: {destroyed: false}.",
    models: 'kvm_destroy_vm() → mmu_notifier_unregister(), kvm_arch_flush_shadow_all() (v3.7)',
    request: z.strictObject({ vm: z.number().int().positive() }),
    response: z.object({ destroyed: z.boolean() }),
  }),
  kvmGuestWrite: def({
    subject: 'mmlab.kvm.{id}.guest_write',
    doc: "A guest store by one vCPU to guest frame gfn: the vCPU's TLB, then the VM's sPTE table; a miss (or a write through a read-only sPTE) takes a guest fault (tdp_page_fault: the host page through mm, then mmu_notifier_retry under mmu_lock) and retries. EFAULT when the host mapping refuses it (unmapped, PROT_NONE, read-only) or gfn is in no memslot.",
    models:
      'a guest store through EPT/NPT: vcpu_enter_guest → tdp_page_fault() on an EPT violation (v3.7)',
    request: z.strictObject({
      vm: z.number().int().positive(),
      vcpu: z.number().int().nonnegative(),
      gfn: Gfn,
      value: Value,
    }),
    response: z.object({
      pfn: Pfn,
      gen: Gen,
      faults: z.number().int().nonnegative(),
      tlbHit: z.boolean(),
      stale: z.boolean(),
    }),
  }),
  kvmGuestRead: def({
    subject: 'mmlab.kvm.{id}.guest_read',
    doc: 'A guest load by one vCPU from guest frame gfn (as guest_write; a read fault maps the host page read-only unless the host PTE is already writable).',
    models: 'a guest load through EPT/NPT: tdp_page_fault() on an EPT violation (v3.7)',
    request: z.strictObject({
      vm: z.number().int().positive(),
      vcpu: z.number().int().nonnegative(),
      gfn: Gfn,
    }),
    response: z.object({
      value: Value,
      pfn: Pfn,
      gen: Gen,
      faults: z.number().int().nonnegative(),
      tlbHit: z.boolean(),
      stale: z.boolean(),
    }),
  }),
  devAttach: def({
    subject: 'mmlab.dev.{id}.attach',
    doc: "Attach a bring-your-own device (libs/subscriber Device) to pid: it registers as pid's notifier subscriber (mmu_notifier_register through mm, as itself). Its translation cache of pid starts empty. Attaching twice is a no-op ({attached: false}).",
    models: 'a driver binding a process context: mmu_notifier_register() (mm/mmu_notifier.c, v3.7)',
    request: z.strictObject({ pid: Pid }),
    response: z.object({ attached: z.boolean() }),
  }),
  devAccess: def({
    subject: 'mmlab.dev.{id}.access',
    doc: "A device load or store at addr (a page-aligned address) of an attached pid through the device's translation cache: a miss (or a store through a read-only entry) faults the page in through mm's gup with the read_begin/read_retry recheck, then the frame is accessed directly (ENODEV once mm fenced the device). EINVAL: pid not attached, addr not page aligned, a write without a value; EFAULT: mm refuses the page.",
    models:
      'a DMA through a device page-table cache (an IOMMU/GPU TLB), hmm_range_fault() on a miss',
    request: z.strictObject({ pid: Pid, addr: Addr, op: Access, value: Value.optional() }),
    response: z.object({
      value: Value,
      pfn: Pfn,
      gen: Gen,
      /** page faults taken through mm (gup) before the access */
      faults: z.number().int().nonnegative(),
      /** the translation cache had the entry */
      hit: z.boolean(),
      /** the entry's gen was stale (a use-after-free: reported, and the access still lands) */
      stale: z.boolean(),
    }),
  }),
  devDetach: def({
    subject: 'mmlab.dev.{id}.detach',
    doc: 'Detach the device from pid: its cache of pid is dropped and it unregisters (mm sends release first). Not attached: {detached: false}.',
    models: 'mmu_notifier_unregister() (mm/mmu_notifier.c, v3.7)',
    request: z.strictObject({ pid: Pid }),
    response: z.object({ detached: z.boolean() }),
  }),
  subChaos: def({
    subject: 'mmlab.sub.{id}.chaos',
    doc: "Set a subscriber's callback-level faults (the whole list: [] heals them all); hung callbacks go on once their fault is gone. Answers with the faults now active.",
    models: '(lab nemesis) a misbehaving device driver or KVM vCPU thread',
    request: z.strictObject({ faults: z.array(SubFault).max(16) }),
    response: z.object({ active: z.array(SubFault) }),
  }),
  ping: def({
    subject: 'mmlab.ctl.ping',
    doc: 'Every service instance answers with its name: readiness and liveness.',
    models: '(lab control)',
    broadcast: true,
    request: empty,
    response: z.object({ service: z.string(), instance: z.string() }),
  }),
  config: def({
    subject: 'mmlab.ctl.config',
    doc: 'Every service instance answers with the configuration it runs with (its parsed environment): what a scenario is compared with before it runs on a lab it did not start.',
    models: '(lab control)',
    broadcast: true,
    request: empty,
    response: ServiceConfig,
  }),
  flush: def({
    subject: 'mmlab.ctl.flush',
    doc: 'Every instance flushes the trace events it published to the NATS server, then answers.',
    models: '(lab control)',
    broadcast: true,
    request: empty,
    response: z.object({
      service: z.string(),
      instance: z.string(),
      published: z.number().int(),
      replays: z
        .object({ asked: z.number().int(), run: z.number().int() })
        .optional()
        .describe(
          'trace_replay requests received, and the replays they caused (at most one a second)',
        ),
    }),
  }),
  observerSync: def({
    subject: 'mmlab.observer.sync',
    doc: 'The observer answers once every event delivered to it before this request has been stored.',
    models: '(lab control)',
    request: empty,
    response: z.object({ events: z.number().int().nonnegative() }),
  }),
} as const;

export type RpcName = keyof typeof RPC;
export type Req<N extends RpcName> = z.input<(typeof RPC)[N]['request']>;
export type ReqParsed<N extends RpcName> = z.output<(typeof RPC)[N]['request']>;
export type Res<N extends RpcName> = z.output<(typeof RPC)[N]['response']>;

const TOKEN = /^[A-Za-z0-9_-]+$/;

/**
 * The concrete subject of a per-instance RPC (`mmlab.cpu.{id}.access` → `mmlab.cpu.0.access`),
 * and of one that acts for an identity (`mmlab.mm.by.{as}.gup` → `mmlab.mm.by.hca0.gup`). '*'
 * for either: the wildcard a server subscribes to, or a permission names.
 */
export function subjectFor(d: RpcDef, id?: string | number, as?: string): string {
  let s = d.subject;
  if (s.includes('{id}')) {
    if (id === undefined || (id !== '*' && !TOKEN.test(String(id))))
      throw new Error(`subject ${d.subject} needs an instance id, got ${String(id)}`);
    s = s.replace('{id}', String(id));
  }
  if (s.includes('{as}')) {
    if (as === undefined || (as !== '*' && !TOKEN.test(as)))
      throw new Error(`subject ${d.subject} needs the identity it acts for, got ${String(as)}`);
    s = s.replace('{as}', as);
  }
  return s;
}

/** The identity a request acts for (its actor field), when its RPC has one. */
export function actorOf(d: RpcDef, req: unknown): string | undefined {
  if (!d.actor || typeof req !== 'object' || req === null) return undefined;
  const v = (req as Record<string, unknown>)[d.actor];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The identity a concrete subject of an actor RPC names (`mmlab.mm.by.hca0.gup` → hca0), or
 * undefined when the subject is not one of d's.
 */
export function actorOfSubject(d: RpcDef, subject: string): string | undefined {
  const [pre, post] = d.subject.split('{as}');
  if (post === undefined || !subject.startsWith(pre) || !subject.endsWith(post)) return undefined;
  const as = subject.slice(pre.length, subject.length - post.length);
  return TOKEN.test(as) ? as : undefined;
}

/** Every RPC, in declaration order (for the malformed-message sweep and the reference doc). */
export const ALL_RPCS: ReadonlyArray<[RpcName, RpcDef]> = Object.entries(RPC) as Array<
  [RpcName, RpcDef]
>;
