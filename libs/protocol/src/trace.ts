/**
 * Trace events: the lab's printk/lockdep. Every service publishes them, fire-and-forget, on
 * `mmlab.trace.<service>.<instance>`; the observer stores them and runs the invariant checker.
 *
 * Times are milliseconds since the epoch with microsecond fraction (`now()`, libs/runtime
 * clock.ts: the machine's monotonic clock plus an offset to the wall clock each process measures
 * once). Services on one machine share a clock; across machines the checker's time-based rules
 * are as good as NTP.
 */
import { z } from 'zod';
import { ERROR_CODES } from './errors';
import {
  Access,
  Addr,
  Agent,
  Gen,
  Gfn,
  Ino,
  MapFlag,
  MmuLockMode,
  MnCallback,
  OpId,
  Pfn,
  Pid,
  Prot,
  Token,
  Value,
  VmId,
} from './fields';
import { CrashAction, CrashPointName, FaultKind, MnEvent } from './rpc';
import { SubFaultKind } from './chaos';

export const TRACE_PREFIX = 'mmlab.trace';
export const TRACE_WILDCARD = `${TRACE_PREFIX}.>`;
/**
 * A request to every tracer to publish its recent events again (the observer sends it when it
 * is connected again after losing NATS): core NATS drops what is published while a client or
 * the server is away, so each tracer keeps its recent events and the observer dedups by id.
 */
export const TRACE_REPLAY_SUBJECT = 'mmlab.ctl.trace_replay';
export const traceSubject = (service: string, instance: string): string =>
  `${TRACE_PREFIX}.${service}.${instance}`;

export const Service = z.enum(['mm', 'cpu', 'observer', 'lab', 'kvm', 'hca', 'dev']);

export type Service = z.infer<typeof Service>;

const base = {
  /** instance-unique: `<instance>:<seq>` */
  id: z.string(),
  ts: z.number().describe('ms since epoch'),
  service: Service,
  instance: z.string(),
  op: OpId.optional().describe('operation that emitted it (a fault, a munmap, ...)'),
};

/** Lock names: `ptl:<pmd index>` (split PTE lock, pte_lockptr) or `ptl:mm` (mm->page_table_lock). */
export const LockName = z.string().regex(/^ptl:(mm|\d+)$/);

const ev = <K extends string, S extends z.ZodRawShape>(kind: K, shape: S) =>
  z.object({ ...base, kind: z.literal(kind), ...shape });

export const TraceEvent = z.discriminatedUnion('kind', [
  ev('process.create', { pid: Pid }),
  ev('vma.map', {
    pid: Pid,
    start: Addr,
    end: Addr,
    prot: Prot,
    flags: z.array(MapFlag),
    /** a mapping of a file: its ino and the file page at start (vm_pgoff) */
    file: Ino.optional(),
    pgoff: z.number().int().nonnegative().optional(),
  }),
  ev('vma.unmap', { pid: Pid, start: Addr, end: Addr }),
  /**
   * remap_file_pages(): [start, end) now maps the file's pages from pgoff on — nonlinear (file
   * PTEs in a VM_NONLINEAR VMA) or as a linear VMA of its own (the mmap_region emulation)
   */
  ev('vma.remap', {
    pid: Pid,
    start: Addr,
    end: Addr,
    pgoff: z.number().int().nonnegative(),
    nonlinear: z.boolean(),
  }),
  ev('fault.begin', { pid: Pid, addr: Addr, access: Access, agent: Agent }),
  ev('fault.end', {
    pid: Pid,
    addr: Addr,
    access: Access,
    agent: Agent,
    result: z.union([z.literal('ok'), z.enum(ERROR_CODES)]),
    /** how it was resolved (the fault type); absent on failure */
    how: FaultKind.optional(),
    pfn: Pfn.optional(),
    gen: Gen.optional(),
    durMs: z.number(),
    retries: z.number().int(),
  }),
  ev('ptl.acquire', {
    pid: Pid,
    lock: LockName,
    owner: z.string(),
    token: Token,
    waitMs: z.number(),
  }),
  ev('ptl.release', {
    pid: Pid,
    lock: LockName,
    owner: z.string(),
    token: Token,
    heldMs: z.number(),
    /** false: the lease was already gone (expired, or taken by a newer token) */
    released: z.boolean(),
  }),
  ev('mmap_sem.acquire', {
    pid: Pid,
    mode: z.enum(['read', 'write']),
    owner: z.string(),
    token: Token,
  }),
  ev('mmap_sem.release', {
    pid: Pid,
    mode: z.enum(['read', 'write']),
    owner: z.string(),
    token: Token,
    released: z.boolean(),
  }),
  ev('pte.set', {
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    writable: z.boolean(),
    lock: LockName,
    /** fencing token of the lease the write was made under; null: inside one atomic script */
    token: Token.nullable(),
  }),
  ev('pte.clear', {
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    lock: LockName,
    token: Token.nullable(),
  }),
  ev('pte.reject', {
    pid: Pid,
    lock: LockName,
    /**
     * the refused holder's fencing token; null: refused the lock itself, the operation having
     * been taken over from its incarnation (fenced: apps/mm intent.ts)
     */
    token: Token.nullable(),
    reason: z.string(),
  }),
  /**
   * A transparent huge page event of pid at addr (the huge range's start; pfn/gen: the head page
   * it is about, order its order): fault (do_huge_pmd_anonymous_page mapped a new huge page),
   * fault-fallback (none was free: small pages; fallbacks counts this replica's
   * thp_fault_fallback), reuse / copy (do_huge_pmd_wp_page), cow-fallback (do_huge_pmd_wp_page
   * failed to get a huge page: do_huge_pmd_wp_page_fallback; fallbacks as above), zap
   * (zap_huge_pmd), copy-pmd (fork's copy_huge_pmd), split (split_huge_page, in this address
   * space), collapse (khugepaged's collapse_huge_page)
   */
  ev('thp', {
    pid: Pid,
    addr: Addr,
    event: z.enum([
      'fault',
      'fault-fallback',
      'reuse',
      'copy',
      'cow-fallback',
      'zap',
      'copy-pmd',
      'split',
      'collapse',
    ]),
    pfn: Pfn.optional(),
    gen: Gen.optional(),
    order: z.number().int().positive(),
    fallbacks: z.number().int().nonnegative().optional(),
  }),
  ev('frame.alloc', { pfn: Pfn, gen: Gen }),
  ev('frame.free', { pfn: Pfn, gen: Gen }),
  /**
   * try_to_unmap_one() wrote swap entry (slot, slotGen) where pid's PTE at addr mapped frame
   * pfn/gen (traced with the pte.clear of that PTE, before it).
   */
  ev('swap.out', {
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    slot: z.number().int().positive(),
    slotGen: Gen,
  }),
  /** do_swap_page() mapped frame pfn/gen for the swap entry (slot, slotGen) at addr (with its pte.set) */
  ev('swap.in', {
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    slot: z.number().int().positive(),
    slotGen: Gen,
    /** found in the swap cache (no read from the slot) */
    cached: z.boolean(),
  }),
  /** A file was created (file.create): its inode, its size in pages, XIP or not. */
  ev('file.create', { ino: Ino, pages: z.number().int().positive(), xip: z.boolean() }),
  /**
   * writepage(): page `page` of file ino, cached in pfn/gen, written back to the file's store
   * with the word value — by msync (after page_mkclean took every writable mapping of it away,
   * its pte.set and invalidate_page traced before) or by reclaim's pageout.
   */
  ev('writeback', {
    ino: Ino,
    page: z.number().int().nonnegative(),
    pfn: Pfn,
    gen: Gen,
    value: Value,
    why: z.enum(['msync', 'reclaim']),
  }),
  /**
   * __xip_unmap() (mm/filemap_xip.c): pid's PTE at addr mapped the XIP sparse page (pfn/gen) for
   * page `page` of XIP file ino, whose block now exists; the PTE was cleared (its pte.clear, and
   * the invalidate_page sent: after the PT lock in v3.7, under it in v3.6) and now the PTE's
   * reference of the sparse page is released (page_cache_release).
   */
  ev('xip.unmap', {
    pid: Pid,
    addr: Addr,
    ino: Ino,
    page: z.number().int().nonnegative(),
    pfn: Pfn,
    gen: Gen,
  }),
  /** One pass of reclaim (shrink_page_list): what it looked at and what came of it. */
  ev('reclaim', {
    /** kswapd, or direct (an allocation that found no frame), or the reclaim step */
    why: z.enum(['kswapd', 'direct', 'request']),
    scanned: z.number().int().nonnegative(),
    /** frames freed */
    reclaimed: z.number().int().nonnegative(),
    /** referenced (by a PTE's young bit or a secondary MMU's): activated, kept */
    referenced: z.number().int().nonnegative(),
    /** unmapped and written to swap but still held (a pin): kept in the swap cache */
    pinned: z.number().int().nonnegative(),
    /** frames free when the pass ended */
    free: z.number().int().nonnegative(),
    /**
     * kswapd's watermarks in free frames (MMLAB_WATERMARK_LOW/HIGH; high at least low): it
     * wakes below low and reclaims up to high. Absent: no kswapd (low 0), or an older mm.
     */
    watermarks: z
      .object({ low: z.number().int().positive(), high: z.number().int().positive() })
      .optional(),
  }),
  /**
   * ksmd (mm/ksm.c) on one page of a ksm.merge pass: `stable` made it a KSM page
   * (set_page_stable_node + stable_tree_insert), `merged` replaced its PTE by the KSM page
   * kpfn/kgen (replace_page, its old frame put), `refused` left it as it was, with why
   * (write_protect_page found references beyond its mappings: `pinned`; the PTE changed: `gone`;
   * the content changed: `changed`).
   */
  ev('ksm.merge', {
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    result: z.enum(['stable', 'merged', 'refused']),
    kpfn: Pfn.optional(),
    kgen: Gen.optional(),
    reason: z.string().optional(),
    /** write_protect_page's count check: page_mapcount + swapcache vs page_count */
    mapcount: z.number().int().optional(),
    refcount: z.number().int().optional(),
  }),
  ev('tlb.fill', { agent: Agent, pid: Pid, addr: Addr, pfn: Pfn, gen: Gen, writable: z.boolean() }),
  ev('tlb.flush', { agent: Agent, pid: Pid, start: Addr, end: Addr, entries: z.number().int() }),
  /**
   * mm took a CPU offline (its liveness lease expired during a shootdown, or nobody listens for
   * it): fenced, out of mm_cpumask of pid. Memory refuses its accesses until it has flushed its
   * whole TLB, so its entries no longer map anything.
   */
  ev('cpu.offline', { agent: Agent, pid: Pid, reason: z.string() }),
  ev('access', {
    agent: Agent,
    pid: Pid,
    addr: Addr,
    rw: Access,
    value: Value,
    pfn: Pfn,
    /** gen the translation was made for */
    gen: Gen,
    /** gen the frame had when the access landed */
    frameGen: Gen,
    /** the frame was on the free list when the access landed */
    frameFree: z.boolean(),
    tStart: z.number(),
    tEnd: z.number(),
  }),
  ev('debug.stall', { pid: Pid, lock: LockName, ms: z.number() }),
  /**
   * An armed crash point fires (mmlab.mm.<id>.crash_point) on the operation that reached it:
   * kill and stop right after this event; lose-lease, on the PT lock (and token) the operation
   * holds there, which it stops renewing until a newer holder has had the lock
   */
  ev('crash.point', {
    point: CrashPointName,
    action: CrashAction,
    /** the PT lock the operation holds at the point, if any */
    held: z.object({ pid: Pid, lock: LockName, token: Token }).optional(),
  }),
  ev('process.fork', { pid: Pid, child: Pid }),
  ev('process.exit', { pid: Pid }),
  /** madvise(MADV_DONTNEED): the pages of [start, end) are dropped; the next touch reads zero */
  ev('madvise', { pid: Pid, start: Addr, end: Addr, advice: z.enum(['dontneed']) }),
  ev('vma.protect', { pid: Pid, start: Addr, end: Addr, prot: Prot }),
  ev('vma.move', {
    pid: Pid,
    from: Addr,
    to: Addr,
    pages: z.number().int(),
    newPages: z.number().int(),
  }),
  ev('frame.pin', { pfn: Pfn, gen: Gen, agent: Agent }),
  ev('frame.unpin', { pfn: Pfn, gen: Gen, agent: Agent }),

  // ---- the notifier, as mm dispatches it -------------------------------------------------
  ev('mn.register', { pid: Pid, subscriber: z.string() }),
  ev('mn.unregister', {
    pid: Pid,
    subscriber: z.string(),
    reason: z.enum(['unregister', 'exit', 'dead']),
  }),
  /** mmu_notifier_invalidate_range_start() begins (before any subscriber is called) */
  ev('mn.range_start', { pid: Pid, start: Addr, end: Addr, event: MnEvent, inv: z.string() }),
  /** mmu_notifier_invalidate_range_end() begins; pairs with the range_start of the same inv */
  ev('mn.range_end', {
    pid: Pid,
    start: Addr,
    end: Addr,
    event: MnEvent,
    inv: z.string(),
    /** set when the lab sends the end its dead sender owed: that sender's incarnation */
    deadSender: z.string().optional(),
  }),
  /** mmu_notifier_invalidate_page() begins */
  ev('mn.page', { pid: Pid, addr: Addr, inv: z.string() }),
  ev('mn.release', { pid: Pid, inv: z.string() }),
  /** one callback request sent to one subscriber; ptl: the PT lock the sending op held then, if any */
  ev('mn.send', {
    pid: Pid,
    subscriber: z.string(),
    callback: MnCallback,
    inv: z.string(),
    attempt: z.number().int(),
    ptl: LockName.nullable(),
  }),
  ev('mn.ack', {
    pid: Pid,
    subscriber: z.string(),
    callback: MnCallback,
    inv: z.string(),
    waitedMs: z.number(),
  }),
  /** an ack that did not match (late, duplicate, or for another inv): ignored */
  ev('mn.ack_ignored', {
    pid: Pid,
    subscriber: z.string(),
    callback: MnCallback,
    inv: z.string(),
    got: z.string(),
  }),
  /** the atomic-context guard: a callback was sent while the op held a PT lock (might_sleep) */
  ev('might_sleep', { pid: Pid, callback: MnCallback, inv: z.string(), lock: LockName }),
  /** a subscriber's liveness lease expired: unregistered everywhere and fenced */
  ev('mn.fenced', { subscriber: z.string(), reason: z.string() }),

  // ---- the notifier, as a subscriber sees it -----------------------------------------------
  ev('mn.recv', {
    agent: Agent,
    pid: Pid,
    callback: MnCallback,
    inv: z.string(),
    start: Addr.optional(),
    end: Addr.optional(),
  }),
  /** the subscriber finished the callback and acks */
  ev('mn.done', { agent: Agent, pid: Pid, callback: MnCallback, inv: z.string() }),
  /** the subscriber found, in Redis, the sending op still holding a PT lock */
  ev('mn.ptl_held', {
    agent: Agent,
    pid: Pid,
    callback: MnCallback,
    inv: z.string(),
    lock: LockName,
    owner: z.string(),
  }),
  /** a callback-level fault (subChaos) fired on a subscriber's callback */
  ev('sub.fault', { agent: Agent, callback: MnCallback, inv: z.string(), fault: SubFaultKind }),

  // ---- secondary MMUs (HCA device table / MTT, KVM sPTEs) ---------------------------------
  /**
   * a secondary translation installed (addr: the host virtual address it translates); a KVM
   * sPTE also names its VM and guest frame (one agent may map one host page from several VMs)
   */
  ev('smap.set', {
    agent: Agent,
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    writable: z.boolean(),
    vm: VmId.optional(),
    gfn: Gfn.optional(),
  }),
  /** a secondary translation removed */
  ev('smap.clear', {
    agent: Agent,
    pid: Pid,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    vm: VmId.optional(),
    gfn: Gfn.optional(),
  }),
  /**
   * every secondary translation of agent for pid (of VM vm when given) with addr in
   * [start, end) is gone at once: KVM's O(1) teardown (mmuLock generation bumps mmu_valid_gen,
   * making every older sPTE of the VM invalid; entries: how many were live)
   */
  ev('smap.flush', {
    agent: Agent,
    pid: Pid,
    start: Addr,
    end: Addr,
    vm: VmId.optional(),
    entries: z.number().int().nonnegative(),
  }),
  /** a KVM guest fault (tdp_page_fault) on a vCPU: begin */
  ev('kvm.fault.begin', {
    agent: Agent,
    pid: Pid,
    vm: VmId,
    vcpu: z.number().int().nonnegative(),
    gfn: Gfn,
    addr: Addr,
    write: z.boolean(),
  }),
  /**
   * The guest fault stalls (MMLAB_NPF_DELAY_MS, the kvm subscriber's faultDelayMs: a test hook)
   * between resolving its host page and taking mmu_lock for mmu_notifier_retry(): its snapshot
   * of mmu_notifier_seq is `seq`; it waits up to ms for an invalidation to reach the VM
   */
  ev('kvm.fault.delay', {
    agent: Agent,
    pid: Pid,
    vm: VmId,
    gfn: Gfn,
    addr: Addr,
    seq: z.number().int(),
    ms: z.number(),
  }),
  ev('kvm.fault.end', {
    agent: Agent,
    pid: Pid,
    vm: VmId,
    gfn: Gfn,
    addr: Addr,
    /** mmu_notifier_retry() said retry this many times */
    retries: z.number().int(),
    result: z.union([z.literal('ok'), z.enum(ERROR_CODES)]),
    durMs: z.number(),
  }),
  /**
   * One hold of a VM's kvm->mmu_lock, at its release: what for (a range zap, a fault's
   * install, ...), how it is held (the instance's mmuLock), how long it waited and was held,
   * and the sPTEs it zapped (the hold the spin/sleep/generation comparison measures)
   */
  ev('kvm.mmu_lock', {
    agent: Agent,
    pid: Pid,
    vm: VmId,
    mode: MmuLockMode,
    what: z.enum(['fault', 'zap', 'page', 'change_pte', 'young', 'release', 'destroy', 'reclaim']),
    waitMs: z.number(),
    heldMs: z.number(),
    zapped: z.number().int().nonnegative(),
  }),
  /**
   * KVM's change_pte on one VM (kvm_set_spte_hva): found = whether any sPTE mapped the address
   * when it came. In v3.7 do_wp_page and KSM send invalidate_range_start first, which already
   * zapped it: change_pte then arrives to nothing (found false).
   */
  ev('kvm.change_pte', {
    agent: Agent,
    pid: Pid,
    vm: VmId,
    addr: Addr,
    pfn: Pfn,
    gen: Gen,
    writable: z.boolean(),
    found: z.boolean(),
  }),
  /** a device (network) page fault: begin and end */
  ev('npf.begin', {
    agent: Agent,
    pid: Pid,
    addr: Addr,
    pages: z.number().int(),
    write: z.boolean(),
  }),
  /**
   * The page fault's work queue stalls (MMLAB_NPF_DELAY_MS, a test hook) between its page
   * lookup and its re-check: the sequence snapshot `seq` is taken and the pages looked up; it
   * waits up to ms for an invalidation to reach the MR
   */
  ev('npf.delay', { agent: Agent, pid: Pid, addr: Addr, seq: z.number().int(), ms: z.number() }),
  ev('npf.end', {
    agent: Agent,
    pid: Pid,
    addr: Addr,
    retries: z.number().int(),
    result: z.union([z.literal('ok'), z.enum(ERROR_CODES)]),
    durMs: z.number(),
  }),
  /** a device access refused because its agent was fenced */
  ev('access.refused', { agent: Agent, pid: Pid, addr: Addr, reason: z.string() }),
  ev('barrier', { tag: z.string() }),
  /** a fault window opens on a target (a service instance): the lab's nemesis */
  ev('chaos.start', { target: z.string(), fault: z.string(), label: z.string() }),
  ev('chaos.end', { target: z.string(), fault: z.string() }),
  /**
   * `mmlab run` starts a scenario's steps: the invariants it expects to break (a
   * fault-injection run), so that a live view can tell expected violations from real ones
   */
  ev('run.start', { scenario: z.string(), expectViolations: z.array(z.string()) }),
]);

export type TraceEvent = z.infer<typeof TraceEvent>;
export type TraceKind = TraceEvent['kind'];
/** Every kind of trace event, as a schema (a scenario's trace.wait names one). */
export const TraceKindName = z.enum(
  TraceEvent.options.map((o) => o.shape.kind.value) as [TraceKind, ...TraceKind[]],
);
/**
 * What a tracer publishes on its subject: a batch of its events, in the order it emitted them
 * (Tracer sends one per millisecond or per TRACE_BATCH_MAX events, whichever comes first).
 * `first`..`last` is the seq range of its events (`<instance>:<seq>` ids, consecutive; a
 * replay sends older ranges again): a receiver that sees `first` above the last seq it had
 * from that instance knows it lost the events in between. A single bare event (the format
 * before batching) is still accepted by every receiver.
 */
export const TraceBatch = z.object({
  instance: z.string(),
  first: z.number().int().positive(),
  last: z.number().int().positive(),
  events: z.array(TraceEvent).min(1),
});
export type TraceBatch = z.infer<typeof TraceBatch>;
/** At most this many events in one batch. */
export const TRACE_BATCH_MAX = 64;
/** A batch's envelope with its events left unvalidated (a receiver checks each on its own). */
export const TraceBatchEnvelope = TraceBatch.extend({ events: z.array(z.unknown()).min(1) });

/**
 * The events of one trace message, unvalidated: a batch's events, or the one bare event.
 * null when it is neither (not an object). Never throws on a parsed value.
 */
export function traceMessageEvents(
  raw: unknown,
): { events: unknown[]; range?: { instance: string; first: number; last: number } } | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  if (!('events' in raw)) return { events: [raw] };
  const b = TraceBatchEnvelope.safeParse(raw);
  if (!b.success) return null;
  return {
    events: b.data.events,
    range: { instance: b.data.instance, first: b.data.first, last: b.data.last },
  };
}

export type EventOf<K extends TraceKind> = Extract<TraceEvent, { kind: K }>;
/** What a service supplies; the tracer stamps id, ts, service and instance. */
export type TraceInput = TraceEvent extends infer E
  ? E extends TraceEvent
    ? Omit<E, 'id' | 'ts' | 'service' | 'instance'> & { ts?: number }
    : never
  : never;
