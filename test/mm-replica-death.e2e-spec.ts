/**
 * An mm replica killed between mmu_notifier_invalidate_range_start and _end: the lab sends the
 * end it owed (apps/mm/src/kernel/orphan_ranges.ts), so hca0 reopens the range, its page faults
 * there work again, and the checker's paired-range holds. A replica that is only slow keeps its
 * invalidations: nobody ends them for it.
 *
 * Real nats-server, redis-server and services: two mm replicas (lease TTL 800 ms), one CPU,
 * hca0 whose device takes 4 s per invalidation, so a madvise sits between start and end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  PAGE_SIZE,
  type TraceEvent,
  type Req,
  type Res,
  type RpcName,
  type TraceKind,
} from '@mmlab/protocol';
import { type Store } from '@mmlab/model';
import { checkInvariants } from '@mmlab/checker';
import type { RpcClient } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, codeOf, startTestLab, until } from '@mmlab/testing';

const HCA = 'hca0';
const LEASE_TTL_MS = 800;
const LATENCY_MS = 4000;
const MMS = ['mm-0', 'mm-1'];

describe('an mm replica that dies between invalidate_range_start and _end', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        leaseTtlMs: LEASE_TTL_MS,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: LATENCY_MS }],
      },
      { rpcTimeoutMs: 30_000 },
    );
    ({ lab, rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: HCA });
  /** The first event that matches, polled for up to 20 s (a hang guard, not a timing assertion). */
  async function seen<E extends TraceEvent = TraceEvent>(
    what: string,
    pred: (e: TraceEvent) => boolean,
  ): Promise<E> {
    let hit: TraceEvent | undefined;
    await until(() => (hit = trace.events.find(pred)) !== undefined, what);
    return hit as E;
  }
  const events = <K extends TraceKind>(kind: K, pred: (e: EventOf<K>) => boolean = () => true) =>
    trace.events.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));

  /** An address space with an ODP MR over 8 pages, every page written by cpu0 and read by hca0. */
  async function odpSpace() {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 8, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < 8; i++)
      await rpc.call('cpuAccess', { pid, addr: page(i), op: 'write', value: 100 + i }, { id: 0 });
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr,
      pages: 8,
      odp: true,
      access: ['read', 'write'],
    });
    for (let i = 0; i < 8; i++) await hca('hcaRdmaRead', { mr, addr: page(i) });
    return { pid, mr, page };
  }

  /** Start madvise(DONTNEED) of 2 pages; → its settled reply and its range_start once hca0 got it. */
  async function madviseOnHca(pid: number, addr: number) {
    const from = trace.events.length;
    const reply = rpc
      .call('madvise', { pid, addr, pages: 2, advice: 'dontneed' }, { timeoutMs: 30_000 })
      .then(
        (r) => r,
        (e: unknown) => e,
      );
    const start = await seen<EventOf<'mn.range_start'>>(
      'mn.range_start of the madvise',
      (e) =>
        e.kind === 'mn.range_start' &&
        e.pid === pid &&
        e.start === addr &&
        trace.events.indexOf(e) >= from,
    );
    await seen(
      'hca0 receiving the range start',
      (e) =>
        e.kind === 'mn.recv' &&
        e.instance === HCA &&
        e.callback === 'invalidate_range_start' &&
        e.inv === start.inv,
    );
    return { reply, start };
  }

  it('sends the dead sender’s invalidate_range_end: hca0 reopens the range, paired-range holds', async () => {
    const { pid, mr, page } = await odpSpace();
    const { start } = await madviseOnHca(pid, page(0));
    const sender = start.instance;
    const other = MMS.find((m) => m !== sender)!;
    // hca0 has [page 0, page 2) active and is busy for 4 s: the sender waits for its ack.
    await lab.kill(sender);

    // The other replica finds the sender's lease expired and ends the range for it.
    const end = await seen<EventOf<'mn.range_end'>>(
      "mn.range_end of the dead sender's inv",
      (e) => e.kind === 'mn.range_end' && e.inv === start.inv,
    );
    expect(end).toMatchObject({
      instance: other,
      pid,
      start: start.start,
      end: start.end,
      event: start.event,
    });
    expect(end.deadSender).toMatch(new RegExp(`^${sender}\\.`));
    await seen(
      'the other replica sending invalidate_range_end',
      (e) =>
        e.kind === 'mn.send' &&
        e.instance === other &&
        e.callback === 'invalidate_range_end' &&
        e.inv === start.inv,
    );
    await seen(
      'hca0 receiving invalidate_range_end',
      (e) =>
        e.kind === 'mn.recv' &&
        e.instance === HCA &&
        e.callback === 'invalidate_range_end' &&
        e.inv === start.inv,
    );
    await seen(
      'hca0 acking invalidate_range_end',
      (e) =>
        e.kind === 'mn.ack' &&
        e.instance === other &&
        e.callback === 'invalidate_range_end' &&
        e.inv === start.inv,
    );
    await until(
      async () => (await store.openInvalidations(pid)).length === 0,
      'the open invalidation to be forgotten',
    );

    // hca0's device is done with the start's zap (it ran on, for a sender that is gone); a
    // network page fault in the range works again (without the end: EAGAIN, for ever).
    await seen(
      "hca0 finishing the range start's device work",
      (e) =>
        e.kind === 'mn.done' &&
        e.instance === HCA &&
        e.callback === 'invalidate_range_start' &&
        e.inv === start.inv,
    );
    const r = await hca('hcaRdmaRead', { mr, addr: page(1) });
    expect(r).toMatchObject({ npf: 1, stale: false });
    expect([101, 0]).toContain(r.value); // the madvise may or may not have zapped it

    const verdicts = checkInvariants(await t!.settled(), { softlockupMs: 60_000 });
    const paired = verdicts.find((v) => v.name === 'paired-range')!;
    expect(paired.violations.map((v) => v.message)).toEqual([]);
    expect(paired.ok).toBe(true);
    const nmdi = verdicts.find((v) => v.name === 'no-map-during-invalidate')!;
    expect(nmdi.violations.map((v) => v.message)).toEqual([]);
    expect(events('mn.range_end', (e) => e.inv === start.inv)).toHaveLength(1);

    await lab.restart(sender);
  });

  it('never ends the invalidation of a replica that is slow but alive', async () => {
    const { pid, page } = await odpSpace();
    const { reply, start } = await madviseOnHca(pid, page(2));
    // 4 s of device latency: five lease TTLs, ten scans of the other replica.
    expect(await reply).toEqual({ zapped: 2, freed: 2 });
    await t!.settled();
    const ends = events('mn.range_end', (e) => e.inv === start.inv);
    expect(ends).toHaveLength(1);
    expect(ends[0].instance).toBe(start.instance);
    expect(ends[0].deadSender).toBeUndefined();
    expect(
      events('mn.send', (e) => e.inv === start.inv && e.callback === 'invalidate_range_end').map(
        (e) => e.instance,
      ),
    ).toEqual([start.instance]);
    expect(await store.openInvalidations(pid)).toEqual([]);
  });

  it('finishes a dead incarnation’s record and leaves a live one’s alone', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const base = {
      pid,
      op: 'test/munmap#1',
      start: 0x10000,
      end: 0x12000,
      event: 'unmap' as const,
    };
    await store.mmAlive('live-mm.1', 60_000);
    await store.invOpen({ ...base, inv: 'live~1', subscribers: [], owner: 'live-mm.1' });
    await store.invOpen({ ...base, inv: 'ghost~1', subscribers: [], owner: 'ghost-mm.1' });
    // Bad input is refused and changes nothing.
    expect(
      await codeOf(
        store.invOpen({ ...base, inv: 'ghost~1', subscribers: [], owner: 'ghost-mm.1' }),
      ),
    ).toBe('EINVAL');
    expect(
      await codeOf(
        store.invOpen({ ...base, end: base.start, inv: 'x', subscribers: [], owner: 'a' }),
      ),
    ).toBe('EINVAL');

    await until(
      async () => (await store.openInvalidations(pid)).every((o) => o.inv !== 'ghost~1'),
      'the dead incarnation’s invalidation to be finished',
    );
    const end = await seen<EventOf<'mn.range_end'>>(
      "mn.range_end of the dead incarnation's record",
      (e) => e.kind === 'mn.range_end' && e.inv === 'ghost~1',
    );
    expect(end.deadSender).toBe('ghost-mm.1');
    // Several scans later the live one is still there, still owned by its incarnation.
    await until(
      () =>
        events('mn.range_end', (e) => e.inv === 'ghost~1').length === 1 &&
        Date.now() - end.ts > 3 * LEASE_TTL_MS,
      'a few more scans',
    );
    expect(await store.openInvalidations(pid)).toEqual([
      expect.objectContaining({ inv: 'live~1', owner: 'live-mm.1', state: 'open' }),
    ]);
    expect(events('mn.range_end', (e) => e.inv === 'live~1')).toEqual([]);
    // The owner's own end wins over anyone else's: one claim, one winner.
    expect(await store.invClaim(pid, 'live~1', 'someone-else.1', 'thief.1')).toEqual({
      r: 'LOST',
      owner: 'live-mm.1',
    });
    expect(await store.invClaim(pid, 'live~1', 'live-mm.1', 'live-mm.1')).toEqual({
      r: 'OK',
      prev: 'open',
    });
    expect(await store.invClose(pid, 'live~1', 'live-mm.1')).toBe(true);
    expect(await store.invClaim(pid, 'live~1', 'live-mm.1', 'live-mm.1')).toEqual({ r: 'GONE' });
  });
});
