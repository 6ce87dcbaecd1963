/**
 * The lab's Prometheus metrics: declared once here (name, type, help, labels), one prom-client
 * Registry per process with the default process metrics beside them, served as GET /metrics by
 * every service (http.ts).
 *
 * Most of them are fed by the trace: every event a service emits passes through a Tracer tap,
 * and `traceToSamples` (a plain function, unit-tested) turns the events that carry a measure
 * into samples — PT-lock waits and holds, faults, notifier callbacks, TLB and MTT lookups. The
 * rest are read on scrape: frames free from Redis (mm), violations and intake counters from the
 * observer's checker and store.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import {
  type EventOf,
  type FaultKind,
  type MnCallback,
  PAGE_SIZE,
  type TraceEvent,
  type TraceKind,
} from '@mmlab/protocol';
import type { Tracer } from './tracer';

export type MetricType = 'histogram' | 'counter' | 'gauge';

export interface MetricDef {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly labels: readonly string[];
}

/** Every metric of the lab. The Grafana dashboard may use only these (dashboard.spec.ts). */
export const METRIC_DEFS = {
  ptlHold: {
    name: 'mmlab_ptl_hold_seconds',
    type: 'histogram',
    help:
      'How long a PT lock was held, from grant to release (ptl.release heldMs); lock: pte ' +
      '(split PTE lock, pte_lockptr) or page_table_lock (mm->page_table_lock)',
    labels: ['lock'],
  },
  ptlWait: {
    name: 'mmlab_ptl_wait_seconds',
    type: 'histogram',
    help: 'How long an mm operation waited for a PT lock before it was granted (ptl.acquire waitMs)',
    labels: ['lock'],
  },
  invalidation: {
    name: 'mmlab_invalidation_seconds',
    type: 'histogram',
    help:
      'MMU-notifier callback latency as mm sees it: from sending the callback to the ' +
      "subscriber's ack (mn.ack waitedMs), per subscriber and callback",
    labels: ['subscriber', 'callback'],
  },
  fault: {
    name: 'mmlab_fault_seconds',
    type: 'histogram',
    help:
      'handle_mm_fault latency in mm (fault.end durMs) by how the fault was resolved: ' +
      'zero, anon, wp-copy, wp-reuse, spurious; error when it failed',
    labels: ['kind'],
  },
  lookups: {
    name: 'mmlab_tlb_lookups_total',
    type: 'counter',
    help:
      'Translation lookups of a CPU TLB or an HCA MTT, by agent (cpu0, hca0, ...) and result: ' +
      'miss for each fill (tlb.fill, smap.set outside a prefetch), hit for each access that ' +
      'used a translation already there',
    labels: ['agent', 'result'],
  },
  framesFree: {
    name: 'mmlab_frames_free',
    type: 'gauge',
    help: 'Physical frames on the free list (Redis memInfo, read at scrape time by mm)',
    labels: [],
  },
  swapUsed: {
    name: 'mmlab_swap_used_pages',
    type: 'gauge',
    help: 'Pages swapped out; always 0 until mmlab models swap (reclaim is an open issue)',
    labels: [],
  },
  violations: {
    name: 'mmlab_violations_total',
    type: 'counter',
    help:
      "Invariant violations found by the observer's checker since the observer started, by " +
      'invariant (the checker runs over the stored trace at scrape time)',
    labels: ['invariant'],
  },
  observerStored: {
    name: 'mmlab_observer_events_stored_total',
    type: 'counter',
    help: 'Trace events the observer took in and stored',
    labels: [],
  },
  observerRejected: {
    name: 'mmlab_observer_events_rejected_total',
    type: 'counter',
    help: 'Trace messages the observer rejected (not JSON, or not a valid trace event)',
    labels: [],
  },
  observerDropped: {
    name: 'mmlab_observer_events_dropped_total',
    type: 'counter',
    help: "Stored trace events the observer dropped to stay within its store's capacity",
    labels: [],
  },
  observerInStore: {
    name: 'mmlab_observer_store_events',
    type: 'gauge',
    help: "Trace events in the observer's store now",
    labels: [],
  },
} as const satisfies Record<string, MetricDef>;

export type MetricKey = keyof typeof METRIC_DEFS;

/** The series names a metric is exported as (a histogram's _bucket, _sum and _count). */
export function seriesNames(def: MetricDef): string[] {
  return def.type === 'histogram'
    ? [`${def.name}_bucket`, `${def.name}_sum`, `${def.name}_count`]
    : [def.name];
}

/** Seconds, from 50 µs (one Redis script) to 30 s (a subscriber that sleeps). */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
  5, 10, 30,
];

// ---- trace events → samples -------------------------------------------------------------

/** `ptl:mm` is mm->page_table_lock; `ptl:<n>` a split PTE lock. */
export type LockKind = 'pte' | 'page_table_lock';
export type FaultLabel = FaultKind | 'error';
export type LookupResult = 'hit' | 'miss';

export type MetricSample =
  | { metric: 'ptlHold' | 'ptlWait'; labels: { lock: LockKind }; seconds: number }
  | { metric: 'fault'; labels: { kind: FaultLabel }; seconds: number }
  | {
      metric: 'invalidation';
      labels: { subscriber: string; callback: MnCallback };
      seconds: number;
    }
  | { metric: 'lookups'; labels: { agent: string; result: LookupResult } };

export const lockKind = (lock: string): LockKind => (lock === 'ptl:mm' ? 'page_table_lock' : 'pte');

/** At most this many fills waiting for their access are remembered (the oldest go first). */
export const MAX_PENDING_FILLS = 10_000;

/**
 * Which translations were just filled and not yet used. A fill (TLB miss, MTT miss) is followed
 * by the access that needed it; that access is not a hit. An access with no pending fill used a
 * translation that was already there: a hit.
 */
export class LookupState {
  private readonly pending = new Set<string>();

  get size(): number {
    return this.pending.size;
  }

  fill(agent: string, pid: number, vpn: number): void {
    const k = `${agent}:${pid}:${vpn}`;
    this.pending.delete(k); // re-insert: the newest last
    this.pending.add(k);
    if (this.pending.size > MAX_PENDING_FILLS)
      this.pending.delete(this.pending.values().next().value as string);
  }

  /** true when this access used a fresh fill (and consumes it). */
  consume(agent: string, pid: number, vpn: number): boolean {
    return this.pending.delete(`${agent}:${pid}:${vpn}`);
  }

  /** Forget fills of agent/pid in [firstVpn, endVpn) (a shootdown or an MTT zap). */
  forget(agent: string, pid: number, firstVpn: number, endVpn: number): void {
    const prefix = `${agent}:${pid}:`;
    for (const k of this.pending) {
      if (!k.startsWith(prefix)) continue;
      const vpn = Number(k.slice(prefix.length));
      if (vpn >= firstVpn && vpn < endVpn) this.pending.delete(k);
    }
  }
}

const vpnOf = (addr: number): number => Math.floor(addr / PAGE_SIZE);
const seconds = (ms: number): number => Math.max(0, ms) / 1000;
/** Op ids are `<instance>/<kind>#<n>` (OpIds): a prefetch populates the MTT ahead of any lookup. */
const isPrefetch = (op: string | undefined): boolean => op?.includes('/prefetch#') ?? false;

type Mapper<K extends TraceKind> = (e: EventOf<K>, lookups: LookupState) => MetricSample[];

/** The events that carry a measure; every other kind contributes nothing. */
const MAPPERS: { [K in TraceKind]?: Mapper<K> } = {
  'ptl.acquire': (e) => [
    { metric: 'ptlWait', labels: { lock: lockKind(e.lock) }, seconds: seconds(e.waitMs) },
  ],
  'ptl.release': (e) => [
    { metric: 'ptlHold', labels: { lock: lockKind(e.lock) }, seconds: seconds(e.heldMs) },
  ],
  'fault.end': (e) => {
    const kind: FaultLabel = e.result === 'ok' && e.how ? e.how : 'error';
    return [{ metric: 'fault', labels: { kind }, seconds: seconds(e.durMs) }];
  },
  'mn.ack': (e) => [
    {
      metric: 'invalidation',
      labels: { subscriber: e.subscriber, callback: e.callback },
      seconds: seconds(e.waitedMs),
    },
  ],
  'tlb.fill': (e, lookups) => {
    lookups.fill(e.agent, e.pid, vpnOf(e.addr));
    return [{ metric: 'lookups', labels: { agent: e.agent, result: 'miss' } }];
  },
  'smap.set': (e, lookups) => {
    if (isPrefetch(e.op)) return [];
    lookups.fill(e.agent, e.pid, vpnOf(e.addr));
    return [{ metric: 'lookups', labels: { agent: e.agent, result: 'miss' } }];
  },
  'tlb.flush': (e, lookups) => {
    lookups.forget(e.agent, e.pid, vpnOf(e.start), Math.ceil(e.end / PAGE_SIZE));
    return [];
  },
  'smap.clear': (e, lookups) => {
    const vpn = vpnOf(e.addr);
    lookups.forget(e.agent, e.pid, vpn, vpn + 1);
    return [];
  },
  access: (e, lookups) =>
    lookups.consume(e.agent, e.pid, vpnOf(e.addr))
      ? []
      : [{ metric: 'lookups', labels: { agent: e.agent, result: 'hit' } }],
};

/**
 * The samples one trace event contributes. Pure apart from `lookups`, the fill state of this
 * process's TLBs and MTTs, which it reads and updates.
 */
export function traceToSamples(e: TraceEvent, lookups: LookupState): MetricSample[] {
  const map = MAPPERS[e.kind] as Mapper<TraceKind> | undefined;
  return map ? map(e, lookups) : [];
}

/**
 * What a counter must grow by to follow a source that only grows except when it is reset:
 * the difference, or, after a reset (current below last), everything counted since.
 */
export const counterDelta = (last: number, current: number): number =>
  current >= last ? current - last : current;

// ---- the registry -------------------------------------------------------------------------

/** Read on scrape by the observer. */
export interface ObserverSource {
  /** every invariant the checker knows (their series start at 0) */
  invariants: readonly string[];
  /** violations per invariant in what is stored now */
  violations(): Record<string, number> | Promise<Record<string, number>>;
  /** store counters since the last reset (cheap: read once per series per scrape) */
  intake(): { stored: number; rejected: number; dropped: number; inStore: number };
}

export interface LabMetricsOptions {
  /** process_* and nodejs_* metrics (default true) */
  defaultMetrics?: boolean;
}

export class LabMetrics {
  readonly registry = new Registry();
  readonly ptlHold: Histogram<'lock'>;
  readonly ptlWait: Histogram<'lock'>;
  readonly invalidation: Histogram<'subscriber' | 'callback'>;
  readonly fault: Histogram<'kind'>;
  readonly lookups: Counter<'agent' | 'result'>;
  private memory: { read: () => Promise<{ free: number }>; timeoutMs: number } | null = null;
  private observer: ObserverSource | null = null;

  constructor(opts: LabMetricsOptions = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const histogram = (d: MetricDef) =>
      new Histogram({
        name: d.name,
        help: d.help,
        labelNames: d.labels,
        buckets: LATENCY_BUCKETS,
        registers: [this.registry],
      });
    this.ptlHold = histogram(METRIC_DEFS.ptlHold);
    this.ptlWait = histogram(METRIC_DEFS.ptlWait);
    this.invalidation = histogram(METRIC_DEFS.invalidation);
    this.fault = histogram(METRIC_DEFS.fault);
    this.lookups = new Counter({
      name: METRIC_DEFS.lookups.name,
      help: METRIC_DEFS.lookups.help,
      labelNames: METRIC_DEFS.lookups.labels,
      registers: [this.registry],
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of everything registered (runs the scrape-time reads). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  observe(samples: readonly MetricSample[]): void {
    for (const s of samples) {
      switch (s.metric) {
        case 'ptlHold':
          this.ptlHold.observe(s.labels, s.seconds);
          break;
        case 'ptlWait':
          this.ptlWait.observe(s.labels, s.seconds);
          break;
        case 'fault':
          this.fault.observe(s.labels, s.seconds);
          break;
        case 'invalidation':
          this.invalidation.observe(s.labels, s.seconds);
          break;
        case 'lookups':
          this.lookups.inc(s.labels);
          break;
      }
    }
  }

  /**
   * Feed the trace metrics from every event `tracer` emits. The tap runs inside emit, on the
   * caller's path: it never throws and does no I/O.
   */
  tapTracer(tracer: Tracer): void {
    const state = new LookupState();
    tracer.tap((e) => {
      try {
        this.observe(traceToSamples(e, state));
      } catch {
        // a metric must never break the code that emitted the event
      }
    });
  }

  /**
   * mm: frames free and swap use, read from `read` on every scrape (a later call replaces the
   * source). A read that fails or takes longer than timeoutMs exports NaN (unknown), not a
   * stale value.
   */
  trackMemory(read: () => Promise<{ free: number }>, timeoutMs = 1000): void {
    const first = this.memory === null;
    this.memory = { read, timeoutMs };
    if (!first) return;
    const source = () => this.memory!;
    new Gauge({
      name: METRIC_DEFS.framesFree.name,
      help: METRIC_DEFS.framesFree.help,
      registers: [this.registry],
      async collect() {
        const m = source();
        try {
          this.set((await withTimeout(m.read(), m.timeoutMs, 'memInfo')).free);
        } catch {
          this.set(NaN);
        }
      },
    });
    new Gauge({
      name: METRIC_DEFS.swapUsed.name,
      help: METRIC_DEFS.swapUsed.help,
      registers: [this.registry],
    }).set(0);
  }

  /**
   * The observer: violations by invariant and its intake counters, read on every scrape (a
   * later call replaces the source). Each counter grows by what its source gained since the
   * previous scrape; a source that went down was reset, and all it has now is new.
   */
  trackObserver(source: ObserverSource): void {
    const first = this.observer === null;
    this.observer = source;
    if (!first) return;
    const src = () => this.observer!;
    const last = new Map<string, number>();
    const grow = (key: string, current: number): number => {
      const d = counterDelta(last.get(key) ?? 0, current);
      last.set(key, current);
      return d;
    };
    const reg = [this.registry];
    const violations = new Counter({
      name: METRIC_DEFS.violations.name,
      help: METRIC_DEFS.violations.help,
      labelNames: METRIC_DEFS.violations.labels,
      registers: reg,
      async collect() {
        const found = await src().violations();
        for (const [invariant, n] of Object.entries(found))
          this.inc({ invariant }, grow(`violations:${invariant}`, n));
      },
    });
    for (const invariant of source.invariants) violations.inc({ invariant }, 0);
    new Gauge({
      name: METRIC_DEFS.observerInStore.name,
      help: METRIC_DEFS.observerInStore.help,
      registers: reg,
      collect() {
        this.set(src().intake().inStore);
      },
    });
    const counter = (d: MetricDef, pick: (i: ReturnType<ObserverSource['intake']>) => number) =>
      new Counter({
        name: d.name,
        help: d.help,
        registers: reg,
        collect() {
          this.inc(grow(d.name, pick(src().intake())));
        },
      });
    counter(METRIC_DEFS.observerStored, (i) => i.stored);
    counter(METRIC_DEFS.observerRejected, (i) => i.rejected);
    counter(METRIC_DEFS.observerDropped, (i) => i.dropped);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

let shared: LabMetrics | undefined;

/** This process's metrics: one registry, created on first use. */
export function processMetrics(): LabMetrics {
  return (shared ??= new LabMetrics());
}
