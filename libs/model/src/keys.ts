/**
 * Redis key layout. Every key of one address space carries the hash tag `{p:<pid>}`, and every
 * key of physical memory the tag `{mem}`, so each Lua script touches exactly one slot and stays
 * valid on Redis Cluster. Scripts receive every key they touch in KEYS.
 *
 * Physical memory ({mem}) — struct page, one field per pfn in each hash:
 *   {mem}:meta   frames, formatted
 *   {mem}:free   list of free pfns; LIFO, so a freed frame is reused at once (as hot pages are)
 *   {mem}:gen    pfn → generation, bumped at every allocation        (never decreases)
 *   {mem}:ref    pfn → refcount (mappings + pins)                     (≥ map; 0 iff free)
 *   {mem}:map    pfn → mapcount (PTEs mapping it)
 *   {mem}:state  pfn → free | used | zero                              (zero: pfn 0 only)
 *   {mem}:data   pfn → the page's one word of content
 *   {mem}:fenced set of agents (subscribers or CPUs whose liveness lease expired): their
 *                accesses are refused, as an IOMMU would after the device is detached; a CPU
 *                lifts its own fence after flushing its whole TLB (LivenessLease.ensure)
 *   {mem}:once   hash: batch id → 1: a put_page batch of an intent (below) that was applied, so
 *                that the replica finishing a dead one's operation never puts it twice; a
 *                get_page batch of fork's (<id>#c<n>) → 1 applied | undone (rolled back first:
 *                a late get of a stopped replica is then refused)
 *   {mem}:pending pfn → "gen|incarnation|pid|vpn|old": a frame allocated for a fault (or a COW)
 *                of pid at vpn by that mm incarnation and not known to be installed yet; old
 *                ("pfn:gen", or empty) is the page a COW replaces, whose put_page is still owed.
 *                Dropped atomically with the first get_page/put_page of the frame (whoever
 *                finds the frame in a PTE proves it installed: the COW's put of old is then
 *                done by that same script) or by its owner once installed. A tag whose owner
 *                died is reaped (orphan_ranges.ts): put back when no PTE of pid holds it (rolled
 *                back), old put when one does (rolled forward).
 *
 * An address space ({p:<pid>}) — mm_struct and its page tables:
 *   :mm        hash: seq (mm_lock_seq: bumped at every mmap_sem write acquire and release),
 *              mmapNext (next free vpn for mmap), state, pinnedVm (mm->pinned_vm: pages pinned
 *              by pinned registrations, ≤ the memlock limit; not inherited by fork)
 *   :vma       zset: score = start vpn, member = "start:end:prot:flags" (vpn, end exclusive)
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
 *   :intents   set of the ids of the multi-step operations in flight (intent records)
 *   :intent:<id> hash, one per multi-step operation (munmap, mprotect, mremap, fork), written before
 *              its first change and deleted after its last (id: "<incarnation>/<op>"):
 *                owner   the mm incarnation running it (the starter, or the replica that took
 *                        it over from a dead one: intentClaim); a PT lock asked for the
 *                        operation by anyone else is refused (the incarnation is fenced)
 *                rec     JSON: the syscall and its arguments, and where its caller waits
 *                cleared "pfn:gen ..." frames whose PTEs were cleared and not yet put (appended
 *                        by zapPteRange in the same script), batch: how many batches were put
 *                newVpn  mremap: where move_vma put the VMA (set by vmaMove in the same script)
 *                chunks  fork: how many copy_pte_range chunks were read (chunk:<n>: their
 *                        frames "pfn:gen ...", written by copyPteRange in the same script); the
 *                        child's get_page of chunk n is the {mem}:once batch <id>#c<n>
 *              Invariant: an id is in :intents iff its hash exists.
 */
import { pmdIndexOf } from '@mmlab/protocol';

export const MEM = {
  meta: '{mem}:meta',
  free: '{mem}:free',
  gen: '{mem}:gen',
  ref: '{mem}:ref',
  map: '{mem}:map',
  state: '{mem}:state',
  data: '{mem}:data',
  fenced: '{mem}:fenced',
  once: '{mem}:once',
  pending: '{mem}:pending',
} as const;
/** The roles of the {mem} keys, in the order every {mem} script receives them as KEYS. */
export const MEM_ROLES = [
  'meta',
  'free',
  'gen',
  'ref',
  'map',
  'state',
  'data',
  'fenced',
  'once',
  'pending',
] as const satisfies ReadonlyArray<keyof typeof MEM>;
export const MEM_KEYS: string[] = MEM_ROLES.map((r) => MEM[r]);

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
 *                            the pid (once per incarnation and pid: Store caches it), never in
 *                            the same script (another slot); a pid is dropped (invUnindex) only
 *                            by the reaper, once the incarnation is dead, fenced off that pid
 *                            ({p:<pid>}:fenced) and owns nothing there. A pid here with nothing
 *                            of the incarnation's (it died between invIndex and invOpen, or
 *                            its records were closed) costs one read of the pid when it dies.
 *   {mm}:invowners           set of the incarnations that have an :invpids set (the reaper's
 *                            list of whose leases to check). Invariant: it ∈ :invowners iff
 *                            {mm}:invpids:<it> exists (both written by the same scripts).
 */
export const mmKeys = (incarnation: string) => ({
  live: `{mm}:live:${incarnation}`,
  invpids: `{mm}:invpids:${incarnation}`,
});
export const MM_INDEX = { invowners: '{mm}:invowners' } as const;

/**
 * {mm}:crash:<token>  "<instance>|<epoch ms>": who fired the crash point armed with token, when (SET NX: one
 * replica per token fires; libs/protocol mmCrashPoint), kept a minute for the test to read.
 */
export const crashKey = (token: string): string => `{mm}:crash:${token}`;

export const GLOBAL = { nextPid: '{g}:nextpid', nextCpu: '{g}:nextcpu' } as const;

export const procKeys = (pid: number) => {
  const t = `{p:${pid}}`;
  return {
    mm: `${t}:mm`,
    vma: `${t}:vma`,
    pte: `${t}:pte`,
    pmds: `${t}:pmds`,
    ptlmax: `${t}:ptlmax`,
    fence: `${t}:fence`,
    semW: `${t}:sem:w`,
    semR: `${t}:sem:r`,
    cpumask: `${t}:cpumask`,
    mn: `${t}:mn`,
    inv: `${t}:inv`,
    invown: `${t}:invown`,
    fenced: `${t}:fenced`,
    intents: `${t}:intents`,
    intent: (id: string) => `${t}:intent:${id}`,
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
