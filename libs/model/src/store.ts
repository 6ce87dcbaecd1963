/**
 * Typed access to the lab's state in Redis: one method per Lua script (scripts.ts), keys from
 * keys.ts. Scripts are loaded once with ioredis defineCommand (EVALSHA, falling back to EVAL).
 */
import Redis, { Cluster, type RedisOptions } from 'ioredis';
import {
  type Access,
  MmlabError,
  MnCallback,
  MnEvent,
  MMAP_BASE,
  PTRS_PER_PTE,
  TASK_SIZE,
  type Prot,
  PAGE_SIZE,
} from '@mmlab/protocol';
import { GLOBAL, MEM, MEM_KEYS, mmKeys, procKeys, subKeys } from './keys';
import { type Pte, formatPte, parsePte } from './pte';
import { type Vma, formatVma, parseVma } from './vma';
import { SCRIPTS, type ScriptName } from './scripts';

type Reply = unknown[];
type ScriptFn = (...args: Array<string | number>) => Promise<unknown>;

export type FaultStep =
  | {
      r: 'ZERO' | 'ANON' | 'SPURIOUS' | 'WP_SHARED' | 'NEED_WP';
      pte: Pte;
      seq: number;
      /** a dead COW's cleared PTE was put back (read-only, the old page) first */
      undone: boolean;
    }
  | { r: 'NEED_PAGE'; seq: number }
  | { r: 'BUSY'; what: string }
  | { r: 'SIGSEGV' }
  | { r: 'ESRCH' }
  | { r: 'FENCED' };

/** A frame a fault allocated and has not installed yet ({mem}:pending, keys.ts). */
export interface PendingFrame {
  pfn: number;
  gen: number;
  /** the mm incarnation whose fault allocated it */
  owner: string;
  pid: number;
  vpn: number;
  /** the page a COW replaces with it, whose put is owed once it is installed */
  old: { pfn: number; gen: number } | null;
}

/** What a pending frame's tag says besides its gen: who allocated it, for what. */
export interface PendingTag {
  owner: string;
  pid: number;
  vpn: number;
  old?: { pfn: number; gen: number } | null;
}

const pairArgs = (pages: ReadonlyArray<{ pfn: number; gen: number }>): Array<string | number> =>
  pages.flatMap((p) => [p.pfn, p.gen]);

/** A PT-lock or mmap_sem lease held right now (lock: 'ptl:<pmd>', 'ptl:mm' or 'mmap_sem'). */
export interface HeldLease {
  lock: string;
  pid: number;
  owner: string;
  token: number;
  /** what is left of its TTL */
  ttlMs: number;
}

/**
 * A range invalidation between its invalidate_range_start and its invalidate_range_end, as
 * recorded in Redis ({p:<pid>}:inv and :invown). The record never changes; its owner does.
 */
export interface OpenInvalidation {
  readonly pid: number;
  readonly inv: string;
  /** the operation that started it (a munmap, a fault, ...) */
  readonly op: string;
  readonly start: number;
  readonly end: number;
  readonly event: MnEvent;
  /** the subscribers its invalidate_range_start was sent to: its end goes to them */
  readonly subscribers: readonly string[];
  /** the mm incarnation that owes the end: the sender, or the replica that took it over */
  readonly owner: string;
  /** open: mn.range_end not traced yet; ending: traced, the end is being dispatched */
  readonly state: 'open' | 'ending';
}

export type InvClaim =
  { r: 'OK'; prev: 'open' | 'ending' } | { r: 'LOST'; owner: string } | { r: 'GONE' };

/** A multi-step operation's intent record, as a script step names it: its id and expected owner. */
export interface IntentRef {
  readonly id: string;
  /** the incarnation that must still own it */
  readonly owner: string;
}

/** What an intent record says about its operation (JSON in :intent:<id> rec). */
export interface IntentRec {
  syscall: 'munmap' | 'mprotect' | 'mremap' | 'fork' | 'madvise' | 'exit';
  /** the syscall's arguments, as its handler got them */
  args: Record<string, unknown>;
  /** where the caller waits for the reply (NATS reply subject and packet id), if known */
  reply?: { to: string; id: string };
}

/** A multi-step operation in flight ({p:<pid>}:intent:<id>). */
export interface Intent {
  pid: number;
  id: string;
  owner: string;
  rec: IntentRec;
  /** frames whose PTEs were cleared and not yet put, and the batch they will be put as */
  cleared: Array<{ pfn: number; gen: number }>;
  batch: number;
  /** mremap: where the VMA went */
  newVpn?: number;
  /** fork: the frames of each copy_pte_range chunk (index n - 1: chunk n, batch <id>#c<n>) */
  chunks: Array<Array<{ pfn: number; gen: number }>>;
}

export type LockResult = { ok: true; token: number } | { ok: false; holder: string };

/** Scripts called with their key count first (keys < 0 in SCRIPTS). */
const VARIABLE_KEY_SCRIPTS = Object.entries(SCRIPTS)
  .filter(([, d]) => d.keys < 0)
  .map(([name]) => name);

/**
 * `redis+cluster://host:port,host:port` names a Redis Cluster (its seed nodes, with an
 * optional `user:password@`); anything else is one Redis server.
 */
export function connectRedis(url: string, opts: RedisOptions = {}): Redis | Cluster {
  // Reconnect forever, every 50..500 ms (a restarted redis-server is back within a second); a
  // command sent while Redis is away waits in the offline queue and one in flight when the
  // connection dropped is sent again (ioredis autoResendUnfulfilledCommands), so callers see a
  // delay, never an error. Scripts survive a restart: defineCommand's EVALSHA falls back to EVAL
  // on NOSCRIPT (the restarted server's script cache is empty).
  const common: RedisOptions = {
    maxRetriesPerRequest: null,
    enableAutoPipelining: true,
    retryStrategy: (times) => Math.min(50 * times, 500),
    ...opts,
  };
  const m = /^redis\+cluster:\/\/(?:([^:@/]*):([^@/]*)@)?([^/]+)\/?$/.exec(url);
  if (!m) return new Redis(url, common);
  const nodes = m[3].split(',').map((hp) => {
    const [host, port] = hp.split(':');
    return { host, port: Number(port || 6379) };
  });
  return new Cluster(nodes, {
    redisOptions: { ...common, username: m[1] || undefined, password: m[2] || undefined },
    enableAutoPipelining: true,
    // Auto-pipelining groups a script call by the slot of its first argument: for a script with
    // a variable key count that is the count, not a key, so the group would be wrong ("All keys
    // in the pipeline should belong to the same slots allocation group"). Send those alone.
    autoPipeliningIgnoredCommands: VARIABLE_KEY_SCRIPTS,
    clusterRetryStrategy: (times) => Math.min(100 + 50 * times, 1000),
  });
}

export class Store {
  readonly redis: Redis | Cluster;
  /** How often each script ran through this store (the Cluster test checks all of them did). */
  readonly scriptCalls = new Map<ScriptName, number>();

  constructor(target: string | Redis | Cluster, opts: RedisOptions = {}) {
    this.redis = typeof target === 'string' ? connectRedis(target, opts) : target;
    // Connection errors while Redis is away are expected: ioredis reconnects and the commands
    // wait (see connectRedis). Without a listener, each attempt would be printed as unhandled.
    if (typeof target === 'string') this.redis.on('error', () => undefined);
    // keys < 0: a variable key count, which the caller passes first (see run); ioredis would
    // otherwise send the -1 itself ("Number of keys can't be negative").
    for (const [name, d] of Object.entries(SCRIPTS))
      this.redis.defineCommand(name, { numberOfKeys: d.keys < 0 ? undefined : d.keys, lua: d.lua });
  }

  async quit(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  private run(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown> {
    this.scriptCalls.set(name, (this.scriptCalls.get(name) ?? 0) + 1);
    const fn = (this.redis as unknown as Record<ScriptName, ScriptFn>)[name];
    if (SCRIPTS[name].keys < 0) return fn.call(this.redis, keys.length, ...keys, ...args);
    return fn.call(this.redis, ...keys, ...args);
  }

  // ---- physical memory ({mem}) -------------------------------------------------------------

  async memFormat(frames: number): Promise<number> {
    return Number(await this.run('memFormat', MEM_KEYS, [frames]));
  }

  /** alloc_page(): → {pfn, gen} or null when memory is exhausted; tag: a fault's pending frame. */
  async allocPage(
    copyFrom: number | null,
    mapcount = 1,
    tag: PendingTag | null = null,
  ): Promise<{ pfn: number; gen: number } | null> {
    const t = tag
      ? `${tag.owner}|${tag.pid}|${tag.vpn}|${tag.old ? `${tag.old.pfn}:${tag.old.gen}` : ''}`
      : '';
    const r = (await this.run('allocPage', MEM_KEYS, [copyFrom ?? '', mapcount, t])) as Reply;
    if (r[0] === 'ENOMEM') return null;
    return { pfn: Number(r[1]), gen: Number(r[2]) };
  }

  /**
   * put_page() for each frame: → frames freed, and pfns that were not live (double free).
   * 'unpin' (a device's pins): all or nothing — with any bad pfn, nothing is applied. With a
   * batch id, a batch applied already is not applied again (nothing freed, nothing bad).
   * 'pending': frames owner's fault allocated and did not install (only those still tagged as
   * its own: one reaped meanwhile is skipped).
   */
  async putPages(
    pages: Array<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref' | 'unpin' | 'pending' = 'map',
    batch = '',
    owner = '',
  ): Promise<{ freed: number[]; bad: number[] }> {
    if (pages.length === 0) return { freed: [], bad: [] };
    const args = [kind, batch, owner, ...pairArgs(pages)];
    const r = (await this.run('putPages', MEM_KEYS, args)) as [number[], number[]];
    return { freed: r[0].map(Number), bad: r[1].map(Number) };
  }

  /** owner's pending frames are installed now; → frames freed by the COW puts they owed. */
  async pagesInstalled(
    owner: string,
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
  ): Promise<number[]> {
    if (pages.length === 0) return [];
    const r = (await this.run('pagesInstalled', MEM_KEYS, [owner, ...pairArgs(pages)])) as number[];
    return r.map(Number);
  }

  /** Every pending frame ({mem}:pending), tag parsed (a tag that does not parse is left out). */
  async pendingFrames(): Promise<PendingFrame[]> {
    const all = await this.redis.hgetall(MEM.pending);
    const out: PendingFrame[] = [];
    for (const [pfn, t] of Object.entries(all)) {
      const m = /^(\d+)\|([^|]*)\|(\d+)\|(\d+)\|(?:(\d+):(\d+))?$/.exec(t);
      if (!m) continue;
      out.push({
        pfn: Number(pfn),
        gen: Number(m[1]),
        owner: m[2],
        pid: Number(m[3]),
        vpn: Number(m[4]),
        old: m[5] === undefined ? null : { pfn: Number(m[5]), gen: Number(m[6]) },
      });
    }
    return out;
  }

  /** Fence owner off f's address space; → whether a PTE there holds f (pendingFence). */
  async pendingFence(f: PendingFrame): Promise<boolean> {
    const k = procKeys(f.pid);
    return Number(await this.run('pendingFence', [k.pte, k.fenced], [f.owner, f.pfn, f.gen])) === 1;
  }

  /** Reap a dead incarnation's pending frame (pendingReap); → what was done, frames freed. */
  async pendingReap(
    f: PendingFrame,
    installed: boolean,
  ): Promise<{ r: 'GONE' | 'FORWARD' | 'BACK'; freed: number[] }> {
    const r = (await this.run('pendingReap', MEM_KEYS, [
      f.pfn,
      f.gen,
      f.owner,
      installed ? 1 : 0,
    ])) as Reply;
    const what = String(r[0]) as 'GONE' | 'FORWARD' | 'BACK';
    return { r: what, freed: ((r[1] as number[] | undefined) ?? []).map(Number) };
  }

  /** Roll back fork's get_page batch (batchUndo); → frames freed. */
  async batchUndo(
    batch: string,
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
  ): Promise<{ r: 'PUT' | 'NOT_APPLIED' | 'UNDONE'; freed: number[] }> {
    const r = (await this.run('batchUndo', MEM_KEYS, [batch, ...pairArgs(pages)])) as Reply;
    return {
      r: String(r[0]) as 'PUT' | 'NOT_APPLIED' | 'UNDONE',
      freed: ((r[1] as number[] | undefined) ?? []).map(Number),
    };
  }

  /**
   * Charge pages to pid's pinned_vm within limit, under the mmap_sem write lease semValue: the
   * new total, or ENOMEM / ESRCH / ESTALE (the lease was lost).
   */
  async pinnedVmCharge(
    pid: number,
    pages: number,
    limit: number,
    semValue: string,
  ): Promise<
    | { ok: true; pinnedVm: number }
    | { ok: false; code: 'ENOMEM' | 'ESRCH' | 'ESTALE'; pinnedVm: number }
  > {
    const k = procKeys(pid);
    const r = (await this.run('pinnedVmCharge', [k.mm, k.semW], [pages, limit, semValue])) as Reply;
    if (r[0] === 'OK') return { ok: true, pinnedVm: Number(r[1]) };
    const code = r[0] === 'ENOMEM' || r[0] === 'ESTALE' ? r[0] : 'ESRCH';
    return { ok: false, code, pinnedVm: Number(r[1] ?? 0) };
  }

  /** Give pages of pid's pinned_vm back; returns what is left. */
  async pinnedVmUncharge(pid: number, pages: number): Promise<number> {
    return Number(await this.run('pinnedVmUncharge', [procKeys(pid).mm], [pages]));
  }

  /** pid's pinned_vm (pages pinned by devices for it). */
  async pinnedVm(pid: number): Promise<number> {
    return Number((await this.redis.hget(procKeys(pid).mm, 'pinnedVm')) ?? 0);
  }

  /** A load or store by agent through a translation to pfn; 'FENCED' when agent was fenced off. */
  async frameAccess(
    pfn: number,
    op: Access,
    value: number | undefined,
    agent: string,
  ): Promise<{ gen: number; state: string; value: number } | 'FENCED' | null> {
    const r = (await this.run('frameAccess', MEM_KEYS, [pfn, op, value ?? 0, agent])) as Reply;
    if (r[0] === 'FENCED') return 'FENCED';
    if (r[0] !== 'OK') return null;
    return { gen: Number(r[1]), state: String(r[2]), value: Number(r[3]) };
  }

  // ---- notifier subscribers ---------------------------------------------------------------

  /** Renew (or take) a subscriber's liveness lease. */
  async subscriberAlive(name: string, ttlMs: number): Promise<void> {
    await this.redis.set(subKeys(name).live, String(Date.now()), 'PX', ttlMs);
  }

  async subscriberIsAlive(name: string): Promise<boolean> {
    return (await this.redis.exists(subKeys(name).live)) === 1;
  }

  /** Give a liveness lease up (an agent shutting down cleanly: mm need not wait out its TTL). */
  async livenessDrop(name: string): Promise<void> {
    await this.redis.del(subKeys(name).live);
  }

  /** Fence agent: its device accesses are refused from now on. */
  async fence(agent: string): Promise<void> {
    await this.redis.sadd(MEM.fenced, agent);
  }

  async unfence(agent: string): Promise<void> {
    await this.redis.srem(MEM.fenced, agent);
  }

  async isFenced(agent: string): Promise<boolean> {
    return (await this.redis.sismember(MEM.fenced, agent)) === 1;
  }

  /** The notifier subscribers registered on pid. */
  async mnSubscribers(pid: number): Promise<string[]> {
    return (await this.redis.hkeys(procKeys(pid).mn)).sort();
  }

  /** Register name on pid with the callbacks it implements (its mmu_notifier_ops). */
  async mnRegister(pid: number, name: string, ops: readonly MnCallback[]): Promise<void> {
    await this.redis.hset(procKeys(pid).mn, name, `${Date.now()}|${ops.join(',')}`);
    await this.redis.sadd(subKeys(name).regs, String(pid));
  }

  /** The subscribers of pid with the callbacks each implements (name order). */
  async mnSubscriberOps(pid: number): Promise<Map<string, ReadonlySet<MnCallback>>> {
    const all = await this.redis.hgetall(procKeys(pid).mn);
    const out = new Map<string, ReadonlySet<MnCallback>>();
    for (const name of Object.keys(all).sort()) {
      const v = all[name];
      const bar = v.indexOf('|');
      // A registration without its callback set (older state) implements every callback.
      const ops = bar < 0 ? MnCallback.options : v.slice(bar + 1).split(',');
      out.set(name, new Set(ops.filter((o): o is MnCallback => MnCallback.safeParse(o).success)));
    }
    return out;
  }

  async mnUnregister(pid: number, name: string): Promise<boolean> {
    const n = await this.redis.hdel(procKeys(pid).mn, name);
    await this.redis.srem(subKeys(name).regs, String(pid));
    return n === 1;
  }

  /** The pids a subscriber is registered on. */
  async mnRegistrations(name: string): Promise<number[]> {
    return (await this.redis.smembers(subKeys(name).regs)).map(Number);
  }

  // ---- open range invalidations ({p:<pid>}:inv, :invown) and mm incarnations ({mm}) -------

  /** Renew (or take) the liveness lease of an mm incarnation. */
  async mmAlive(incarnation: string, ttlMs: number): Promise<void> {
    await this.redis.set(mmKeys(incarnation).live, String(Date.now()), 'PX', ttlMs);
  }

  async mmIsAlive(incarnation: string): Promise<boolean> {
    return (await this.redis.exists(mmKeys(incarnation).live)) === 1;
  }

  /** An mm incarnation going away cleanly: its open invalidations need not wait out the TTL. */
  async mmLivenessDrop(incarnation: string): Promise<void> {
    await this.redis.del(mmKeys(incarnation).live);
  }

  /**
   * Record r (owned by r.owner, state open) before its invalidate_range_start is sent.
   * EINVAL for a malformed record or an inv recorded already; nothing written.
   */
  async invOpen(r: Omit<OpenInvalidation, 'state'>): Promise<void> {
    if (
      !Number.isSafeInteger(r.pid) ||
      r.pid <= 0 ||
      !r.inv ||
      !r.owner ||
      r.owner.includes('|') ||
      !Number.isSafeInteger(r.start) ||
      !Number.isSafeInteger(r.end) ||
      r.start < 0 ||
      r.end <= r.start ||
      !MnEvent.safeParse(r.event).success
    )
      throw new MmlabError('EINVAL', `malformed open invalidation ${JSON.stringify(r)}`);
    const k = procKeys(r.pid);
    const record = JSON.stringify({
      op: r.op,
      start: r.start,
      end: r.end,
      event: r.event,
      subscribers: [...r.subscribers],
    });
    const ok = Number(await this.run('invOpen', [k.inv, k.invown], [r.inv, record, r.owner]));
    if (ok !== 1)
      throw new MmlabError('EINVAL', `invalidation ${r.inv} of pid ${r.pid} is open already`);
  }

  /** Move the end of inv from incarnation `from` to `to` (atomic: one winner); see invClaim. */
  async invClaim(pid: number, inv: string, from: string, to: string): Promise<InvClaim> {
    if (to.includes('|')) throw new MmlabError('EINVAL', `bad incarnation ${to}`);
    const r = (await this.run('invClaim', [procKeys(pid).invown], [inv, from, to])) as Reply;
    if (r[0] === 'OK') return { r: 'OK', prev: r[1] === 'ending' ? 'ending' : 'open' };
    if (r[0] === 'LOST') return { r: 'LOST', owner: String(r[1]) };
    return { r: 'GONE' };
  }

  /** Forget inv once its end was acked, if owner still owns it. */
  async invClose(pid: number, inv: string, owner: string): Promise<boolean> {
    const k = procKeys(pid);
    return Number(await this.run('invClose', [k.inv, k.invown], [inv, owner])) === 1;
  }

  /** The open invalidations of pid, by inv (a record that does not parse is left out). */
  async openInvalidations(pid: number): Promise<OpenInvalidation[]> {
    const k = procKeys(pid);
    const [recs, owners] = await Promise.all([
      this.redis.hgetall(k.inv),
      this.redis.hgetall(k.invown),
    ]);
    const out: OpenInvalidation[] = [];
    for (const inv of Object.keys(recs).sort()) {
      const own = /^(.*)\|(open|ending)$/.exec(owners[inv] ?? '');
      if (!own) continue;
      try {
        const r = JSON.parse(recs[inv]) as Record<string, unknown>;
        const event = MnEvent.safeParse(r.event);
        if (
          typeof r.op !== 'string' ||
          typeof r.start !== 'number' ||
          typeof r.end !== 'number' ||
          !event.success ||
          !Array.isArray(r.subscribers)
        )
          continue;
        out.push({
          pid,
          inv,
          op: r.op,
          start: r.start,
          end: r.end,
          event: event.data,
          subscribers: r.subscribers.map(String),
          owner: own[1],
          state: own[2] as 'open' | 'ending',
        });
      } catch {
        continue;
      }
    }
    return out;
  }

  /**
   * Which PT lock of pid covering [start, end) (its split PTE locks, up to 64 of them, and
   * page_table_lock) does owner hold right now, if any.
   */
  async ptlHeldBy(pid: number, owner: string, start: number, end: number): Promise<string | null> {
    const k = procKeys(pid);
    const first = Math.floor(start / PAGE_SIZE / PTRS_PER_PTE);
    const last = Math.max(first, Math.floor(Math.max(start, end - 1) / PAGE_SIZE / PTRS_PER_PTE));
    const locks = ['ptl:mm'];
    for (let i = first; i <= last && locks.length < 65; i++) locks.push(`ptl:${i}`);
    const r = (await this.run(
      'ptlHeldBy',
      locks.map((l) => k.ptl(l)),
      [owner],
    )) as string | null;
    return r ? r.slice(r.lastIndexOf(':ptl:') + 1) : null;
  }

  async memInfo(): Promise<{ frames: number; free: number }> {
    const r = (await this.run('memInfo', MEM_KEYS, [])) as Reply;
    return { frames: Number(r[0]), free: Number(r[1]) };
  }

  /** Frame table snapshot (tests and diagnostics). */
  async frames(): Promise<
    Map<number, { gen: number; ref: number; map: number; state: string; data: number }>
  > {
    const [gen, ref, map, state, data] = await Promise.all(
      [MEM_KEYS[2], MEM_KEYS[3], MEM_KEYS[4], MEM_KEYS[5], MEM_KEYS[6]].map((k) =>
        this.redis.hgetall(k),
      ),
    );
    const out = new Map<
      number,
      { gen: number; ref: number; map: number; state: string; data: number }
    >();
    for (const pfn of Object.keys(gen))
      out.set(Number(pfn), {
        gen: Number(gen[pfn]),
        ref: Number(ref[pfn]),
        map: Number(map[pfn]),
        state: state[pfn],
        data: Number(data[pfn]),
      });
    return out;
  }

  async freeList(): Promise<number[]> {
    return (await this.redis.lrange(MEM_KEYS[1], 0, -1)).map(Number);
  }

  // ---- address spaces ({p:<pid>}) -----------------------------------------------------------

  async mmCreate(): Promise<number> {
    const pid = await this.redis.incr(GLOBAL.nextPid);
    await this.run('mmCreate', [procKeys(pid).mm], [MMAP_BASE / PAGE_SIZE]);
    return pid;
  }

  async mmap(pid: number, pages: number, prot: Prot, shared: boolean): Promise<Reply> {
    const k = procKeys(pid);
    return (await this.run(
      'mmap',
      [k.mm, k.vma, k.semW, k.semR],
      [pages, prot, shared ? 'shared' : '', TASK_SIZE / PAGE_SIZE],
    )) as Reply;
  }

  async semWriteLock(pid: number, owner: string, ttlMs: number): Promise<LockResult | 'ESRCH'> {
    const k = procKeys(pid);
    const r = (await this.run(
      'semWriteLock',
      [k.semW, k.mm, k.fence, k.semR],
      [owner, ttlMs],
    )) as Reply;
    if (r[0] === 'ESRCH') return 'ESRCH';
    return r[0] === 'OK' ? { ok: true, token: Number(r[1]) } : { ok: false, holder: String(r[1]) };
  }

  /** down_read(&mm->mmap_sem) as a lease (a member of :sem:r); BUSY while a writer holds it. */
  async semReadLock(pid: number, owner: string, ttlMs: number): Promise<LockResult | 'ESRCH'> {
    const k = procKeys(pid);
    const r = (await this.run(
      'semReadLock',
      [k.semW, k.semR, k.mm, k.fence],
      [owner, ttlMs],
    )) as Reply;
    if (r[0] === 'ESRCH') return 'ESRCH';
    return r[0] === 'OK' ? { ok: true, token: Number(r[1]) } : { ok: false, holder: String(r[1]) };
  }

  /** Renew a reader's lease; false when it had expired (it is dropped). */
  async semReadRenew(pid: number, value: string, ttlMs: number): Promise<boolean> {
    return Number(await this.run('semReadRenew', [procKeys(pid).semR], [value, ttlMs])) === 1;
  }

  /** up_read(); false when the lease had expired. */
  async semReadUnlock(pid: number, value: string): Promise<boolean> {
    return Number(await this.run('semReadUnlock', [procKeys(pid).semR], [value])) === 1;
  }

  async semWriteUnlock(pid: number, value: string): Promise<boolean> {
    const k = procKeys(pid);
    return Number(await this.run('semWriteUnlock', [k.semW, k.mm], [value])) === 1;
  }

  /**
   * spin_lock(ptl) as a lease; for a step of the operation `intent` (whose owner must still be
   * intent.owner: else FENCED, the operation was taken over).
   */
  async ptlLock(
    pid: number,
    lock: string,
    owner: string,
    ttlMs: number,
    intent?: IntentRef,
  ): Promise<LockResult | { ok: false; fenced: string }> {
    const k = procKeys(pid);
    const r = (await this.run(
      'ptlLock',
      [k.ptl(lock), k.ptlmax, k.fence, intent ? k.intent(intent.id) : k.mm],
      [owner, ttlMs, lock, intent?.owner ?? ''],
    )) as Reply;
    if (r[0] === 'FENCED') return { ok: false, fenced: String(r[1]) };
    return r[0] === 'OK' ? { ok: true, token: Number(r[1]) } : { ok: false, holder: String(r[1]) };
  }

  // ---- intent records of multi-step operations ({p:<pid>}:intents, :intent:<id>) ----------

  /** Record a multi-step operation before its first change; EINVAL if id is recorded already. */
  async intentOpen(pid: number, id: string, owner: string, rec: IntentRec): Promise<void> {
    const k = procKeys(pid);
    const ok = Number(
      await this.run('intentOpen', [k.intents, k.intent(id)], [id, owner, JSON.stringify(rec)]),
    );
    if (ok !== 1) throw new MmlabError('EINVAL', `intent ${id} of pid ${pid} is recorded already`);
  }

  async intentClaim(
    pid: number,
    id: string,
    from: string,
    to: string,
  ): Promise<{ r: 'OK' } | { r: 'LOST'; owner: string } | { r: 'GONE' }> {
    const r = (await this.run('intentClaim', [procKeys(pid).intent(id)], [from, to])) as Reply;
    if (r[0] === 'OK') return { r: 'OK' };
    if (r[0] === 'LOST') return { r: 'LOST', owner: String(r[1]) };
    return { r: 'GONE' };
  }

  async intentFlushed(pid: number, id: string, owner: string, batch: number): Promise<boolean> {
    return (
      Number(await this.run('intentFlushed', [procKeys(pid).intent(id)], [owner, batch])) === 1
    );
  }

  async intentClose(pid: number, id: string, owner: string): Promise<boolean> {
    const k = procKeys(pid);
    return Number(await this.run('intentClose', [k.intents, k.intent(id)], [id, owner])) === 1;
  }

  /** The intents of pid in flight (a record that does not parse is left out). */
  async intents(pid: number): Promise<Intent[]> {
    const k = procKeys(pid);
    const ids = (await this.redis.smembers(k.intents)).sort();
    const out: Intent[] = [];
    for (const id of ids) {
      const h = await this.redis.hgetall(k.intent(id));
      if (!h.owner || !h.rec) continue;
      try {
        const rec = JSON.parse(h.rec) as IntentRec;
        out.push({
          pid,
          id,
          owner: h.owner,
          rec,
          batch: Number(h.batch ?? 0),
          cleared: (h.cleared ?? '')
            .split(' ')
            .filter((x) => x)
            .map((x) => {
              const [pfn, gen] = x.split(':').map(Number);
              return { pfn, gen };
            }),
          ...(h.newVpn !== undefined && { newVpn: Number(h.newVpn) }),
          chunks: Array.from({ length: Number(h.chunks ?? 0) }, (_, i) =>
            (h[`chunk:${i + 1}`] ?? '')
              .split(' ')
              .filter((x) => x)
              .map((x) => {
                const [pfn, gen] = x.split(':').map(Number);
                return { pfn, gen };
              }),
          ),
        });
      } catch {
        continue;
      }
    }
    return out;
  }

  async leaseRelease(key: string, value: string): Promise<boolean> {
    return Number(await this.run('leaseRelease', [key], [value])) === 1;
  }

  async leaseRenew(key: string, value: string, ttlMs: number): Promise<boolean> {
    return Number(await this.run('leaseRenew', [key], [value, ttlMs])) === 1;
  }

  /** → removed [start, end) vpn ranges, or null when the mmap_sem lease was lost. */
  async vmaUnmap(
    pid: number,
    semValue: string,
    s: number,
    e: number,
  ): Promise<Array<[number, number]> | null> {
    const k = procKeys(pid);
    const r = (await this.run('vmaUnmap', [k.vma, k.semW], [semValue, s, e])) as Reply;
    if (r[0] !== 'OK') return null;
    const flat = (r[1] as number[]).map(Number);
    const out: Array<[number, number]> = [];
    for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
    return out;
  }

  /**
   * One step of the fault path. mmapSem: the mmap_sem write lease ("owner|token") the caller
   * holds itself, if any (a pinned registration faulting its pages in): its faults pass the
   * write-held check that sends everyone else's back (BUSY).
   */
  async fault(
    pid: number,
    vpn: number,
    access: Access,
    agent: string,
    newPage: { pfn: number; gen: number } | null,
    incarnation: string,
    mmapSem = '',
  ): Promise<FaultStep> {
    const k = procKeys(pid);
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const r = (await this.run(
      'fault',
      [k.mm, k.vma, k.pte, k.pmds, k.semW, k.ptl(`ptl:${pmd}`), k.cpumask, k.fenced],
      [vpn, access, newPage?.pfn ?? '', newPage?.gen ?? '', pmd, agent, incarnation, mmapSem],
    )) as Reply;
    switch (r[0]) {
      case 'ZERO':
      case 'ANON':
      case 'SPURIOUS':
      case 'WP_SHARED':
      case 'NEED_WP':
        return {
          r: r[0],
          pte: { pfn: Number(r[1]), gen: Number(r[2]), writable: Number(r[3]) === 1 },
          seq: Number(r[4]),
          undone: Number(r[5]) === 1,
        };
      case 'FENCED':
        return { r: 'FENCED' };
      case 'NEED_PAGE':
        return { r: 'NEED_PAGE', seq: Number(r[1]) };
      case 'BUSY':
        return { r: 'BUSY', what: String(r[1]) };
      case 'SIGSEGV':
        return { r: 'SIGSEGV' };
      case 'ESRCH':
        return { r: 'ESRCH' };
      default:
        throw new Error(`fault script answered ${JSON.stringify(r)}`);
    }
  }

  async wpReuse(
    pid: number,
    vpn: number,
    expected: Pte,
    seq: number,
    agent: string,
    mmapSem = '',
  ): Promise<'OK' | 'RETRY' | 'BUSY'> {
    const k = procKeys(pid);
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const r = (await this.run(
      'wpReuse',
      [k.mm, k.pte, k.semW, k.ptl(`ptl:${pmd}`), k.cpumask],
      [vpn, formatPte(expected), seq, agent, mmapSem],
    )) as Reply;
    return r[0] as 'OK' | 'RETRY' | 'BUSY';
  }

  async wpCopyLock(
    pid: number,
    vpn: number,
    expected: Pte,
    seq: number,
    owner: string,
    ttlMs: number,
    lock: string,
    agent: string,
    incarnation: string,
    mmapSem = '',
  ): Promise<
    | { r: 'OK'; token: number; cpumask: string[] }
    | { r: 'RETRY' }
    | { r: 'FENCED' }
    | { r: 'BUSY'; what: 'ptl' | 'mmap_sem' }
  > {
    const k = procKeys(pid);
    const r = (await this.run(
      'wpCopyLock',
      [k.mm, k.pte, k.semW, k.ptl(lock), k.ptlmax, k.fence, k.cpumask, k.fenced],
      [vpn, formatPte(expected), seq, owner, ttlMs, lock, agent, incarnation, mmapSem],
    )) as Reply;
    if (r[0] === 'OK')
      return { r: 'OK', token: Number(r[1]), cpumask: (r[2] as string[]).map(String) };
    if (r[0] === 'FENCED') return { r: 'FENCED' };
    if (r[0] === 'BUSY') return { r: 'BUSY', what: r[1] === 'ptl' ? 'ptl' : 'mmap_sem' };
    return { r: 'RETRY' };
  }

  /**
   * Fenced set_pte_at() + unlock (keep: the lock stays held, v3.6's change_pte comes next).
   * → 'OK'; 'ESTALE' when the lease was lost (nothing written); 'UNFENCED' when it was lost
   * but skipFence (the injected fault skip-fence-check) wrote anyway.
   */
  async setPteUnlock(
    pid: number,
    lock: string,
    value: string,
    token: number,
    vpn: number,
    pte: Pte,
    incarnation: string,
    opts: { keep?: boolean; skipFence?: boolean } = {},
  ): Promise<'OK' | 'UNFENCED' | 'ESTALE'> {
    const k = procKeys(pid);
    const r = (await this.run(
      'setPteUnlock',
      [k.ptl(lock), k.ptlmax, k.pte, k.fenced],
      [
        value,
        lock,
        token,
        vpn,
        formatPte(pte),
        opts.keep ? 'keep' : '',
        opts.skipFence ? 'skip-fence' : '',
        incarnation,
      ],
    )) as Reply;
    if (r[0] !== 'OK') return 'ESTALE';
    return Number(r[1]) === 1 ? 'OK' : 'UNFENCED';
  }

  /** copy_user_highpage(src → dst); with old (src's frame), dst's pending tag owes its put. */
  async copyPage(
    src: number,
    dst: number,
    old: { pfn: number; gen: number } | null = null,
  ): Promise<void> {
    await this.run('copyPage', MEM_KEYS, [src, dst, old ? `${old.pfn}:${old.gen}` : '']);
  }

  /**
   * page_count(), page_mapcount() and the gen of pfn, read together (one MULTI on {mem}); the
   * gen tells a frame freed and reused since the caller looked apart.
   */
  async pageCounts(pfn: number): Promise<{ ref: number; map: number; gen: number }> {
    const f = String(pfn);
    const r = await this.redis.multi().hget(MEM.ref, f).hget(MEM.map, f).hget(MEM.gen, f).exec();
    const v = (i: number): number => Number((r?.[i]?.[1] as string | null) ?? 0);
    return { ref: v(0), map: v(1), gen: v(2) };
  }

  async zapPteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    intent?: IntentRef,
  ): Promise<{ cleared: Array<{ vpn: number } & Pte>; cpumask: string[] } | null> {
    const k = procKeys(pid);
    const r = (await this.run(
      'zapPteRange',
      [k.ptl(lock), k.ptlmax, k.pte, k.cpumask, intent ? k.intent(intent.id) : k.mm],
      [value, lock, token, s, e, intent?.owner ?? ''],
    )) as Reply;
    if (r[0] !== 'OK') return null;
    const cleared = (r[1] as string[]).map((c) => {
      const i = c.indexOf(':');
      return { vpn: Number(c.slice(0, i)), ...parsePte(c.slice(i + 1)) };
    });
    return { cleared, cpumask: (r[2] as string[]).map(String) };
  }

  /** Indexes of the page-table pages a process has (the PMD entries in use). */
  async pmds(pid: number): Promise<number[]> {
    return (await this.redis.smembers(procKeys(pid).pmds)).map(Number).sort((a, b) => a - b);
  }

  async walk(pid: number, vpn: number, agent: string): Promise<Pte | null> {
    const k = procKeys(pid);
    const r = (await this.run('walk', [k.pte, k.cpumask], [vpn, agent])) as string | null;
    return r ? parsePte(r) : null;
  }

  async cpumaskClear(pid: number, agent: string): Promise<void> {
    await this.run('cpumaskClear', [procKeys(pid).cpumask], [agent]);
  }

  /** Put agent (back) into mm_cpumask. */
  async cpumaskAdd(pid: number, agent: string): Promise<void> {
    await this.redis.sadd(procKeys(pid).cpumask, agent);
  }

  /** mm_cpumask of pid, sorted (tests and diagnostics). */
  async cpumask(pid: number): Promise<string[]> {
    return (await this.redis.smembers(procKeys(pid).cpumask)).sort();
  }

  /**
   * The PT-lock and mmap_sem leases of pid held right now. Every PT lock ever granted is a
   * field of :ptlmax (the fencing side), so its names say which lease keys to look at; the
   * lookup itself is one script on the {p:<pid>} slot (Redis Cluster safe).
   */
  async heldLocks(pid: number): Promise<HeldLease[]> {
    const k = procKeys(pid);
    const names = ['mmap_sem', ...(await this.redis.hkeys(k.ptlmax)).sort()];
    const keys = names.map((n) => (n === 'mmap_sem' ? k.semW : k.ptl(n)));
    const r = (await this.run('heldLocks', keys, names)) as Array<string | number>;
    const out: HeldLease[] = [];
    for (let i = 0; i + 2 < r.length; i += 3) {
      const v = String(r[i + 1]);
      const bar = v.lastIndexOf('|');
      out.push({
        lock: String(r[i]),
        pid,
        owner: v.slice(0, bar),
        token: Number(v.slice(bar + 1)),
        ttlMs: Math.max(0, Number(r[i + 2])),
      });
    }
    // mmap_sem's readers (each a member of :sem:r)
    const readers = (await this.run('semReaders', [k.semR], [])) as Array<string | number>;
    for (let i = 0; i + 1 < readers.length; i += 2) {
      const v = String(readers[i]);
      const bar = v.lastIndexOf('|');
      out.push({
        lock: 'mmap_sem',
        pid,
        owner: v.slice(0, bar),
        token: Number(v.slice(bar + 1)),
        ttlMs: Math.max(0, Number(readers[i + 1])),
      });
    }
    return out;
  }

  /** heldLocks() of every address space: what is still locked anywhere in the lab. */
  async allHeldLocks(): Promise<HeldLease[]> {
    const per = await Promise.all((await this.processes()).map((pid) => this.heldLocks(pid)));
    return per.flat();
  }

  /** get_page() for each frame: a new mapping ('map', fork) or a pin ('ref'); → pfns no longer live. */
  async getPages(
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref',
  ): Promise<number[]> {
    if (pages.length === 0) return [];
    const r = (await this.run('getPages', MEM_KEYS, [kind, '', ...pairArgs(pages)])) as Reply;
    return (r[1] as number[]).map(Number);
  }

  /**
   * getPages as batch (fork's chunk <id>#c<n>), applied once: → pfns no longer live, 'DONE' if
   * it was applied already, 'UNDONE' if it was rolled back (batchUndo) first.
   */
  async getPagesBatch(
    pages: ReadonlyArray<{ pfn: number; gen: number }>,
    kind: 'map' | 'ref',
    batch: string,
  ): Promise<number[] | 'DONE' | 'UNDONE'> {
    const r = (await this.run('getPages', MEM_KEYS, [kind, batch, ...pairArgs(pages)])) as Reply;
    if (r[0] === 'DONE' || r[0] === 'UNDONE') return r[0];
    return (r[1] as number[]).map(Number);
  }

  /** The VMA covering vpn, if any (a read: find_vma()). */
  async findVma(pid: number, vpn: number): Promise<Vma | null> {
    const r = await this.redis.zrevrangebyscore(procKeys(pid).vma, vpn, '-inf', 'LIMIT', 0, 1);
    const v = r[0] ? parseVma(r[0]) : null;
    return v && vpn < v.end ? v : null;
  }

  async vmas(pid: number): Promise<Vma[]> {
    return (await this.redis.zrange(procKeys(pid).vma, 0, -1)).map(parseVma);
  }

  async mmState(pid: number): Promise<{ state: string | null; mmapNext: number }> {
    const [state, next] = await this.redis.hmget(procKeys(pid).mm, 'state', 'mmapNext');
    return { state, mmapNext: Number(next ?? 0) };
  }

  async vmaProtect(
    pid: number,
    semValue: string,
    s: number,
    e: number,
    prot: Prot,
  ): Promise<'OK' | 'ESTALE' | 'ENOMEM'> {
    const k = procKeys(pid);
    const r = (await this.run('vmaProtect', [k.vma, k.semW], [semValue, s, e, prot])) as Reply;
    return r[0] as 'OK' | 'ESTALE' | 'ENOMEM';
  }

  async changePteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    prot: Prot,
  ): Promise<{ changed: number; downgraded: number; cpumask: string[] } | null> {
    const k = procKeys(pid);
    const r = (await this.run(
      'changePteRange',
      [k.ptl(lock), k.ptlmax, k.pte, k.cpumask],
      [value, lock, token, s, e, prot],
    )) as Reply;
    if (r[0] !== 'OK') return null;
    return {
      changed: Number(r[1]),
      downgraded: Number(r[2]),
      cpumask: (r[3] as string[]).map(String),
    };
  }

  async vmaMove(
    pid: number,
    semValue: string,
    s: number,
    pages: number,
    newPages: number,
    intent?: IntentRef,
  ): Promise<{ r: 'OK'; n: number } | { r: 'ESTALE' | 'EFAULT' | 'ENOMEM' }> {
    const k = procKeys(pid);
    const r = (await this.run(
      'vmaMove',
      [k.mm, k.vma, k.semW, intent ? k.intent(intent.id) : k.mm],
      [semValue, s, pages, newPages, TASK_SIZE / PAGE_SIZE, intent?.owner ?? ''],
    )) as Reply;
    if (r[0] === 'OK') return { r: 'OK', n: Number(r[1]) };
    return { r: r[0] as 'ESTALE' | 'EFAULT' | 'ENOMEM' };
  }

  async movePtes(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    delta: number,
  ): Promise<{ moved: number; cpumask: string[] } | 'ESRCH' | null> {
    const k = procKeys(pid);
    const r = (await this.run(
      'movePtes',
      [k.ptl(lock), k.ptlmax, k.pte, k.pmds, k.cpumask, k.mm],
      [value, lock, token, s, e, delta],
    )) as Reply;
    if (r[0] === 'ESRCH') return 'ESRCH';
    if (r[0] !== 'OK') return null;
    return { moved: Number(r[1]), cpumask: (r[2] as string[]).map(String) };
  }

  async copyPteRange(
    pid: number,
    lock: string,
    value: string,
    token: number,
    s: number,
    e: number,
    cow: boolean,
    intent: { id: string; owner: string },
  ): Promise<{
    child: Array<{ vpn: number; pte: Pte }>;
    writeProtected: number;
    cpumask: string[];
    /** the chunk of fork's intent record these frames were recorded as */
    chunk: number;
  } | null> {
    const k = procKeys(pid);
    const r = (await this.run(
      'copyPteRange',
      [k.ptl(lock), k.ptlmax, k.pte, k.cpumask, k.intent(intent.id)],
      [value, lock, token, s, e, cow ? 1 : 0, intent.owner],
    )) as Reply;
    if (r[0] !== 'OK') return null;
    const child = (r[1] as string[]).map((c) => {
      const i = c.indexOf(':');
      return { vpn: Number(c.slice(0, i)), pte: parsePte(c.slice(i + 1)) };
    });
    return {
      child,
      writeProtected: Number(r[2]),
      cpumask: (r[3] as string[]).map(String),
      chunk: Number(r[4]),
    };
  }

  /** A new pid (for a forked child: recorded in fork's intent before the child exists). */
  async nextPid(): Promise<number> {
    return this.redis.incr(GLOBAL.nextPid);
  }

  /** dup_mm(): the child pid, being forked by forker, with the parent's VMA list; false if it exists. */
  async forkChild(pid: number, vmas: Vma[], mmapNext: number, forker: string): Promise<boolean> {
    const k = procKeys(pid);
    const r = await this.run(
      'forkChild',
      [k.mm, k.vma],
      [mmapNext, forker, ...vmas.map(formatVma)],
    );
    return Number(r) === 1;
  }

  /** The fork is complete: the child comes alive (false: not forker's child). */
  async forkDone(pid: number, forker: string): Promise<boolean> {
    return Number(await this.run('forkDone', [procKeys(pid).mm], [forker])) === 1;
  }

  /** Roll back the child of a fork that did not complete: 'ALIVE' if it had completed. */
  async forkUndo(pid: number, forker: string): Promise<'UNDONE' | 'ALIVE'> {
    const k = procKeys(pid);
    const r = (await this.run('forkUndo', [k.mm, k.vma, k.pte, k.pmds], [forker])) as Reply;
    return r[0] === 'ALIVE' ? 'ALIVE' : 'UNDONE';
  }

  /** The child's PTEs, written by its forker; false when the child is no longer forker's. */
  async setPtes(
    pid: number,
    forker: string,
    ptes: Array<{ vpn: number; pte: Pte }>,
  ): Promise<boolean> {
    if (ptes.length === 0) return true;
    const k = procKeys(pid);
    const n = await this.run(
      'setPtes',
      [k.pte, k.pmds, k.mm],
      [forker, ...ptes.map((p) => `${p.vpn}:${formatPte(p.pte)}`)],
    );
    return Number(n) >= 0;
  }

  /**
   * exit_mmap() begins: pid is exiting (every later fault, mmap_sem acquire, charge, move on it
   * refuses). → 'began'; 'again' when it was exiting already (an exit that failed half way);
   * 'ESRCH' when it is gone or never was.
   */
  async mmExitBegin(pid: number): Promise<'began' | 'again' | 'ESRCH'> {
    const r = (await this.run('mmExitBegin', [procKeys(pid).mm], [])) as Reply;
    if (r[0] !== 'OK') return 'ESRCH';
    return Number(r[1]) === 1 ? 'began' : 'again';
  }

  /**
   * exit_mmap() ends: pid is dead, its VMAs and page-table pages gone. → 'ended' (by this call),
   * 'dead' (already), { ptes } when PTEs are left (nothing changed), 'ESRCH' when not exiting.
   */
  async mmExit(pid: number): Promise<'ended' | 'dead' | 'ESRCH' | { ptes: number }> {
    const k = procKeys(pid);
    const r = (await this.run('mmExit', [k.mm, k.vma, k.pte, k.pmds], [])) as Reply;
    if (r[0] === 'AGAIN') return { ptes: Number(r[1]) };
    if (r[0] === 'ESRCH') return 'ESRCH';
    return Number(r[1]) === 1 ? 'ended' : 'dead';
  }

  /** Page-table snapshot of a process: vpn → PTE (tests and diagnostics). */
  async pageTable(pid: number): Promise<Map<number, Pte>> {
    const all = await this.redis.hgetall(procKeys(pid).pte);
    return new Map(Object.entries(all).map(([vpn, v]) => [Number(vpn), parsePte(v)]));
  }

  /** The next unused CPU id of this lab (a CPU agent started without MMLAB_CPU_ID). */
  async claimCpuId(): Promise<number> {
    return (await this.redis.incr(GLOBAL.nextCpu)) - 1;
  }

  async processes(): Promise<number[]> {
    const n = Number((await this.redis.get(GLOBAL.nextPid)) ?? 0);
    return Array.from({ length: n }, (_, i) => i + 1);
  }
}
