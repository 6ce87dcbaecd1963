/**
 * Faults on the rest of the lab: the Redis and NATS servers killed and restarted or paused,
 * a CPU paused while mm needs its TLB shootdown, and one paused past its liveness lease. The
 * lab must lose nothing it acknowledged, reconnect on its own, leave no lock held, and never
 * let a CPU use a TLB entry mm has given up on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE, type EventOf, type TraceEvent } from '@mmlab/protocol';
import { checkInvariants } from '@mmlab/checker';
import { procKeys, subKeys } from '@mmlab/model';
import { type TestLab, codeOf, startTestLab, until } from '@mmlab/testing';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One page a load worker writes: the last value acknowledged, and a write that was not. */
interface PageLog {
  addr: number;
  cpu: number;
  acked: number;
  /** a write that failed (timed out): it may still land, so the page is written no more */
  unacked: number | null;
}

const EVERY_INSTANCE = ['cpu0', 'cpu1', 'hca0', 'mm-0', 'mm-1', 'observer'];

describe('NATS and Redis restarted or paused under load', () => {
  let t: TestLab | undefined;
  let pid: number;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 2,
        mmReplicas: 2,
        subscribers: [{ name: 'hca0', kind: 'hca' }],
        leaseTtlMs: 3000,
        env: { MMLAB_RPC_TIMEOUT_MS: '500' },
      },
      { rpcTimeoutMs: 20_000 },
    );
    pid = (await t.rpc.call('processCreate', {})).pid;
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** Fresh pages for cpu0 and cpu1 (perCpu each). */
  async function pagesFor(perCpu: number): Promise<PageLog[]> {
    const { addr } = await t!.rpc.call('mmap', { pid, pages: 2 * perCpu, prot: 'rw' });
    return Array.from({ length: 2 * perCpu }, (_, i) => ({
      addr: addr + i * PAGE_SIZE,
      cpu: i % 2,
      acked: 0,
      unacked: null,
    }));
  }

  /**
   * cpu0 and cpu1 each write their pages round robin and read each write back. A write that
   * fails makes its page "unacked" (never written again: the write may land late); a read that
   * returns something else than the acknowledged write just before it is a mismatch.
   */
  function load(pages: PageLog[]) {
    let running = true;
    let acks = 0;
    const mismatches: string[] = [];
    const worker = async (cpu: number) => {
      let v = (cpu + 1) * 1_000_000;
      while (running) {
        const mine = pages.filter((p) => p.cpu === cpu && p.unacked === null);
        if (mine.length === 0) return;
        for (const p of mine) {
          if (!running) break;
          const value = ++v;
          const w = { pid, addr: p.addr, op: 'write' as const, value };
          try {
            await t!.rpc.call('cpuAccess', w, { id: cpu, timeoutMs: 1500 });
          } catch {
            p.unacked = value;
            continue;
          }
          p.acked = value;
          acks++;
          try {
            const r = await t!.rpc.call(
              'cpuAccess',
              { pid, addr: p.addr, op: 'read' },
              { id: cpu, timeoutMs: 1500 },
            );
            if (r.value !== value) mismatches.push(`cpu${cpu} read ${r.value}, wrote ${value}`);
          } catch {
            // a read may fail during the outage; it changes nothing
          }
        }
      }
    };
    const done = Promise.all([worker(0), worker(1)]);
    return {
      acks: () => acks,
      stop: async () => {
        running = false;
        await done;
        return mismatches;
      },
    };
  }

  /** Every page reads back its last acknowledged write (or its one unacknowledged one). */
  async function verify(pages: PageLog[]): Promise<void> {
    for (const p of pages) {
      const r = await t!.rpc.call('cpuAccess', { pid, addr: p.addr, op: 'read' }, { id: p.cpu });
      const allowed = [p.acked, ...(p.unacked === null ? [] : [p.unacked])];
      expect(allowed, `page 0x${p.addr.toString(16)} read ${r.value}`).toContain(r.value);
    }
  }

  /** Faults still served: a new mapping written by one CPU and read by the other. */
  async function servesFaults(value: number): Promise<void> {
    const { addr } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    const w = await t!.rpc.call('cpuAccess', { pid, addr, op: 'write', value }, { id: 0 });
    expect(w.faults).toBeGreaterThan(0);
    const r = await t!.rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 1 });
    expect(r.value).toBe(value);
    expect(await t!.rpc.call('munmap', { pid, addr, pages: 1 })).toEqual({ zapped: 1, freed: 1 });
  }

  /** Once idle, meminfo names no PT lock or mmap_sem held (a lease left behind expires). */
  async function noLockHeld(): Promise<void> {
    await until(
      async () => (await t!.rpc.call('meminfo', {})).locks.length === 0,
      'every PT-lock and mmap_sem lease to be released or expire',
    );
  }

  async function underLoad(fault: () => Promise<void>, value: number): Promise<void> {
    const pages = await pagesFor(6);
    const l = load(pages);
    await until(() => l.acks() >= 12, 'the load to run');
    await fault();
    const after = l.acks();
    await until(() => l.acks() >= after + 12, 'the load to carry on after the fault');
    expect(await l.stop()).toEqual([]);
    await verify(pages);
    await servesFaults(value);
    await noLockHeld();
    const first = pages[0].addr;
    await t!.rpc.call('munmap', { pid, addr: first, pages: pages.length });
  }

  it('(a) redis-server killed (-9) and started again: nothing acknowledged is lost', async () => {
    const redis = t!.lab.server('redis')!;
    const pidBefore = redis.proc.pid;
    await underLoad(async () => {
      await t!.lab.kill('redis');
      expect(redis.running).toBe(false);
      await sleep(300);
      await t!.lab.start('redis');
    }, 41);
    expect(redis.proc.pid).not.toBe(pidBefore);
    expect(t!.lab.targets).toEqual([
      'observer',
      'mm-0',
      'mm-1',
      'cpu0',
      'cpu1',
      'hca0',
      'nats',
      'redis',
    ]);
    // The scripts are gone from the new server's cache (NOSCRIPT): they ran again all the same.
    expect((await t!.rpc.call('meminfo', {})).frames).toBe(64);
  });

  it('(b) nats-server killed and started again: every instance reconnects and serves', async () => {
    await underLoad(async () => {
      await t!.lab.kill('nats');
      await sleep(300);
      await t!.lab.start('nats');
      const pongs = await t!.rpc.gather('ping', {}, { expect: 6, timeoutMs: 5000 });
      expect(pongs.map((p) => p.instance).sort()).toEqual(EVERY_INSTANCE);
    }, 42);
  });

  it('(c) NATS and Redis paused (SIGSTOP) and resumed: the lab carries on', async () => {
    await underLoad(async () => {
      t!.lab.signal('nats', 'SIGSTOP');
      t!.lab.signal('redis', 'SIGSTOP');
      await sleep(800);
      t!.lab.signal('redis', 'SIGCONT');
      t!.lab.signal('nats', 'SIGCONT');
    }, 43);
    const pongs = await t!.rpc.gather('ping', {}, { expect: 6, timeoutMs: 5000 });
    expect(pongs.map((p) => p.instance).sort()).toEqual(EVERY_INSTANCE);
  });

  it('meminfo names the PT-lock and mmap_sem leases held, with their owner and TTL left', async () => {
    const store = t!.store;
    const ptl = await store.ptlLock(pid, 'ptl:7', 'mm-9/op-1', 60_000);
    const sem = await store.semWriteLock(pid, 'mm-9/op-2', 60_000);
    if (!ptl.ok || sem === 'ESRCH' || !sem.ok) throw new Error('locks not granted');
    const { locks } = await t!.rpc.call('meminfo', {});
    expect(locks.map(({ ttlMs, ...l }) => ({ ...l, ttlLeft: ttlMs > 0 }))).toEqual([
      { lock: 'mmap_sem', pid, owner: 'mm-9/op-2', token: sem.token, ttlLeft: true },
      { lock: 'ptl:7', pid, owner: 'mm-9/op-1', token: ptl.token, ttlLeft: true },
    ]);
    const k = procKeys(pid);
    expect(await store.leaseRelease(k.ptl('ptl:7'), `mm-9/op-1|${ptl.token}`)).toBe(true);
    expect(await store.semWriteUnlock(pid, `mm-9/op-2|${sem.token}`)).toBe(true);
    expect((await t!.rpc.call('meminfo', {})).locks).toEqual([]);
  });

  it('refuses a target the lab does not have, with a typed error', async () => {
    expect(await codeOf(t!.lab.kill('nosuch'))).toBe('EINVAL');
    expect(() => t!.lab.signal('nosuch', 'SIGSTOP')).toThrow(/no target nosuch/);
  });
});

describe('a CPU that does not answer its TLB shootdown', () => {
  let t: TestLab | undefined;
  let pid: number;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 2,
        mmReplicas: 1,
        observer: false,
        // the CPU liveness lease (and the PT-lock leases): 2.5 s
        leaseTtlMs: 2500,
        // an impatient mm would give up on a CPU after 200 ms
        env: { MMLAB_RPC_TIMEOUT_MS: '200' },
      },
      { rpcTimeoutMs: 20_000 },
    );
    pid = (await t.rpc.call('processCreate', {})).pid;
  });
  afterAll(async () => {
    await t?.stop();
  });

  const access = (cpu: number, addr: number, op: 'read' | 'write', value?: number) =>
    t!.rpc.call('cpuAccess', { pid, addr, op, value }, { id: cpu });

  /** A new page cpu0 has in its TLB (it wrote it): cpu0 is in mm_cpumask. */
  async function pageInCpu0Tlb(value: number): Promise<number> {
    const { addr } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await access(0, addr, 'write', value);
    expect((await access(0, addr, 'read')).tlbHit).toBe(true);
    expect(await t!.store.cpumask(pid)).toContain('cpu0');
    return addr;
  }

  /** munmap addr; resolves with the op id once mm holds the PT lock for it. */
  function munmapTracked(addr: number) {
    const from = t!.trace.events.length;
    const state = { done: false };
    const reply = t!.rpc.call('munmap', { pid, addr, pages: 1 }).finally(() => {
      state.done = true;
    });
    const locked = t!.trace.next<EventOf<'ptl.acquire'>>(
      (e) => e.kind === 'ptl.acquire' && e.pid === pid && t!.trace.events.indexOf(e) >= from,
    );
    return { reply, locked, state };
  }

  it('(d) a paused CPU delays the munmap until it acks; no stale access after', async () => {
    const from = t!.trace.events.length;
    const addr = await pageInCpu0Tlb(7);
    t!.lab.signal('cpu0', 'SIGSTOP');
    const m = munmapTracked(addr);
    const { op } = await m.locked;
    // Time for an impatient mm to give up on cpu0 several times over (not an assertion).
    await sleep(1000);
    const pendingWhilePaused = !m.state.done;
    t!.lab.signal('cpu0', 'SIGCONT');
    expect(await m.reply).toEqual({ zapped: 1, freed: 1 });
    expect(pendingWhilePaused, 'munmap must wait for the paused CPU').toBe(true);
    // cpu0 did the shootdown of that munmap itself.
    await t!.trace.next(
      (e) => e.kind === 'tlb.flush' && e.instance === 'cpu0' && e.op === op && e.entries === 1,
    );
    // The frame is reused by cpu1; cpu0's old address is gone, not a window onto the new page.
    const { addr: other } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await access(1, other, 'write', 99);
    expect(await codeOf(access(0, addr, 'read'))).toBe('SIGSEGV');
    expect((await access(0, other, 'read')).value).toBe(99);
    await t!.rpc.call('munmap', { pid, addr: other, pages: 1 });
    const events = (await t!.settled()).slice(from);
    const bad = checkInvariants(events, { softlockupMs: 60_000 })
      .filter((v) => !v.ok)
      .map((v) => `${v.name}: ${v.violations.map((x) => x.message).join('; ')}`);
    expect(bad).toEqual([]);
  });

  it('(e) a CPU paused past its lease is taken offline and flushes its whole TLB on resume', async () => {
    const from = t!.trace.events.length;
    // A page no shootdown will touch: only the whole-TLB flush on resume can drop it.
    const keep = await pageInCpu0Tlb(5);
    const addr = await pageInCpu0Tlb(8);
    t!.lab.signal('cpu0', 'SIGSTOP');
    const m = munmapTracked(addr);
    // mm waits for cpu0's lease to expire, then goes on without it.
    expect(await m.reply).toEqual({ zapped: 1, freed: 1 });
    expect(await t!.store.redis.exists(subKeys('cpu0').live)).toBe(0);
    expect(await t!.store.cpumask(pid)).not.toContain('cpu0');
    expect(await t!.store.isFenced('cpu0')).toBe(true);
    // The frame cpu0 still maps is reused meanwhile.
    const { addr: other } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await access(1, other, 'write', 55);
    t!.lab.signal('cpu0', 'SIGCONT');
    // Its old address faults (no stale hit), the new page reads what cpu1 wrote.
    expect(await codeOf(access(0, addr, 'read'))).toBe('SIGSEGV');
    expect((await access(0, other, 'read')).value).toBe(55);
    expect(await access(0, keep, 'read')).toMatchObject({ value: 5, tlbHit: false });
    await until(
      () =>
        t!.trace.events.some(
          (e: TraceEvent) =>
            e.kind === 'tlb.flush' &&
            e.instance === 'cpu0' &&
            e.op === 'cpu0:lease-lost' &&
            e.entries >= 1,
        ),
      'cpu0 to flush its whole TLB',
    );
    expect(await t!.store.isFenced('cpu0')).toBe(false);
    expect(await t!.store.redis.exists(subKeys('cpu0').live)).toBe(1);
    expect(await t!.store.redis.sismember(procKeys(pid).cpumask, 'cpu0')).toBe(1);
    await t!.rpc.call('munmap', { pid, addr: other, pages: 1 });
    const events = (await t!.settled()).slice(from);
    const verdicts = checkInvariants(events, { softlockupMs: 60_000 });
    const stale = verdicts.find((v) => v.name === 'no-stale-access')!;
    expect(stale.violations.map((v) => v.message)).toEqual([]);
    expect(stale.checked).toBeGreaterThan(0);
    expect(verdicts.find((v) => v.name === 'coherent-reads')!.ok).toBe(true);
    expect((await t!.rpc.call('meminfo', {})).locks).toEqual([]);
  });

  it('(f) a killed CPU is taken offline without waiting out its lease; restarted, it comes back clean', async () => {
    const { addr } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await access(1, addr, 'write', 3);
    expect(await t!.store.cpumask(pid)).toContain('cpu1');
    await t!.lab.kill('cpu1');
    // Nobody listens for cpu1 any more: the munmap does not wait for its lease to run out.
    expect(await t!.rpc.call('munmap', { pid, addr, pages: 1 })).toEqual({ zapped: 1, freed: 1 });
    expect(await t!.store.redis.exists(subKeys('cpu1').live)).toBe(1);
    expect(await t!.store.isFenced('cpu1')).toBe(true);
    expect(await t!.store.cpumask(pid)).not.toContain('cpu1');
    await t!.lab.start('cpu1');
    expect(await t!.store.isFenced('cpu1')).toBe(false);
    const { addr: fresh } = await t!.rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    await access(1, fresh, 'write', 4);
    expect((await access(0, fresh, 'read')).value).toBe(4);
    await t!.rpc.call('munmap', { pid, addr: fresh, pages: 1 });
  });
});
