/**
 * GET /metrics and GET /health on every service of a real lab (two mm replicas, cpu0, hca0, kvm0
 * and the observer, each its own process): the metrics agree with the trace the same run
 * published, frames free with meminfo, and /health turns 503 naming Redis when Redis dies.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type EventOf,
  MMAP_BASE,
  PAGE_SIZE,
  type Req,
  type Res,
  type RpcName,
  type TraceKind,
} from '@mmlab/protocol';
import { implementedInvariants } from '@mmlab/checker';
import { type RpcClient, Tracer } from '@mmlab/runtime';
import { type LocalLab } from '@mmlab/runner';
import { type TestLab, type TraceLog, startTestLab, until } from '@mmlab/testing';

const HCA = 'hca0';
const KVM = 'kvm0';
const MM = ['mm-0', 'mm-1'];
const SERVICES = [...MM, 'cpu0', HCA, KVM];

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, sample lines only. */
function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Samples of `name` whose labels include `labels`. */
const matching = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
const total = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  matching(samples, name, labels).reduce((n, s) => n + s.value, 0);

describe('metrics and health on every service', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let rpc: RpcClient;
  let trace: TraceLog;

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 1,
        mmReplicas: 2,
        subscribers: [
          { name: HCA, kind: 'hca' },
          { name: KVM, kind: 'kvm' },
        ],
      },
      // the last test stops redis-server for good: there is no state left to check
      { rpcTimeoutMs: 20_000, fsck: { skip: 'stops redis-server for good' }, http: true },
    );
    ({ lab, rpc, trace } = t);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const http = (instance: string) => request(lab.httpUrl(instance));
  const scrape = async (instance: string): Promise<Sample[]> => {
    const res = await http(instance).get('/metrics').expect(200);
    expect(res.headers['content-type'], instance).toBe('text/plain; version=0.0.4; charset=utf-8');
    return parseExposition(res.text);
  };
  const hca = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
    rpc.call(name, req, { id: HCA });
  const cpu = (pid: number, addr: number, op: 'read' | 'write', value?: number) =>
    rpc.call('cpuAccess', { pid, addr, op, ...(value === undefined ? {} : { value }) }, { id: 0 });
  const events = <K extends TraceKind>(kind: K, pred: (e: EventOf<K>) => boolean = () => true) =>
    trace.events.filter((e): e is EventOf<K> => e.kind === kind && pred(e as EventOf<K>));

  it('serves /health 200 on every instance while NATS and Redis are up', async () => {
    for (const i of SERVICES) {
      const res = await http(i).get('/health').expect(200);
      expect(res.body, i).toEqual({
        status: 'ok',
        info: { nats: { status: 'up', state: 'connected' }, redis: { status: 'up' } },
        error: {},
        details: { nats: { status: 'up', state: 'connected' }, redis: { status: 'up' } },
      });
    }
    // The observer keeps no Redis client: it checks its NATS connection only.
    expect((await http('observer').get('/health').expect(200)).body).toMatchObject({
      status: 'ok',
      info: { nats: { status: 'up' } },
    });
  });

  it('exports faults, PT locks, invalidations and TLB/MTT lookups as the trace has them', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    const page = (i: number) => addr + i * PAGE_SIZE;
    await cpu(pid, page(0), 'write', 1); // anon fault: miss
    await cpu(pid, page(0), 'read'); // hit
    await cpu(pid, page(1), 'read'); // zero-page fault: miss
    await cpu(pid, page(1), 'read'); // hit
    await cpu(pid, page(1), 'write', 2); // write through the read-only entry: fault, miss
    const { mr } = await hca('hcaRegMr', {
      pid,
      addr,
      pages: 4,
      odp: true,
      access: ['read', 'write'],
    });
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({ value: 1, npf: 1 });
    expect(await hca('hcaRdmaRead', { mr, addr: page(0) })).toMatchObject({ value: 1, npf: 0 });
    await rpc.call('munmap', { pid, addr, pages: 4 });
    await t!.settled();

    const mm = (await Promise.all(MM.map(scrape))).flat();
    // faults, by kind, as many as fault.end events (all of them in mm, on either replica)
    const faultKinds = new Set(events('fault.end').map((e) => e.how ?? 'error'));
    expect(faultKinds).toContain('anon');
    expect(faultKinds).toContain('zero');
    for (const kind of faultKinds)
      expect(total(mm, 'mmlab_fault_seconds_count', { kind }), kind).toBe(
        events('fault.end', (e) => (e.how ?? 'error') === kind).length,
      );
    expect(total(mm, 'mmlab_fault_seconds_count', { kind: 'anon' })).toBeGreaterThan(0);
    expect(total(mm, 'mmlab_fault_seconds_bucket', { kind: 'anon', le: '+Inf' })).toBe(
      total(mm, 'mmlab_fault_seconds_count', { kind: 'anon' }),
    );

    // PT locks: munmap and the write fault's do_wp_page took split PTE locks
    const holds = events('ptl.release', (e) => e.lock !== 'ptl:mm').length;
    expect(holds).toBeGreaterThan(0);
    expect(total(mm, 'mmlab_ptl_hold_seconds_count', { lock: 'pte' })).toBe(holds);
    expect(total(mm, 'mmlab_ptl_wait_seconds_count', { lock: 'pte' })).toBe(
      events('ptl.acquire', (e) => e.lock !== 'ptl:mm').length,
    );

    // the notifier: every callback mm sent hca0 and got acked, by callback
    const acks = events('mn.ack', (e) => e.subscriber === HCA);
    expect(acks.map((e) => e.callback)).toContain('invalidate_range_start');
    expect(total(mm, 'mmlab_invalidation_seconds_count', { subscriber: HCA })).toBe(acks.length);
    for (const callback of ['invalidate_range_start', 'invalidate_range_end'])
      expect(
        total(mm, 'mmlab_invalidation_seconds_count', { subscriber: HCA, callback }),
        callback,
      ).toBe(acks.filter((e) => e.callback === callback).length);

    // cpu0's TLB: three fills (misses), two accesses through entries already there (hits)
    const cpu0 = await scrape('cpu0');
    const fills = events('tlb.fill', (e) => e.agent === 'cpu0').length;
    expect(fills).toBe(3);
    expect(total(cpu0, 'mmlab_tlb_lookups_total', { agent: 'cpu0', result: 'miss' })).toBe(fills);
    expect(total(cpu0, 'mmlab_tlb_lookups_total', { agent: 'cpu0', result: 'hit' })).toBe(2);
    expect(matching(cpu0, 'mmlab_fault_seconds_count')).toEqual([]); // faults are mm's

    // hca0's MTT: the first RDMA read missed (network page fault), the second hit
    const h = await scrape(HCA);
    expect(events('smap.set', (e) => e.agent === HCA)).toHaveLength(1);
    expect(total(h, 'mmlab_tlb_lookups_total', { agent: HCA, result: 'miss' })).toBe(1);
    expect(total(h, 'mmlab_tlb_lookups_total', { agent: HCA, result: 'hit' })).toBe(1);

    // every service exports the default process metrics too
    for (const samples of [mm, cpu0, h])
      expect(matching(samples, 'process_cpu_user_seconds_total')).not.toEqual([]);
  });

  it("exports KVM's guest faults, mmu_lock holds, sPTEs and lookups as the trace has them", async () => {
    const kvm = <N extends RpcName>(name: N, req: Req<N>): Promise<Res<N>> =>
      rpc.call(name, req, { id: KVM });
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 4, prot: 'rw' });
    const { vm } = await kvm('kvmCreateVm', {
      pid,
      memslots: [{ gfn: 0, pages: 4, addr }],
      vcpus: 1,
    });
    for (let gfn = 0; gfn < 3; gfn++) await kvm('kvmGuestWrite', { vm, vcpu: 0, gfn, value: gfn });
    expect(await kvm('kvmGuestRead', { vm, vcpu: 0, gfn: 0 })).toMatchObject({ faults: 0 });
    await t!.settled();
    let k = await scrape(KVM);
    // three sPTEs, valid; three guest faults, each a miss, then one hit
    expect(total(k, 'mmlab_kvm_sptes', { agent: KVM, state: 'valid' })).toBe(3);
    expect(total(k, 'mmlab_kvm_sptes', { agent: KVM, state: 'obsolete' })).toBe(0);
    const faults = events('kvm.fault.end', (e) => e.agent === KVM && e.vm === vm);
    expect(faults).toHaveLength(3);
    expect(total(k, 'mmlab_kvm_guest_fault_seconds_count', { agent: KVM, result: 'ok' })).toBe(3);
    expect(total(k, 'mmlab_kvm_fault_retries_total', { agent: KVM })).toBe(
      faults.reduce((n, e) => n + e.retries, 0),
    );
    expect(total(k, 'mmlab_tlb_lookups_total', { agent: KVM, result: 'miss' })).toBe(3);
    expect(total(k, 'mmlab_tlb_lookups_total', { agent: KVM, result: 'hit' })).toBe(1);

    // munmap: one range zap of the three sPTEs under mmu_lock (spin: one hold)
    await rpc.call('munmap', { pid, addr, pages: 4 });
    await t!.settled();
    k = await scrape(KVM);
    expect(total(k, 'mmlab_kvm_sptes', { agent: KVM, state: 'valid' })).toBe(0);
    const holds = events('kvm.mmu_lock', (e) => e.agent === KVM);
    for (const what of new Set(holds.map((e) => e.what)))
      expect(
        total(k, 'mmlab_kvm_mmu_lock_hold_seconds_count', { agent: KVM, mode: 'spin', what }),
        what,
      ).toBe(holds.filter((e) => e.what === what).length);
    expect(total(k, 'mmlab_kvm_mmu_lock_wait_seconds_count')).toBe(holds.length);
    expect(total(k, 'mmlab_kvm_sptes_zapped_total', { agent: KVM, mode: 'spin' })).toBe(3);
    expect(holds.filter((e) => e.what === 'zap').reduce((n, e) => n + e.zapped, 0)).toBe(3);
    // mm saw kvm0's callbacks too
    const mm = (await Promise.all(MM.map(scrape))).flat();
    expect(
      total(mm, 'mmlab_invalidation_seconds_count', {
        subscriber: KVM,
        callback: 'invalidate_range_start',
      }),
    ).toBe(
      events('mn.ack', (e) => e.subscriber === KVM && e.callback === 'invalidate_range_start')
        .length,
    );
    expect(await kvm('kvmDestroyVm', { vm })).toEqual({ destroyed: true });
  });

  it('exports frames free as meminfo has them, and no swap', async () => {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await cpu(pid, addr, 'write', 1);
    await cpu(pid, addr + PAGE_SIZE, 'write', 2);
    const { frames, free } = await rpc.call('meminfo', {});
    expect(free).toBeLessThanOrEqual(frames - 2);
    for (const i of MM) {
      const s = await scrape(i);
      expect(total(s, 'mmlab_frames_free'), i).toBe(free);
      expect(matching(s, 'mmlab_swap_used_pages'), i).toEqual([
        { name: 'mmlab_swap_used_pages', labels: {}, value: 0 },
      ]);
    }
    expect(matching(await scrape('cpu0'), 'mmlab_frames_free')).toEqual([]);
  });

  it("exports the observer's intake and its checker's violations", async () => {
    const { events: stored } = await rpc.call('observerSync', {});
    let obs = await scrape('observer');
    expect(total(obs, 'mmlab_observer_events_stored_total')).toBeGreaterThanOrEqual(stored);
    expect(total(obs, 'mmlab_observer_events_rejected_total')).toBe(0);
    expect(total(obs, 'mmlab_observer_events_dropped_total')).toBe(0);
    const invariants = implementedInvariants();
    expect(
      matching(obs, 'mmlab_violations_total')
        .map((s) => [s.labels.invariant, s.value])
        .sort(),
    ).toEqual(invariants.map((i) => [i, 0]).sort());

    // A use-after-free, planted: the checker finds it, the counter shows it.
    new Tracer(t!.nc, 'cpu', 'cpu-planted').emit({
      kind: 'access',
      agent: 'cpu-planted',
      pid: 999,
      addr: MMAP_BASE,
      rw: 'read',
      value: 0,
      pfn: 1,
      gen: 1,
      frameGen: 2,
      frameFree: false,
      tStart: 1,
      tEnd: 2,
    });
    await t!.nc.flush();
    await rpc.call('observerSync', {});
    obs = await scrape('observer');
    expect(total(obs, 'mmlab_violations_total', { invariant: 'no-stale-access' })).toBe(1);
    expect(total(obs, 'mmlab_violations_total')).toBe(1);
  });

  it('answers /health 503 naming Redis when Redis is gone; frames free becomes unknown', async () => {
    const redis = lab.server('redis');
    expect(redis, 'the lab started its own redis-server').toBeDefined();
    t!.store.redis.disconnect(); // the test's own client: it would wait for Redis forever
    await redis!.stop();

    for (const i of SERVICES) {
      let res = await http(i).get('/health');
      await until(async () => {
        res = await http(i).get('/health');
        return res.status !== 200;
      }, `${i} /health to fail`);
      expect(res.status, i).toBe(503);
      const body = res.body as {
        status: string;
        info: Record<string, { status: string }>;
        error: Record<string, { status: string; message?: string }>;
      };
      expect(body.status, i).toBe('error');
      expect(Object.keys(body.error), i).toEqual(['redis']);
      expect(body.error.redis.status, i).toBe('down');
      expect(body.info.nats, i).toMatchObject({ status: 'up' });
    }
    // NATS is fine, and the observer does not depend on Redis.
    await http('observer').get('/health').expect(200);
    const mm0 = await scrape('mm-0');
    expect(total(mm0, 'mmlab_frames_free')).toBeNaN();
  });
});
