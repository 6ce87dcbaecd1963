/**
 * Callback-level faults of a notifier subscriber (subChaos on mmlab.sub.hca0.chaos) against real
 * services: one mm, one CPU and hca0 as processes, a real nats-server and redis-server. Each
 * fault is set on hca0, then a munmap of a range an ODP MR maps makes mm call it; the trace
 * tells what mm and hca0 did. Short callback timeout and lease keep the fences quick; nothing
 * here asserts on durations, only on events and their order.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestStrategy, type NatsConnection } from 'nats';
import {
  type EventOf,
  type MnCallback,
  PAGE_SIZE,
  type SubFault,
  type TraceEvent,
  type TraceKind,
  subjectFor,
  RPC,
} from '@mmlab/protocol';
import type { Store } from '@mmlab/model';
import { type RpcClient, decodeReply, encodeRequest } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, codeOf, rawRangeEnd, startTestLab } from '@mmlab/testing';

const HCA = 'hca0';
const CALLBACK_TIMEOUT_MS = 300;
const LEASE_MS = 900;

describe('callback-level faults on hca0 (subChaos)', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let nc: NatsConnection;
  let rpc: RpcClient;
  let store: Store;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 1,
        observer: false,
        subscribers: [{ name: HCA, kind: 'hca', invalidateLatencyMs: 0 }],
        env: {
          MMLAB_CALLBACK_TIMEOUT_MS: String(CALLBACK_TIMEOUT_MS),
          MMLAB_SUBSCRIBER_LEASE_MS: String(LEASE_MS),
        },
      },
      { rpcTimeoutMs: 20_000 },
    );
    ({ lab, nc, rpc, store, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const chaos = (faults: SubFault[]) => rpc.call('subChaos', { faults }, { id: HCA });

  /** A process with `pages` pages, all of them written through an ODP MR (so in its MTT). */
  const odpRegion = async (pages: number) => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    for (let i = 0; i < pages; i++)
      await rpc.call(
        'hcaRdmaWrite',
        { mr, addr: addr + i * PAGE_SIZE, value: 10 + i },
        { id: HCA },
      );
    return { pid, addr, mr, page: (i: number) => addr + i * PAGE_SIZE };
  };

  const of = <K extends TraceKind>(
    all: TraceEvent[],
    kind: K,
    pred: (e: EventOf<K>) => boolean = () => true,
  ): Array<EventOf<K>> =>
    all.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));

  /** The inv of the (only) range invalidation of pid over [start, end), from mm's mn.range_start. */
  const invOf = (all: TraceEvent[], pid: number): string => {
    const starts = of(all, 'mn.range_start', (e) => e.pid === pid);
    expect(starts).toHaveLength(1);
    return starts[0].inv;
  };

  /** What mm and hca0 did for one callback of one inv. */
  const story = (all: TraceEvent[], inv: string, callback: MnCallback) => ({
    attempts: of(
      all,
      'mn.send',
      (e) => e.subscriber === HCA && e.inv === inv && e.callback === callback,
    ).map((e) => e.attempt),
    acks: of(all, 'mn.ack', (e) => e.subscriber === HCA && e.inv === inv && e.callback === callback)
      .length,
    ignored: of(
      all,
      'mn.ack_ignored',
      (e) => e.subscriber === HCA && e.inv === inv && e.callback === callback,
    ).length,
    recvs: of(all, 'mn.recv', (e) => e.agent === HCA && e.inv === inv && e.callback === callback)
      .length,
    faults: of(
      all,
      'sub.fault',
      (e) => e.agent === HCA && e.inv === inv && e.callback === callback,
    ).map((e) => e.fault),
  });

  const fencedEvents = (all: TraceEvent[]) => of(all, 'mn.fenced', (e) => e.subscriber === HCA);

  it('answers with the active list; malformed or invalid requests get EBADMSG and change nothing', async () => {
    const lat: SubFault = {
      fault: 'latency',
      distribution: 1,
      callbacks: ['invalidate_range_end'],
    };
    expect(await chaos([lat])).toEqual({ active: [lat] });
    const subject = subjectFor(RPC.subChaos, HCA);
    for (const bad of [
      '\u0000not json',
      encodeRequest(subject, { faults: [{ fault: 'explode' }] }),
      encodeRequest(subject, { faults: [{ fault: 'latency' }] }),
      encodeRequest(subject, { faults: [{ fault: 'hang', distribution: 5 }] }),
      encodeRequest(subject, { faults: 'hang' }),
    ]) {
      const reply = await nc.request(subject, bad, { timeout: 5000 });
      expect(await codeOf(Promise.resolve().then(() => decodeReply('subChaos', reply.data)))).toBe(
        'EBADMSG',
      );
    }
    // a distribution written with an exponent: the schema reads plain decimals only, as the
    // device's sampler does
    const invalid = await nc.request(
      subject,
      encodeRequest(subject, { faults: [{ fault: 'latency', distribution: 'uniform:1e3:2e3' }] }),
      { timeout: 5000 },
    );
    expect(await codeOf(Promise.resolve().then(() => decodeReply('subChaos', invalid.data)))).toBe(
      'EBADMSG',
    );

    // still active: the latency fault fires on invalidate_range_end only
    const { pid, addr } = await odpRegion(1);
    await rpc.call('munmap', { pid, addr, pages: 1 });
    expect(await chaos([])).toEqual({ active: [] });
    const all = await t!.settled();
    const inv = invOf(all, pid);
    expect(story(all, inv, 'invalidate_range_start').faults).toEqual([]);
    expect(story(all, inv, 'invalidate_range_end').faults).toEqual(['latency']);
  });

  it('latency on invalidate_range_start only: that callback is delayed, the end is not', async () => {
    await chaos([
      {
        fault: 'latency',
        distribution: 'uniform:20:40',
        jitterMs: 5,
        callbacks: ['invalidate_range_start'],
      },
    ]);
    const { pid, addr } = await odpRegion(2);
    await rpc.call('munmap', { pid, addr, pages: 2 });
    await chaos([]);
    const all = await t!.settled();
    const inv = invOf(all, pid);
    const start = story(all, inv, 'invalidate_range_start');
    const end = story(all, inv, 'invalidate_range_end');
    expect(start.faults).toEqual(['latency']);
    expect(end.faults).toEqual([]);
    expect([start.acks, end.acks]).toEqual([1, 1]);
    expect(fencedEvents(all)).toHaveLength(0);
  });

  it('drop-ack: mm resends the same inv, the resend is answered; the work is done once', async () => {
    await chaos([{ fault: 'drop-ack' }]);
    const { pid, addr, page } = await odpRegion(2);
    await rpc.call('munmap', { pid, addr, pages: 2 });

    // on the wire: the first request of an inv gets nothing, its resend an answer
    const subject = subjectFor(RPC.mnInvalidateRangeEnd, HCA);
    expect(
      await codeOf(nc.request(subject, rawRangeEnd(HCA, 'raw-drop'), { timeout: 1000 })),
    ).not.toBe('ok');
    const again = await nc.request(subject, rawRangeEnd(HCA, 'raw-drop'), { timeout: 5000 });
    expect(decodeReply('mnInvalidateRangeEnd', again.data)).toEqual({ inv: 'raw-drop' });
    await chaos([]);

    const all = await t!.settled();
    const inv = invOf(all, pid);
    for (const callback of ['invalidate_range_start', 'invalidate_range_end'] as const) {
      // (A slow machine may need more than one resend: each copy reaches hca0, one ack.)
      const s = story(all, inv, callback);
      expect(s.attempts.slice(0, 2), callback).toEqual([1, 2]);
      expect({ acks: s.acks, ignored: s.ignored, recvs: s.recvs, faults: s.faults }).toEqual({
        acks: 1,
        ignored: 0,
        recvs: s.attempts.length,
        faults: ['drop-ack'],
      });
    }
    // the zap happened once per page, though the start was received twice
    expect(of(all, 'smap.clear', (e) => e.pid === pid).map((e) => e.addr)).toEqual([
      page(0),
      page(1),
    ]);
    expect(fencedEvents(all)).toHaveLength(0);
  });

  it('dup-ack: every reply twice; mm takes one ack, no error, the work once', async () => {
    await chaos([{ fault: 'dup-ack' }]);
    const { pid, addr, page } = await odpRegion(2);
    await rpc.call('munmap', { pid, addr, pages: 2 });

    // on the wire: two replies to one request
    const replies: string[] = [];
    const it = await nc.requestMany(
      subjectFor(RPC.mnInvalidateRangeEnd, HCA),
      rawRangeEnd(HCA, 'raw-dup'),
      {
        strategy: RequestStrategy.Count,
        maxMessages: 2,
        maxWait: 10_000,
      },
    );
    for await (const m of it) replies.push(decodeReply('mnInvalidateRangeEnd', m.data).inv);
    expect(replies).toEqual(['raw-dup', 'raw-dup']);
    await chaos([]);

    const all = await t!.settled();
    const inv = invOf(all, pid);
    for (const callback of ['invalidate_range_start', 'invalidate_range_end'] as const) {
      // one attempt on a quiet machine; every copy mm sent got two replies, one ack counted
      const s = story(all, inv, callback);
      expect(s.attempts[0], callback).toBe(1);
      expect({ acks: s.acks, ignored: s.ignored, recvs: s.recvs }).toEqual({
        acks: 1,
        ignored: 0,
        recvs: s.attempts.length,
      });
      expect(s.faults).toEqual(s.attempts.map(() => 'dup-ack'));
    }
    expect(of(all, 'smap.clear', (e) => e.pid === pid).map((e) => e.addr)).toEqual([
      page(0),
      page(1),
    ]);
  });

  it('hang: munmap waits while hung (mm keeps resending, never fences) and finishes after the heal', async () => {
    await chaos([{ fault: 'hang', callbacks: ['invalidate_range_start'] }]);
    const { pid, addr } = await odpRegion(1);
    let finished = false;
    const munmap = rpc.call('munmap', { pid, addr, pages: 1 }).then(() => (finished = true));
    const hung = await trace.next<EventOf<'sub.fault'>>(
      (e) => e.kind === 'sub.fault' && e.agent === HCA && e.fault === 'hang',
    );
    // Everything published so far has arrived: still hung, so neither acked nor finished.
    let all = await t!.settled();
    expect(finished).toBe(false);
    expect(story(all, hung.inv, 'invalidate_range_start').acks).toBe(0);
    expect(await chaos([])).toEqual({ active: [] });
    await munmap;
    all = await t!.settled();
    const inv = invOf(all, pid);
    expect(hung.inv).toBe(inv);
    const s = story(all, inv, 'invalidate_range_start');
    expect(s.acks).toBe(1);
    expect(s.faults).toEqual(['hang']);
    // in order: the hang, then the zap, then mm's ack
    const at = (e: TraceEvent | undefined) => (e ? all.indexOf(e) : -1);
    const ack = of(
      all,
      'mn.ack',
      (e) => e.inv === inv && e.callback === 'invalidate_range_start',
    )[0];
    const clear = of(all, 'smap.clear', (e) => e.pid === pid)[0];
    expect(at(all.find((e) => e.id === hung.id))).toBeLessThan(at(clear));
    expect(clear.ts).toBeLessThanOrEqual(ack.ts);
    expect(story(all, inv, 'invalidate_range_end').acks).toBe(1);
    expect(fencedEvents(all)).toHaveLength(0);
    expect(await store.isFenced(HCA)).toBe(false);
  });

  it('late-ack: the lease lapses, mm fences hca0 and finishes the munmap; its DMA is refused, a heal does not unfence', async () => {
    const fencedBefore = fencedEvents(await t!.settled()).length;
    await chaos([{ fault: 'late-ack', callbacks: ['invalidate_range_start'] }]);
    const { pid, page, mr } = await odpRegion(2);
    await rpc.call('munmap', { pid, addr: page(0), pages: 1 });
    expect(await store.isFenced(HCA)).toBe(true);
    // page 1 is still in the device table: the DMA through it is refused
    expect(await codeOf(rpc.call('hcaRdmaRead', { mr, addr: page(1) }, { id: HCA }))).toBe(
      'ENODEV',
    );
    expect(await chaos([])).toEqual({ active: [] });
    expect(await store.isFenced(HCA)).toBe(true);
    expect(await codeOf(rpc.call('hcaRdmaRead', { mr, addr: page(1) }, { id: HCA }))).toBe(
      'ENODEV',
    );
    const all = await t!.settled();
    const inv = invOf(all, pid);
    const s = story(all, inv, 'invalidate_range_start');
    expect(s.acks).toBe(0);
    expect(s.faults.length).toBeGreaterThanOrEqual(1);
    expect(new Set(s.faults)).toEqual(new Set(['late-ack']));
    expect(s.attempts.length).toBe(s.recvs); // every attempt reached it; none was answered in time
    expect(fencedEvents(all)).toHaveLength(fencedBefore + 1);
    // mm went on without hca0: no end sent to it
    expect(story(all, inv, 'invalidate_range_end').attempts).toEqual([]);
    expect(of(all, 'access.refused', (e) => e.agent === HCA && e.pid === pid)).toHaveLength(2);

    await lab.restart(HCA); // only a new incarnation is unfenced
    expect(await store.isFenced(HCA)).toBe(false);
  });

  it('crash: hca0 kills itself mid-callback; mm fences it once its lease lapses and finishes the munmap', async () => {
    const fencedBefore = fencedEvents(await t!.settled()).length;
    await chaos([{ fault: 'crash', callbacks: ['invalidate_range_start'] }]);
    const { pid, addr } = await odpRegion(1);
    const proc = lab.proc(HCA);
    const exited = new Promise<void>((r) =>
      proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', () => r()),
    );
    await rpc.call('munmap', { pid, addr, pages: 1 });
    await exited;
    expect(proc.signalCode).toBe('SIGKILL');
    expect(await store.isFenced(HCA)).toBe(true);
    // Restarted first, so that the trace barrier has every instance to answer it (the crashed
    // hca0 flushed its last event before it died).
    await lab.restart(HCA);
    expect(await store.isFenced(HCA)).toBe(false);
    const all = await t!.settled();
    const inv = invOf(all, pid);
    const s = story(all, inv, 'invalidate_range_start');
    expect(s.faults).toEqual(['crash']);
    expect(s.acks).toBe(0);
    expect(of(all, 'mn.done', (e) => e.agent === HCA && e.inv === inv)).toHaveLength(0);
    expect(of(all, 'smap.clear', (e) => e.pid === pid)).toHaveLength(1); // the zap began
    expect(fencedEvents(all)).toHaveLength(fencedBefore + 1);
    expect(await chaos([])).toEqual({ active: [] }); // the new device starts healthy
  });
});
