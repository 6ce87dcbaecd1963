/**
 * Typed access to the lab's state in Redis: the one facade the apps import. It is composed of
 * the rooms, one hash tag each (keys.ts): StoreBase (the connection and Store.call, the typed
 * script call of boundary.ts) → MemStore ({mem}, mem/store.ts) → MmStore ({p:<pid>},
 * mm/store.ts) → Store: notifier subscribers ({sub}), mm replicas ({mm}), the lab's counters
 * ({g}), and the few steps that touch two rooms one after the other (never in one script).
 */
import { MMAP_BASE, MmlabError, MnCallback, PAGE_SIZE } from '@mmlab/protocol';
import { GLOBAL, MM_INDEX, crashKey, mmKeys, procKeys, subKeys } from './keys';
import {
  type InvClaim,
  type IntentRec,
  MmStore,
  type HeldLease,
  type OpenInvalidation,
  checkInvRecord,
} from './mm/store';

export { connectRedis } from './store-base';
export * from './mem/store';
export * from './mm/store';

export class Store extends MmStore {
  /**
   * incarnation → the pids this store indexed for it ({mm}:invpids, invIndex): each is indexed
   * once per incarnation, not per invalidation. An entry stays true for as long as the
   * incarnation lives: the reaper drops a pid from the index only after fencing the incarnation
   * off it (invFence), and then invOpen/invClaim/intentOpen/intentClaim refuse it there anyway.
   */
  private readonly indexed = new Map<string, Set<number>>();

  /**
   * Index pid for incarnation (once per store, incarnation and pid): see keys.ts :invpids.
   * A pid no process ever had is not indexed (ESRCH): a request on a pid nobody created must
   * leave nothing behind (the index would keep it until the incarnation dies).
   */
  async invIndex(incarnation: string, pid: number): Promise<void> {
    const mine = this.indexed.get(incarnation);
    if (mine?.has(pid)) return;
    if (!(await this.redis.hexists(procKeys(pid).mm, 'state')))
      throw new MmlabError('ESRCH', `no process ${pid}`);
    const r = await this.call(
      'invIndex',
      {
        invowners: MM_INDEX.invowners,
        invpids: mmKeys(incarnation).invpids,
        dead: MM_INDEX.dead,
      },
      { incarnation, pid },
    );
    if (r.r === 'DEAD')
      throw new MmlabError(
        'ESTALE',
        `${incarnation} was found dead (its index is final): nothing may be indexed on pid ${pid}`,
      );
    if (mine) mine.add(pid);
    else this.indexed.set(incarnation, new Set([pid]));
  }

  /**
   * A dead incarnation, fenced off pid and owning nothing there: drop pid from its index
   * (invUnindex). → the pids left, or 'ALIVE' when its lease is back (nothing dropped).
   */
  async invUnindex(incarnation: string, pid: number): Promise<number | 'ALIVE'> {
    const k = mmKeys(incarnation);
    const r = await this.call(
      'invUnindex',
      { invowners: MM_INDEX.invowners, invpids: k.invpids, live: k.live },
      { incarnation, pid },
    );
    return r.r === 'OK' ? r.left : 'ALIVE';
  }

  /**
   * A dead incarnation: mark it (invIndex refuses it from now on) and read its index in the same
   * script (mmMarkDead): → the pids, ascending — all it may ever own anything or have installed
   * a frame of its batch on.
   */
  async mmMarkDead(incarnation: string): Promise<number[]> {
    const pids = await this.call(
      'mmMarkDead',
      { dead: MM_INDEX.dead, invpids: mmKeys(incarnation).invpids },
      { incarnation },
    );
    return pids.map(Number).sort((a, b) => a - b);
  }

  /** The incarnations that have an index ({mm}:invowners), sorted. */
  async invOwners(): Promise<string[]> {
    return (await this.redis.smembers(MM_INDEX.invowners)).sort();
  }

  /** The pids indexed for incarnation ({mm}:invpids:<it>), ascending. */
  async invPids(incarnation: string): Promise<number[]> {
    return (await this.redis.smembers(mmKeys(incarnation).invpids))
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** Record r, its pid indexed for its owner first (one more call the first time only). */
  override async invOpen(r: Omit<OpenInvalidation, 'state'>): Promise<void> {
    checkInvRecord(r); // bad input: nothing written, not even the index
    await this.invIndex(r.owner, r.pid);
    return super.invOpen(r);
  }

  /** Move the end of inv to `to`, pid indexed for `to` first (a no-op for the sender's own). */
  override async invClaim(pid: number, inv: string, from: string, to: string): Promise<InvClaim> {
    if (!to || to.includes('|')) return super.invClaim(pid, inv, from, to); // EINVAL there
    await this.invIndex(to, pid);
    return super.invClaim(pid, inv, from, to);
  }

  /** Record an intent, its pid indexed for its owner first. */
  override async intentOpen(pid: number, id: string, owner: string, rec: IntentRec) {
    await this.invIndex(owner, pid);
    return super.intentOpen(pid, id, owner, rec);
  }

  /** Take an intent over, its pid indexed for `to` first. */
  override async intentClaim(pid: number, id: string, from: string, to: string) {
    await this.invIndex(to, pid);
    return super.intentClaim(pid, id, from, to);
  }

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

  /** Renew (or take) the liveness lease of an mm incarnation. */
  async mmAlive(incarnation: string, ttlMs: number): Promise<void> {
    await this.redis.set(mmKeys(incarnation).live, String(Date.now()), 'PX', ttlMs);
  }

  async mmIsAlive(incarnation: string): Promise<boolean> {
    return (await this.redis.exists(mmKeys(incarnation).live)) === 1;
  }

  /** Which of these incarnations hold their liveness lease: one call (MGET, one slot: {mm}). */
  async mmAliveMany(incarnations: readonly string[]): Promise<Map<string, boolean>> {
    if (incarnations.length === 0) return new Map();
    const v = await this.redis.mget(incarnations.map((w) => mmKeys(w).live));
    return new Map(incarnations.map((w, i) => [w, v[i] !== null]));
  }

  /** An mm incarnation going away cleanly: its open invalidations need not wait out the TTL. */
  async mmLivenessDrop(incarnation: string): Promise<void> {
    await this.redis.del(mmKeys(incarnation).live);
  }

  async mmCreate(): Promise<number> {
    const pid = await this.redis.incr(GLOBAL.nextPid);
    await this.call('mmCreate', { mm: procKeys(pid).mm }, { mmapBase: MMAP_BASE / PAGE_SIZE });
    return pid;
  }

  /** heldLocks() of every address space: what is still locked anywhere in the lab. */
  async allHeldLocks(): Promise<HeldLease[]> {
    const per = await Promise.all((await this.processes()).map((pid) => this.heldLocks(pid)));
    return per.flat();
  }

  /** A new pid (for a forked child: recorded in fork's intent before the child exists). */
  async nextPid(): Promise<number> {
    return this.redis.incr(GLOBAL.nextPid);
  }

  /** Fire the crash point armed with token, once in the lab (SET NX, kept a minute): → won. */
  async crashFire(token: string, value: string): Promise<boolean> {
    return (await this.redis.set(crashKey(token), value, 'PX', 60_000, 'NX')) === 'OK';
  }

  /** The next unused CPU id of this lab (a CPU agent started without MMLAB_CPU_ID). */
  async claimCpuId(): Promise<number> {
    return (await this.redis.incr(GLOBAL.nextCpu)) - 1;
  }

  /**
   * kswapd's lease ({g}:kswapd "<incarnation>", PX ttl): one kswapd reclaims for the zone at a
   * time. Taken when free, or renewed when owner holds it already. → whether owner holds it.
   */
  async kswapdLock(owner: string, ttlMs: number): Promise<boolean> {
    if ((await this.redis.set(GLOBAL.kswapd, owner, 'PX', ttlMs, 'NX')) === 'OK') return true;
    if ((await this.redis.get(GLOBAL.kswapd)) !== owner) return false;
    await this.redis.pexpire(GLOBAL.kswapd, ttlMs);
    return true;
  }

  /** kswapd's lease given back (only by its owner). */
  async kswapdUnlock(owner: string): Promise<void> {
    if ((await this.redis.get(GLOBAL.kswapd)) === owner) await this.redis.del(GLOBAL.kswapd);
  }

  async processes(): Promise<number[]> {
    const n = Number((await this.redis.get(GLOBAL.nextPid)) ?? 0);
    return Array.from({ length: n }, (_, i) => i + 1);
  }
}
