/**
 * What `mmlab fsck` looks at: the lab's state in Redis, read into plain data (raw strings where
 * Redis holds strings, so a corrupt record is a finding, not a crash). The checks (checks.ts)
 * are pure functions of a snapshot; readSnapshot is the only part that talks to Redis.
 *
 * Not in Redis, so not checked: the HCA's MTT entries and its pinned MRs (a device keeps its
 * translations and its pin list in its own process, as hardware does), the CPUs' TLBs. A
 * frame's refcount above its mapcount is its pins, but no record says whose: fsck checks that
 * it is not below, and that all pins together are charged to some process's pinned_vm
 * (checks.ts, pinned-vm).
 */
import { HUGETLB_POOL, MEM, type Store, hugetlbKey, procKeys, subKeys } from '@mmlab/model';

export interface FrameRecord {
  gen: number;
  ref: number;
  map: number;
  /** free | used | zero (anything else, "state <n>", is a finding) */
  state: string;
  /** page->flags (PAGE_FLAGS; absent: 0), the compound order of a head (hugetlb rule), and the data
   * word (ksm rule) */
  flags?: number;
  reserved?: number;
  data?: number;
}

export interface LeaseRecord {
  /** mmap_sem (its writer: :sem:w), ptl:<pmd> or ptl:mm */
  lock: string;
  /** "<incarnation>/<op>" */
  owner: string;
  token: number;
}

/** A member of {p:<pid>}:sem:r: one reader of mmap_sem, its lease ending at expiresAt. */
export interface ReaderRecord {
  /** the raw member, "<incarnation>/<op>|<token>" */
  member: string;
  /** "<incarnation>/<op>" ('' when the member does not parse) */
  owner: string;
  token: number;
  /** its score: when its lease ends (Redis TIME, ms) */
  expiresAt: number;
}

export interface InvRecord {
  inv: string;
  /** the JSON record in {p:<pid>}:inv (absent: only :invown has the inv) */
  record?: string;
  /** "<incarnation>|<open|ending>" in {p:<pid>}:invown (absent: only :inv has it) */
  owner?: string;
}

export interface ProcessSnapshot {
  pid: number;
  /** {p:<pid>}:mm state: alive | dead; null when the pid was never created (or is gone) */
  state: string | null;
  /** raw :vma members ("start:end:prot:flags") */
  vmas: string[];
  /**
   * the page tables, decoded by the model (Store.pageTableRaw): vpn → "pfn:gen:w"; a stored
   * field that does not decode is one entry "field:<name>" (a pte-corrupt finding)
   */
  ptes: Record<string, string>;
  /** raw :pmds members: the page-table pages a page walk visits */
  pmds: string[];
  /** PT locks and the writer of mmap_sem (PX keys: what Redis returns has not expired) */
  leases: LeaseRecord[];
  /** every member of :sem:r, expired or not (an expired one stays until a writer drops it) */
  readers: ReaderRecord[];
  /** the raw pinnedVm field of :mm (mm->pinned_vm); null when absent (nothing ever pinned) */
  pinnedVm: string | null;
  /** the notifier subscribers registered on this mm (fields of :mn), sorted */
  mn: string[];
  invs: InvRecord[];
  /** intent records of multi-step operations in flight: id → owner incarnation ('' if none) */
  intents: Record<string, string>;
  /** {p:<pid>}:hugetlb as stored: hvpn → "pfn:gen:w", one huge entry per huge page (absent: none) */
  huge?: Record<string, string>;
  /**
   * {p:<pid>}:pmdhuge as stored, the transparent huge page entries: "o" → the order, hvpn →
   * "pfn:gen:w" (absent: none)
   */
  pmdhuge?: Record<string, string>;
}

export interface FsckSnapshot {
  /** {mem}:meta frames (0 when memory was never formatted) */
  frames: number;
  /** the free list, in allocation order (store.freeList) */
  freeList: number[];
  /** pfn → frame (every record of {mem}:frames) */
  frame: Record<string, FrameRecord>;
  processes: ProcessSnapshot[];
  /**
   * {mem}:pending: pfn → raw tag "gen|incarnation|pid|vpn|old" (a fault's frame not installed
   * yet) or "gen|incarnation|reserve" (a frame of that mm incarnation's batch)
   */
  pending: Record<string, string>;
  /** {mem}:swap as stored: "s<slot>" → "gen|count|cpfn|cgen|data", "p<pfn>" → slot (keys.ts) */
  swap: Record<string, string>;
  /** {mem}:meta swap_slots and nr_swap_free (raw; null when absent) */
  swapSlots: string | null;
  nrSwapFree: string | null;
  /**
   * {mem}:pagecache as stored (keys.ts): "f<ino>" → "pages|xip", "c<ino>:<i>" → pfn,
   * "p<pfn>" → "ino:i:dirty", "d<ino>:<i>" → the word on the store, "ino_next"
   */
  pagecache: Record<string, string>;
  /** {mem}:ksm as stored (keys.ts): "d<data>" → "pfn:gen", "p<pfn>" → data (absent: empty) */
  ksm?: Record<string, string>;
  /** {mem}:pins as stored (keys.ts): "<agent>@<pid>|<pfn>|<gen>" → pins (absent: empty) */
  pins?: Record<string, string>;
  /** the inactive and the active LRU lists' members */
  lru: string[];
  active: string[];
  /** every mm incarnation the state names (lease owners, inv owners) → its liveness lease lives */
  incarnations: Record<string, boolean>;
  /** Redis TIME when the snapshot was read (ms): what reader expiries are compared with */
  now: number;
  /**
   * every subscriber some :mn names → the pids of its {sub}:regs:<name> set (sorted), and
   * whether it is in {mem}:fenced
   */
  subscribers: Record<string, { regs: number[]; fenced: boolean }>;
  /** {mem}:hugetlb as stored (keys.ts: the hugetlbfs pool; absent or {}: no pool) */
  hugetlb?: Record<string, string>;
}

/** The incarnation part of a lease owner "<incarnation>/<op>" (the whole string if no '/'). */
export const incarnationOfOwner = (owner: string): string => {
  const i = owner.indexOf('/');
  return i < 0 ? owner : owner.slice(0, i);
};

/** The incarnation part of an :invown value "<incarnation>|<state>". */
export const incarnationOfInvOwner = (v: string): string => {
  const i = v.lastIndexOf('|');
  return i < 0 ? v : v.slice(0, i);
};

/**
 * Read the whole state. Not atomic across hash tags (Redis Cluster has no such read): run it on a
 * quiet lab, or expect in-flight operations to show up as findings.
 */
export async function readSnapshot(store: Store): Promise<FsckSnapshot> {
  const r = store.redis;
  // the frame table is read by the model (its layout is the model's): one MULTI on {mem}
  const [mem, pending, swap, swapMeta, lru, active, pagecache, ksm, hugetlb, pins] =
    await Promise.all([
      store.memTable(),
      r.hgetall(MEM.pending),
      r.hgetall(MEM.swap),
      r.hmget(MEM.meta, 'swap_slots', 'nr_swap_free'),
      r.zrange(MEM.lru, 0, -1),
      r.zrange(MEM.active, 0, -1),
      r.hgetall(MEM.pagecache),
      r.hgetall(MEM.ksm),
      r.hgetall(HUGETLB_POOL),
      r.hgetall(MEM.pins),
    ]);
  const frame: Record<string, FrameRecord> = {};
  for (const [pfn, f] of mem.frame)
    frame[pfn] = {
      gen: f.gen,
      ref: f.ref,
      map: f.map,
      state: f.state,
      flags: mem.flags.get(pfn) ?? 0,
      data: f.data,
      ...(f.reserved && { reserved: f.reserved }),
    };
  const processes = await Promise.all(
    (await store.processes()).map(async (pid): Promise<ProcessSnapshot> => {
      const k = procKeys(pid);
      const [
        st,
        pinnedVm,
        mn,
        vmas,
        ptes,
        pmds,
        locks,
        writer,
        readers,
        inv,
        invown,
        intentIds,
        huge,
      ] = await Promise.all([
        r.hget(k.mm, 'state'),
        r.hget(k.mm, 'pinnedVm'),
        r.hkeys(k.mn),
        r.zrange(k.vma, 0, -1),
        store.pageTableRaw(pid),
        r.smembers(k.pmds),
        store.heldLocks(pid),
        r.get(k.semW),
        r.zrange(k.semR, 0, -1, 'WITHSCORES'),
        r.hgetall(k.inv),
        r.hgetall(k.invown),
        r.smembers(k.intents),
        r.hgetall(hugetlbKey(pid)),
      ]);
      const pmdhuge = await r.hgetall(k.pmdhuge);
      const intents: Record<string, string> = {};
      for (const id of intentIds.sort()) intents[id] = (await r.hget(k.intent(id), 'owner')) ?? '';
      const invs = [...new Set([...Object.keys(inv), ...Object.keys(invown)])].sort().map((i) => ({
        inv: i,
        ...(inv[i] !== undefined && { record: inv[i] }),
        ...(invown[i] !== undefined && { owner: invown[i] }),
      }));
      // heldLocks() names both the writer and the live readers 'mmap_sem': take the PT locks
      // from it, and the two sides of mmap_sem from their own keys.
      const leases: LeaseRecord[] = locks
        .filter((l) => l.lock !== 'mmap_sem')
        .map((l) => ({ lock: l.lock, owner: l.owner, token: l.token }));
      if (writer !== null) leases.unshift({ lock: 'mmap_sem', ...splitLeaseValue(writer) });
      const rs: ReaderRecord[] = [];
      for (let i = 0; i + 1 < readers.length; i += 2)
        rs.push({
          member: readers[i],
          ...splitLeaseValue(readers[i]),
          expiresAt: Number(readers[i + 1]),
        });
      return {
        pid,
        state: st,
        vmas,
        ptes,
        pmds: pmds.sort(),
        leases,
        readers: rs,
        pinnedVm,
        mn: mn.sort(),
        invs,
        intents,
        ...(Object.keys(huge).length > 0 && { huge }),
        ...(Object.keys(pmdhuge).length > 0 && { pmdhuge }),
      };
    }),
  );
  // After the readers were read: one that expired meanwhile counts as expired.
  const [sec, usec] = await r.time();
  const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
  const names = new Set<string>();
  for (const p of processes) {
    for (const l of p.leases) names.add(incarnationOfOwner(l.owner));
    for (const l of p.readers) if (l.owner) names.add(incarnationOfOwner(l.owner));
    for (const i of p.invs) if (i.owner) names.add(incarnationOfInvOwner(i.owner));
    for (const o of Object.values(p.intents)) if (o) names.add(o);
  }
  for (const t of Object.values(pending)) names.add(pendingOwner(t));
  const incarnations: Record<string, boolean> = {};
  await Promise.all(
    [...names].map(async (n) => {
      incarnations[n] = await store.mmIsAlive(n);
    }),
  );
  const fenced = new Set(await r.smembers(MEM.fenced));
  const subscribers: FsckSnapshot['subscribers'] = {};
  await Promise.all(
    [...new Set(processes.flatMap((p) => p.mn))].map(async (name) => {
      const regs = (await r.smembers(subKeys(name).regs)).map(Number).sort((a, b) => a - b);
      subscribers[name] = { regs, fenced: fenced.has(name) };
    }),
  );
  return {
    frames: mem.frames,
    freeList: mem.freeList,
    frame,
    processes,
    pending,
    swap,
    swapSlots: swapMeta[0],
    nrSwapFree: swapMeta[1],
    pagecache,
    ksm,
    pins,
    lru,
    active,
    incarnations,
    now,
    subscribers,
    ...(Object.keys(hugetlb).length > 0 && { hugetlb }),
  };
}

/** A lease value "<owner>|<token>" ('' and NaN when it has no '|'). */
const splitLeaseValue = (v: string): { owner: string; token: number } => {
  const bar = v.lastIndexOf('|');
  return bar < 0
    ? { owner: '', token: NaN }
    : { owner: v.slice(0, bar), token: Number(v.slice(bar + 1)) };
};

/** The incarnation a pending tag "gen|incarnation|pid|vpn|old" (or a reserve tag) names. */
export const pendingOwner = (tag: string): string => tag.split('|')[1] ?? '';

/** A {mem}:pending tag of a frame of a per-replica batch: "gen|incarnation|reserve". */
export const isReserveTag = (tag: string): boolean => /^\d+\|[^|]+\|reserve$/.test(tag);
