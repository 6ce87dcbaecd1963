/**
 * PT locks are leases: an mm replica that stops or dies while holding one loses it when the
 * TTL runs out, the rest of the lab carries on, and a holder that comes back with a stale
 * fencing token has its page-table write refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EventOf, PAGE_SIZE } from '@mmlab/protocol';
import { type Store, procKeys } from '@mmlab/model';
import type { RpcClient } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, startTestLab, until } from '@mmlab/testing';

describe('a PT-lock holder that stops or dies', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;
  let pid: number;

  beforeAll(async () => {
    t = await startTestLab(
      { mode: 'patched', frames: 64, cpus: 1, mmReplicas: 2, leaseTtlMs: 800, observer: false },
      { rpcTimeoutMs: 20_000 },
    );
    ({ lab, rpc, store, trace } = t);
    pid = (await rpc.call('processCreate', {})).pid;
  });
  afterAll(async () => {
    await t?.stop();
  });

  async function populated(pages: number): Promise<number> {
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    for (let p = 0; p < pages; p++)
      await rpc.call(
        'cpuAccess',
        { pid, addr: addr + p * PAGE_SIZE, op: 'write', value: p + 1 },
        { id: 0 },
      );
    return addr;
  }

  /**
   * Arm a stall on mm-0 and send munmaps until mm-0 (not mm-1: the queue group picks) is the
   * one that takes one; it then sleeps holding the PT lock. Returns the stalled munmap's
   * promise and its lock.
   */
  async function stallMm0InMunmap(stallMs: number, replyTimeoutMs: number) {
    await rpc.call('mmDebug', { stallUnderPtlMs: stallMs }, { id: 'mm-0' });
    for (let attempt = 0; attempt < 50; attempt++) {
      const addr = await populated(2);
      const from = trace.events.length;
      const munmap = rpc
        .call('munmap', { pid, addr, pages: 2 }, { timeoutMs: replyTimeoutMs })
        .then(
          () => 'ok',
          (e: unknown) => e,
        );
      const stalled = trace.next<EventOf<'debug.stall'>>(
        (e) => e.kind === 'debug.stall' && e.instance === 'mm-0' && trace.events.indexOf(e) >= from,
      );
      const first = await Promise.race([munmap.then(() => null), stalled]);
      if (first) {
        const acquire = await trace.next<EventOf<'ptl.acquire'>>(
          (e) => e.kind === 'ptl.acquire' && e.op === first.op,
        );
        return { addr, munmap, lock: first.lock, token: acquire.token };
      }
    }
    throw new Error('mm-0 never took a munmap');
  }

  it('refuses the write of a holder that was paused past its lease (fencing token)', async () => {
    const { addr, munmap, lock, token } = await stallMm0InMunmap(3000, 30_000);
    // (asked before the stop: the queue group could hand it to the stopped replica)
    const before = (await rpc.call('meminfo', {})).free;
    lab.signal('mm-0', 'SIGSTOP');
    // mm-1 waits too, until B holds the lock: once mm-0's liveness lease is gone its reaper
    // takes the munmap over, and would race this test for the expired lock.
    lab.signal('mm-1', 'SIGSTOP');
    const key = procKeys(pid).ptl(lock);
    // The lease is not renewed while mm-0 is stopped: it expires.
    await until(async () => (await store.redis.exists(key)) === 0, 'the PT-lock lease to expire');
    // Another holder (this test, acting as a replica) takes the lock with a newer token.
    const b = await store.ptlLock(pid, lock, 'replica-b', 60_000);
    lab.signal('mm-1', 'SIGCONT');
    if (!b.ok) throw new Error('lock not free after expiry');
    expect(b.token).toBeGreaterThan(token);
    // mm-0's liveness lease is gone too: mm-1 takes its munmap over and tells the caller.
    expect(await munmap).toMatchObject({ code: 'EOWNERDEAD', definite: false });
    lab.signal('mm-0', 'SIGCONT');
    const reject = await trace.next<EventOf<'pte.reject'>>(
      (e) => e.kind === 'pte.reject' && e.instance === 'mm-0',
    );
    expect(reject).toMatchObject({ lock, token });
    // The stale holder changed nothing: the lock is still B's.
    expect(await store.redis.get(key)).toBe(`replica-b|${b.token}`);
    expect(await store.leaseRelease(key, `replica-b|${b.token}`)).toBe(true);
    // mm-1 finishes the munmap (it is idempotent) once B is gone: both frames freed once.
    const first = addr / PAGE_SIZE;
    await until(
      async () =>
        ![...(await store.pageTable(pid)).keys()].some((v) => v >= first && v < first + 2),
      'the taken-over munmap to finish',
    );
    await until(
      async () => (await store.intents(pid)).length === 0,
      'the munmap’s intent record to be forgotten',
    );
    expect((await rpc.call('meminfo', {})).free).toBe(before + 2);
  });

  it('lets the lab carry on when the holder is killed: the lease expires, faults in the same page table proceed', async () => {
    const { addr, munmap, lock } = await stallMm0InMunmap(60_000, 3000);
    await lab.kill('mm-0');
    const k = procKeys(pid);
    await until(
      async () => (await store.redis.exists(k.ptl(lock), k.semW)) === 0,
      'the PT lock and mmap_sem leases to expire',
    );
    // A fault in the same page-table page, now served by mm-1.
    const other = await rpc.call('mmap', { pid, pages: 1, prot: 'rw' });
    expect(Math.floor(other.addr / PAGE_SIZE / 512)).toBe(Number(lock.slice(4)));
    const w = await rpc.call(
      'cpuAccess',
      { pid, addr: other.addr, op: 'write', value: 99 },
      { id: 0 },
    );
    expect(w.faults).toBeGreaterThan(0);
    // mm-1 took the dead replica's munmap over (its intent record): the caller hears so, not
    // a timeout, and the munmap is finished; a retry is harmless (munmap is idempotent).
    expect(await munmap).toMatchObject({ code: 'EOWNERDEAD', definite: false });
    await rpc.call('munmap', { pid, addr, pages: 2 });
    const first = addr / PAGE_SIZE;
    expect(
      [...(await store.pageTable(pid)).keys()].filter((v) => v >= first && v < first + 2),
    ).toEqual([]);
    await lab.restart('mm-0');
    expect(
      (await rpc.gather('ping', {}, { expect: 3, timeoutMs: 5000 })).map((r) => r.instance).sort(),
    ).toEqual(['cpu0', 'mm-0', 'mm-1']);
  });
});
