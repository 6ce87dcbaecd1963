import { describe, expect, it } from 'vitest';
import { MMAP_BASE, PAGE_SIZE, type TraceEvent, type TraceInput } from '@mmlab/protocol';
import {
  LabMetrics,
  LookupState,
  MAX_PENDING_FILLS,
  METRIC_DEFS,
  type MetricSample,
  counterDelta,
  lockKind,
  seriesNames,
  traceToSamples,
} from './metrics';
import { Tracer } from './tracer';

const A = MMAP_BASE;
const B = MMAP_BASE + PAGE_SIZE;

/** A stamped event, as a Tracer would publish it. */
let seq = 0;
const ev = (input: TraceInput, service: TraceEvent['service'] = 'mm'): TraceEvent => ({
  ...input,
  id: `t:${++seq}`,
  ts: 1,
  service,
  instance: 't',
});

const fill = (agent: string, addr: number): TraceEvent =>
  ev({ kind: 'tlb.fill', agent, pid: 1, addr, pfn: 5, gen: 1, writable: true }, 'cpu');
const set = (agent: string, addr: number, op?: string): TraceEvent =>
  ev({ kind: 'smap.set', op, agent, pid: 1, addr, pfn: 5, gen: 1, writable: true }, 'hca');
const access = (agent: string, addr: number): TraceEvent =>
  ev(
    {
      kind: 'access',
      agent,
      pid: 1,
      addr,
      rw: 'read',
      value: 0,
      pfn: 5,
      gen: 1,
      frameGen: 1,
      frameFree: false,
      tStart: 1,
      tEnd: 2,
    },
    agent.startsWith('hca') ? 'hca' : agent.startsWith('kvm') ? 'kvm' : 'cpu',
  );
const flush = (agent: string, start: number, end: number): TraceEvent =>
  ev({ kind: 'tlb.flush', agent, pid: 1, start, end, entries: 1 }, 'cpu');

/** The lookup results a sequence of events yields, in order. */
function lookups(events: TraceEvent[], state = new LookupState()): string[] {
  return events
    .flatMap((e) => traceToSamples(e, state))
    .map((s) => (s.metric === 'lookups' ? `${s.labels.agent}:${s.labels.result}` : s.metric));
}

/** The value of one series in a text exposition (undefined: not there). */
function series(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('traceToSamples', () => {
  it('maps PT-lock waits and holds to seconds, by lock kind', () => {
    const s = new LookupState();
    const acq = ev({
      kind: 'ptl.acquire',
      pid: 1,
      lock: 'ptl:3',
      owner: 'mm-0',
      token: 1,
      waitMs: 2.5,
    });
    const rel = ev({
      kind: 'ptl.release',
      pid: 1,
      lock: 'ptl:mm',
      owner: 'mm-0',
      token: 2,
      heldMs: 1500,
      released: true,
    });
    expect(traceToSamples(acq, s)).toEqual<MetricSample[]>([
      { metric: 'ptlWait', labels: { lock: 'pte' }, seconds: 0.0025 },
    ]);
    expect(traceToSamples(rel, s)).toEqual<MetricSample[]>([
      { metric: 'ptlHold', labels: { lock: 'page_table_lock' }, seconds: 1.5 },
    ]);
    expect([lockKind('ptl:0'), lockKind('ptl:mm')]).toEqual(['pte', 'page_table_lock']);
  });

  it('labels a fault by how it was resolved, and a failed one as error', () => {
    const base = { pid: 1, addr: A, access: 'write', agent: 'cpu0', retries: 0 } as const;
    const s = new LookupState();
    const ok = ev({ kind: 'fault.end', ...base, result: 'ok', how: 'wp-copy', durMs: 4 });
    const failed = ev({ kind: 'fault.end', ...base, result: 'SIGSEGV', durMs: 1 });
    expect(traceToSamples(ok, s)).toEqual([
      { metric: 'fault', labels: { kind: 'wp-copy' }, seconds: 0.004 },
    ]);
    expect(traceToSamples(failed, s)).toEqual([
      { metric: 'fault', labels: { kind: 'error' }, seconds: 0.001 },
    ]);
  });

  it('measures a notifier callback per subscriber and callback from its ack', () => {
    const ack = ev({
      kind: 'mn.ack',
      pid: 1,
      subscriber: 'hca0',
      callback: 'invalidate_range_start',
      inv: 'mm-0/inv#1',
      waitedMs: 50,
    });
    expect(traceToSamples(ack, new LookupState())).toEqual([
      {
        metric: 'invalidation',
        labels: { subscriber: 'hca0', callback: 'invalidate_range_start' },
        seconds: 0.05,
      },
    ]);
  });

  it('counts a TLB fill as a miss and an access through an entry already there as a hit', () => {
    const s = new LookupState();
    // miss: fill, then the access that needed it; then two hits; another page misses.
    expect(
      lookups([fill('cpu0', A), access('cpu0', A + 8), access('cpu0', A), access('cpu1', A)], s),
    ).toEqual(['cpu0:miss', 'cpu0:hit', 'cpu1:hit']);
    expect(lookups([fill('cpu0', B), access('cpu0', B), access('cpu0', B)], s)).toEqual([
      'cpu0:miss',
      'cpu0:hit',
    ]);
    expect(s.size).toBe(0);
  });

  it('forgets fills a shootdown removed before their access', () => {
    const s = new LookupState();
    lookups([fill('cpu0', A), fill('cpu0', B), fill('cpu1', A)], s);
    expect(s.size).toBe(3);
    lookups([flush('cpu0', A, A + PAGE_SIZE)], s);
    expect(s.size).toBe(2);
    // A was refilled by cpu0 after the flush: its access is still the miss's, not a hit.
    expect(lookups([fill('cpu0', A), access('cpu0', A), access('cpu0', B)], s)).toEqual([
      'cpu0:miss',
    ]);
  });

  it("counts the HCA's MTT: smap.set is a miss, a prefetched entry hits, a zap forgets", () => {
    const s = new LookupState();
    expect(
      lookups(
        [
          set('hca0', A, 'hca0/rdma_read#1'),
          access('hca0', A),
          access('hca0', A),
          set('hca0', B, 'hca0/prefetch#2'),
          access('hca0', B),
        ],
        s,
      ),
    ).toEqual(['hca0:miss', 'hca0:hit', 'hca0:hit']);
    lookups([set('hca0', B, 'hca0/rdma_write#3')], s);
    expect(s.size).toBe(1);
    traceToSamples(
      ev({ kind: 'smap.clear', agent: 'hca0', pid: 1, addr: B, pfn: 5, gen: 1 }, 'hca'),
      s,
    );
    expect(s.size).toBe(0);
  });

  it("measures KVM's guest faults, their retries and its mmu_lock holds and waits", () => {
    const s = new LookupState();
    const base = { agent: 'kvm0', pid: 1, vm: 1, gfn: 3, addr: A } as const;
    const ok = ev({ kind: 'kvm.fault.end', ...base, retries: 2, result: 'ok', durMs: 7 }, 'kvm');
    const failed = ev(
      { kind: 'kvm.fault.end', ...base, retries: 0, result: 'EFAULT', durMs: 1 },
      'kvm',
    );
    expect(traceToSamples(ok, s)).toEqual<MetricSample[]>([
      { metric: 'kvmGuestFault', labels: { agent: 'kvm0', result: 'ok' }, seconds: 0.007 },
      { metric: 'kvmFaultRetries', labels: { agent: 'kvm0' }, count: 2 },
    ]);
    expect(traceToSamples(failed, s)).toEqual<MetricSample[]>([
      { metric: 'kvmGuestFault', labels: { agent: 'kvm0', result: 'EFAULT' }, seconds: 0.001 },
    ]);
    const hold = (what: 'zap' | 'fault', zapped: number) =>
      ev(
        {
          kind: 'kvm.mmu_lock',
          agent: 'kvm0',
          pid: 1,
          vm: 1,
          mode: 'spin',
          what,
          waitMs: 3,
          heldMs: 250,
          zapped,
        },
        'kvm',
      );
    const labels = { agent: 'kvm0', mode: 'spin', what: 'zap' };
    expect(traceToSamples(hold('zap', 512), s)).toEqual<MetricSample[]>([
      { metric: 'kvmMmuLockWait', labels, seconds: 0.003 },
      { metric: 'kvmMmuLockHold', labels, seconds: 0.25 },
      { metric: 'kvmSptesZapped', labels: { agent: 'kvm0', mode: 'spin' }, count: 512 },
    ]);
    expect(traceToSamples(hold('fault', 0), s).map((x) => x.metric)).toEqual([
      'kvmMmuLockWait',
      'kvmMmuLockHold',
    ]);
  });

  it('counts a KVM sPTE installed by a guest fault as a miss, not one change_pte switched', () => {
    const s = new LookupState();
    const kset = (op: string) =>
      ev(
        { kind: 'smap.set', op, agent: 'kvm0', pid: 1, addr: A, pfn: 5, gen: 1, writable: false },
        'kvm',
      );
    expect(lookups([kset('kvm0/guest_read#1'), access('kvm0', A), access('kvm0', A)], s)).toEqual([
      'kvm0:miss',
      'kvm0:hit',
    ]);
    expect(lookups([kset('kvm0/change_pte#2'), access('kvm0', A)], s)).toEqual(['kvm0:hit']);
  });

  it('keeps at most MAX_PENDING_FILLS fills waiting, the newest', () => {
    const s = new LookupState();
    for (let i = 0; i <= MAX_PENDING_FILLS; i++) s.fill('cpu0', 1, i);
    expect(s.size).toBe(MAX_PENDING_FILLS);
    expect(s.consume('cpu0', 1, 0)).toBe(false);
    expect(s.consume('cpu0', 1, MAX_PENDING_FILLS)).toBe(true);
  });

  it('ignores events that carry no measure', () => {
    const s = new LookupState();
    expect(traceToSamples(ev({ kind: 'process.create', pid: 1 }), s)).toEqual([]);
    expect(traceToSamples(ev({ kind: 'frame.alloc', pfn: 1, gen: 1 }), s)).toEqual([]);
  });
});

describe('counterDelta', () => {
  it('follows growth, and counts everything again after a reset', () => {
    expect(counterDelta(0, 5)).toBe(5);
    expect(counterDelta(5, 7)).toBe(2);
    expect(counterDelta(7, 7)).toBe(0);
    expect(counterDelta(7, 3)).toBe(3);
  });
});

describe('LabMetrics', () => {
  it("reads a KVM's sPTEs on every scrape, valid and obsolete", async () => {
    const m = new LabMetrics({ defaultMetrics: false });
    let counts = { valid: 3, obsolete: 0 };
    m.trackSptes('kvm0', () => counts);
    expect(series(await m.render(), 'mmlab_kvm_sptes{agent="kvm0",state="valid"}')).toBe(3);
    counts = { valid: 0, obsolete: 3 };
    const text = await m.render();
    expect(series(text, 'mmlab_kvm_sptes{agent="kvm0",state="valid"}')).toBe(0);
    expect(series(text, 'mmlab_kvm_sptes{agent="kvm0",state="obsolete"}')).toBe(3);
  });

  it("feeds the trace metrics from a tracer's events", async () => {
    const m = new LabMetrics({ defaultMetrics: false });
    const t = new Tracer(null, 'cpu', 'cpu0');
    m.tapTracer(t);
    t.emit({ kind: 'tlb.fill', agent: 'cpu0', pid: 1, addr: A, pfn: 3, gen: 1, writable: true });
    for (let i = 0; i < 3; i++)
      t.emit({
        kind: 'access',
        agent: 'cpu0',
        pid: 1,
        addr: A,
        rw: 'read',
        value: 0,
        pfn: 3,
        gen: 1,
        frameGen: 1,
        frameFree: false,
        tStart: 0,
        tEnd: 0,
      });
    t.emit({
      kind: 'fault.end',
      pid: 1,
      addr: A,
      access: 'write',
      agent: 'cpu0',
      result: 'ok',
      how: 'anon',
      durMs: 3,
      retries: 0,
    });
    const text = await m.render();
    expect(series(text, 'mmlab_tlb_lookups_total{agent="cpu0",result="miss"}')).toBe(1);
    expect(series(text, 'mmlab_tlb_lookups_total{agent="cpu0",result="hit"}')).toBe(2);
    expect(series(text, 'mmlab_fault_seconds_count{kind="anon"}')).toBe(1);
    expect(series(text, 'mmlab_fault_seconds_sum{kind="anon"}')).toBe(0.003);
    expect(series(text, 'mmlab_fault_seconds_bucket{le="0.0025",kind="anon"}')).toBe(0);
    expect(series(text, 'mmlab_fault_seconds_bucket{le="0.005",kind="anon"}')).toBe(1);
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('reads frames free and swap used on scrape, NaN when the read fails', async () => {
    const m = new LabMetrics({ defaultMetrics: false });
    let free: number | Error = 42;
    let swapUsed = 0;
    m.trackMemory(async () => {
      if (free instanceof Error) throw free;
      return { free, swapUsed };
    });
    let text = await m.render();
    expect(series(text, 'mmlab_frames_free')).toBe(42);
    expect(series(text, 'mmlab_swap_used_pages')).toBe(0);
    free = 7;
    swapUsed = 5;
    text = await m.render();
    expect(series(text, 'mmlab_frames_free')).toBe(7);
    expect(series(text, 'mmlab_swap_used_pages')).toBe(5);
    free = new Error('redis is gone');
    text = await m.render();
    expect(series(text, 'mmlab_frames_free')).toBeNaN();
    expect(series(text, 'mmlab_swap_used_pages')).toBeNaN();
  });

  it('exports frames free only where memory is tracked (mm)', async () => {
    const text = await new LabMetrics({ defaultMetrics: false }).render();
    expect(text).not.toContain('mmlab_frames_free');
    expect(text).toContain('# TYPE mmlab_ptl_hold_seconds histogram');
  });

  it("counts the observer's violations and intake as counters across scrapes and resets", async () => {
    const m = new LabMetrics({ defaultMetrics: false });
    let violations: Record<string, number> = { 'no-stale-access': 1 };
    let intake = { stored: 10, rejected: 2, dropped: 0, inStore: 10 };
    m.trackObserver({
      invariants: ['no-stale-access', 'paired-range'],
      violations: () => violations,
      intake: () => intake,
    });
    const v = (text: string, inv: string) =>
      series(text, `mmlab_violations_total{invariant="${inv}"}`);
    let text = await m.render();
    expect([v(text, 'no-stale-access'), v(text, 'paired-range')]).toEqual([1, 0]);
    expect(series(text, 'mmlab_observer_events_stored_total')).toBe(10);
    expect(series(text, 'mmlab_observer_events_rejected_total')).toBe(2);
    expect(series(text, 'mmlab_observer_store_events')).toBe(10);

    violations = { 'no-stale-access': 3, 'paired-range': 1 };
    intake = { stored: 15, rejected: 2, dropped: 1, inStore: 14 };
    text = await m.render();
    expect([v(text, 'no-stale-access'), v(text, 'paired-range')]).toEqual([3, 1]);
    expect(series(text, 'mmlab_observer_events_stored_total')).toBe(15);
    expect(series(text, 'mmlab_observer_events_dropped_total')).toBe(1);

    // POST /reset: the sources start again from 0; the counters keep growing.
    violations = { 'no-stale-access': 1, 'paired-range': 0 };
    intake = { stored: 4, rejected: 0, dropped: 0, inStore: 4 };
    text = await m.render();
    expect([v(text, 'no-stale-access'), v(text, 'paired-range')]).toEqual([4, 1]);
    expect(series(text, 'mmlab_observer_events_stored_total')).toBe(19);
    expect(series(text, 'mmlab_observer_store_events')).toBe(4);
  });

  it('declares every metric once, with its help, and exports each when its source is tracked', async () => {
    const m = new LabMetrics();
    m.trackMemory(async () => ({ free: 1 }));
    m.trackSptes('kvm0', () => ({ valid: 0, obsolete: 0 }));
    m.trackObserver({
      invariants: [],
      violations: () => ({}),
      intake: () => ({ stored: 0, rejected: 0, dropped: 0, inStore: 0 }),
    });
    const text = await m.render();
    const names = Object.values(METRIC_DEFS).map((d) => d.name);
    expect(new Set(names).size).toBe(names.length);
    for (const d of Object.values(METRIC_DEFS)) {
      expect(d.name).toMatch(/^mmlab_[a-z_]+$/);
      expect(text).toContain(`# HELP ${d.name} ${d.help}`);
      expect(text).toContain(`# TYPE ${d.name} ${d.type}`);
    }
    expect(seriesNames(METRIC_DEFS.fault)).toEqual([
      'mmlab_fault_seconds_bucket',
      'mmlab_fault_seconds_sum',
      'mmlab_fault_seconds_count',
    ]);
    // the default process metrics are there too
    expect(text).toContain('# TYPE process_cpu_user_seconds_total counter');
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
  });
});
