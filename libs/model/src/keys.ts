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
 *
 * An address space ({p:<pid>}) — mm_struct and its page tables:
 *   :mm        hash: seq (mm_lock_seq: bumped at every mmap_sem write acquire and release),
 *              mmapNext (next free vpn for mmap), state, pinnedVm (mm->pinned_vm: pages pinned
 *              by pinned registrations, ≤ the memlock limit; not inherited by fork)
 *   :vma       zset: score = start vpn, member = "start:end:prot:flags" (vpn, end exclusive)
 *   :pte       hash: vpn → "pfn:gen:w" (w = 1 writable, 0 read-only); absent = pte_none
 *   :pmds      set of pmd indexes that have PTEs (page-table pages in use)
 *   :ptl:<i>   the split PTE lock of pmd i (pte_lockptr): "owner|token", PX ttl
 *   :ptl:mm    mm->page_table_lock
 *   :ptlmax    hash: lock → highest fencing token granted (the resource side of fencing)
 *   :fence     counter: fencing tokens, strictly increasing per address space
 *   :sem:w     mmap_sem held for write: "owner|token", PX ttl
 *   :cpumask   set of agents that may cache translations of this mm (mm_cpumask)
 *   :mn        hash: notifier subscribers registered on this mm → registration time
 *   :inv       hash: inv → the open range invalidation (JSON: pid op start end event
 *              subscribers; never changed once written): written before its
 *              invalidate_range_start is sent, deleted once its invalidate_range_end was acked
 *   :invown    hash: inv → "<incarnation>|<open|ending>": the mm incarnation that owes its end
 *              (the sender, or the replica that took it over from a dead sender) and whether
 *              mn.range_end was traced already (ending). Invariant: a field of :inv has one here
 *              and vice versa; the owner only changes by the invClaim script.
 */
export const MEM = {
  meta: '{mem}:meta',
  free: '{mem}:free',
  gen: '{mem}:gen',
  ref: '{mem}:ref',
  map: '{mem}:map',
  state: '{mem}:state',
  data: '{mem}:data',
  fenced: '{mem}:fenced',
} as const;
export const MEM_KEYS = [
  MEM.meta,
  MEM.free,
  MEM.gen,
  MEM.ref,
  MEM.map,
  MEM.state,
  MEM.data,
  MEM.fenced,
];

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
 */
export const mmKeys = (incarnation: string) => ({ live: `{mm}:live:${incarnation}` });

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
    cpumask: `${t}:cpumask`,
    mn: `${t}:mn`,
    inv: `${t}:inv`,
    invown: `${t}:invown`,
    /** key of a PT lock: 'mm' for page_table_lock, else the pmd index */
    ptl: (lock: string) => `${t}:${lock}`,
  };
};
export type ProcKeys = ReturnType<typeof procKeys>;

/** Lock names as traced: ptl:<pmd index> or ptl:mm. */
export const pteLockName = (pmdIndex: number): string => `ptl:${pmdIndex}`;
export const PAGE_TABLE_LOCK = 'ptl:mm';
