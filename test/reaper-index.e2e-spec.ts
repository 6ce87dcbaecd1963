/**
 * The orphan-range reaper (apps/mm/src/kernel/orphan_ranges.ts) reads an index of the address
 * spaces each mm incarnation may own open invalidations or intents on ({mm}:invpids:<it>,
 * keys.ts), not every process every TTL/2. Counted here, in Redis calls (never time):
 *   - the bookkeeping of one range invalidation (invalidate_range_start + _end), by MONITOR on
 *     the lab's Redis: 3 script calls (invOpen, invClaim, invClose), plus one invIndex the
 *     first time an incarnation opens one on a pid;
 *   - one reaper pass, by a reaper run in this process on a Store whose commands are counted:
 *     the same with 1 or 100 processes that have no open invalidation of a dead incarnation.
 * And a dead incarnation's orphans (an invalidation, an intent) are found through its index,
 * which is dropped once they are finished, after the incarnation is fenced off the pid.
 *
 * Real nats-server, redis-server and services: two mm replicas (lease TTL 800 ms), one CPU, hca0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type Redis from 'ioredis';
import { type EventOf, PAGE_SIZE, type TraceEvent } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RedisMonitor, type TestLab, codeOf, startTestLab, until } from '@mmlab/testing';
// The reaper itself, run in this process on a Store whose commands are counted (the only way
// to count one pass's calls exactly): a test may reach into an app, as observer.e2e-spec does.
// eslint-disable-next-line no-restricted-imports
import type { MmContext } from '../apps/mm/src/kernel/context';
// eslint-disable-next-line no-restricted-imports
import { OrphanRangeReaper } from '../apps/mm/src/kernel/orphan_ranges';

const HCA = 'hca0';
const LEASE_TTL_MS = 800;

describe('the orphan-range reaper reads an index of open invalidations per incarnation', () => {
  let t: TestLab | undefined;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        leaseTtlMs: LEASE_TTL_MS,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 0 }],
      },
      { rpcTimeoutMs: 30_000 },
    );
  });
  afterAll(async () => {
    await t?.stop();
  });

  const events = <K extends TraceEvent['kind']>(kind: K, pred: (e: EventOf<K>) => boolean) =>
    t!.trace.events.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));

  /** A process with 4 written pages and an ODP MR of hca0 over them (hca0 registered on it). */
  async function odpSpace() {
    const { rpc } = t!;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    for (let i = 0; i < 4; i++)
      await rpc.call(
        'cpuAccess',
        { pid, addr: addr + i * PAGE_SIZE, op: 'write', value: i },
        { id: 0 },
      );
    await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 4, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    return { pid, addr };
  }

  it('counts the Redis calls of one range invalidation’s bookkeeping (MONITOR)', async () => {
    const { rpc } = t!;
    const spaces = [await odpSpace(), await odpSpace()];
    const mon = await RedisMonitor.start(t!.lab.redisUrl);
    const per = (n: string) => mon.seen.filter((c) => c.script === n).length;
    const from = t!.trace.events.length;
    // madvise(DONTNEED) of one mapped page: one range invalidation each, on two address spaces.
    for (const { pid, addr } of spaces)
      for (let i = 0; i < 4; i++)
        await rpc.call('madvise', {
          pid,
          addr: addr + i * PAGE_SIZE,
          pages: 1,
          advice: 'dontneed',
        });
    await t!.settled();
    const pids = new Set(spaces.map((s) => s.pid));
    const starts = t!.trace.events
      .slice(from)
      .filter(
        (e): e is EventOf<'mn.range_start'> => e.kind === 'mn.range_start' && pids.has(e.pid),
      );
    expect(starts).toHaveLength(8);
    await until(() => per('invClose') >= starts.length, 'the MONITOR feed to show every invClose');
    mon.stop();
    const bookkeeping = per('invOpen') + per('invClaim') + per('invClose') + per('invIndex');
    // (replica, pid) pairs: each replica indexes a pid once, at its first intent or inv there.
    const pairs = new Set(starts.map((e) => `${e.instance} ${e.pid}`)).size;
    console.log(
      `range invalidation bookkeeping: ${bookkeeping} Redis calls for ${starts.length} invalidations ` +
        `on 2 pids, ${pairs} (replica, pid) pairs: invOpen ${per('invOpen')}, invClaim ${per('invClaim')}, ` +
        `invClose ${per('invClose')}, invIndex ${per('invIndex')}`,
    );
    expect([per('invOpen'), per('invClaim'), per('invClose')]).toEqual([8, 8, 8]);
    // The pid is indexed once per incarnation that opens invalidations on it, not per
    // invalidation — or before, by a replica that installed a frame of its batch there (the
    // writes of odpSpace): at most once per (replica, pid).
    expect(per('invIndex')).toBeLessThanOrEqual(pairs);
    expect(pairs).toBeLessThan(starts.length);
  });

  it('costs a reaper pass the same Redis calls with 1 or 101 processes that have no orphan', async () => {
    const { lab, store } = t!;
    const counted = new Store(lab.redisUrl);
    let n = 0;
    const r = counted.redis;
    const send = r.sendCommand.bind(r);
    r.sendCommand = ((...a: Parameters<Redis['sendCommand']>) => {
      n++;
      return send(...a);
    }) as Redis['sendCommand'];
    const ctx = {
      store: counted,
      incarnation: 'counting-reaper.1',
      env: { MMLAB_LEASE_TTL_MS: LEASE_TTL_MS },
    } as unknown as MmContext;
    const reaper = new OrphanRangeReaper(ctx, { warn: () => undefined });
    try {
      const pass = async () => {
        await counted.redis.ping(); // connected (the first pass would count the handshake)
        n = 0;
        const took = await reaper.scan();
        expect(took).toBe(0);
        return n;
      };
      // An invalidation a live incarnation has open: the reaper must leave it alone.
      const { pid: lived } = await t!.rpc.call('processCreate', {});
      await store.mmAlive('live-ix.1', 60_000);
      const rec = {
        pid: lived,
        op: 't/munmap#1',
        start: 0x10000,
        end: 0x11000,
        event: 'unmap' as const,
      };
      await store.invOpen({ ...rec, inv: 'live-ix~1', subscribers: [], owner: 'live-ix.1' });
      const before = await pass();
      for (let i = 0; i < 100; i++) await store.mmCreate();
      const after = await pass();
      console.log(
        `reaper pass: ${before} Redis calls with ${(await store.processes()).length - 100} processes, ` +
          `${after} with ${(await store.processes()).length}`,
      );
      expect(after).toBe(before);
      expect(await store.openInvalidations(lived)).toEqual([
        expect.objectContaining({ inv: 'live-ix~1', owner: 'live-ix.1', state: 'open' }),
      ]);
      expect(await store.invClaim(lived, 'live-ix~1', 'live-ix.1', 'live-ix.1')).toEqual({
        r: 'OK',
        prev: 'open',
      });
      expect(await store.invClose(lived, 'live-ix~1', 'live-ix.1')).toBe(true);
      await t!.rpc.call('exit', { pid: lived });
    } finally {
      await reaper.stop();
      await counted.quit();
    }
  });
  it('finds a dead incarnation’s orphans through its index, fences it and drops the entry', async () => {
    const { rpc, store } = t!;
    const ghost = 'ghost-ix.1';
    // An open invalidation (no subscriber: its end goes to no one) on one address space, and a
    // munmap it had started on another, both left by an incarnation that never had a lease.
    const { pid } = await rpc.call('processCreate', {});
    const rec = { pid, op: 't/munmap#2', start: 0x10000, end: 0x11000, event: 'unmap' as const };
    const from = t!.trace.events.length;
    await store.invOpen({ ...rec, inv: 'ghost-ix~1', subscribers: [], owner: ghost });
    const { pid: other } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid: other, pages: 2, prot: 'rw' });
    await rpc.call('cpuAccess', { pid: other, addr, op: 'write', value: 5 }, { id: 0 });
    await store.intentOpen(other, `${ghost}/munmap#3`, ghost, {
      syscall: 'munmap',
      args: { pid: other, addr, pages: 2 },
    });
    expect(await store.invPids(ghost)).toEqual([pid, other]);
    expect(await store.invOwners()).toContain(ghost);

    // Found through the index: the end sent for the dead sender, the munmap rolled forward.
    await until(
      async () => (await store.openInvalidations(pid)).length === 0,
      'the dead incarnation’s invalidation to be finished',
    );
    await until(
      async () => (await store.intents(other)).length === 0,
      'the dead incarnation’s munmap to be finished',
    );
    const ends = events('mn.range_end', (e) => e.inv === 'ghost-ix~1');
    expect(ends).toHaveLength(1);
    expect(ends[0].deadSender).toBe(ghost);
    expect(t!.trace.events.slice(from).some((e) => e.kind === 'mn.range_end')).toBe(true);
    expect(await store.vmas(other)).toEqual([]);

    // Then the index entries go, once the ghost is fenced off both pids and owns nothing there.
    await until(
      async () => !(await store.invOwners()).includes(ghost),
      'the dead incarnation’s index to be dropped',
    );
    expect(await store.invPids(ghost)).toEqual([]);
    // Fenced: it may open or take nothing there any more (its index no longer names the pids);
    // refused with nothing written.
    expect(
      await codeOf(store.invOpen({ ...rec, inv: 'ghost-ix~2', subscribers: [], owner: ghost })),
    ).toBe('ESTALE');
    expect(
      await codeOf(
        store.intentOpen(other, `${ghost}/munmap#4`, ghost, { syscall: 'munmap', args: {} }),
      ),
    ).toBe('ESTALE');
    expect(await store.openInvalidations(pid)).toEqual([]);
    expect(await store.intents(other)).toEqual([]);
    await rpc.call('exit', { pid: other });
    await rpc.call('exit', { pid });
  });
});
