/**
 * Typed access to the lab's state in Redis: the one facade the apps import. It is composed of
 * the rooms, one hash tag each (keys.ts): StoreBase (the connection and Store.call, the typed
 * script call of boundary.ts) → MemStore ({mem}, mem/store.ts) → MmStore ({p:<pid>},
 * mm/store.ts) → Store: notifier subscribers ({sub}), mm replicas ({mm}), the lab's counters
 * ({g}), and the few steps that touch two rooms one after the other (never in one script).
 */
import { MMAP_BASE, MnCallback, PAGE_SIZE } from '@mmlab/protocol';
import { GLOBAL, crashKey, mmKeys, procKeys, subKeys } from './keys';
import { MmStore, type HeldLease } from './mm/store';

export { connectRedis } from './store-base';
export * from './mem/store';
export * from './mm/store';

export class Store extends MmStore {
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

  async processes(): Promise<number[]> {
    const n = Number((await this.redis.get(GLOBAL.nextPid)) ?? 0);
    return Array.from({ length: n }, (_, i) => i + 1);
  }
}
