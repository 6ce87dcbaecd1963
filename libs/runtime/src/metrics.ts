/**
 * The lab's Prometheus metrics: declared once here (name, type, help, labels), one prom-client
 * Registry per process with the default process metrics beside them, served as GET /metrics by
 * every service (http.ts).
 *
 * Most of them are fed by the trace: every event a service emits passes through a Tracer tap,
 * and `traceToSamples` (a plain function, unit-tested) turns the events that carry a measure
 * into samples — PT-lock waits and holds, faults, notifier callbacks, TLB, MTT and sPTE lookups,
 * KVM's guest faults, their retries and its mmu_lock holds. The rest are read on scrape: frames
 * free from Redis (mm), sPTEs from the VMs (kvm), violations and intake counters from the
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
      "Translation lookups of a CPU TLB, an HCA MTT or a KVM's sPTEs, by agent (cpu0, hca0, " +
      'kvm0, ...) and result: miss for each fill (tlb.fill, smap.set outside a prefetch or a ' +
      'change_pte), hit for each access that used a translation already there',
    labels: ['agent', 'result'],
  },
  kvmGuestFault: {
    name: 'mmlab_kvm_guest_fault_seconds',
    type: 'histogram',
    help:
      "A KVM guest fault's latency (tdp_page_fault, kvm.fault.end durMs: gup through mm, " +
      'mmu_notifier_retry, install), by KVM instance and result: ok or the error code',
    labels: ['agent', 'result'],
  },
  kvmFaultRetries: {
    name: 'mmlab_kvm_fault_retries_total',
    type: 'counter',
    help:
      'Guest faults that mmu_notifier_retry() sent round again (an invalidation was in ' +
      'progress or the sequence moved since the snapshot), by KVM instance (kvm.fault.end retries)',
    labels: ['agent'],
  },
  kvmMmuLockHold: {
    name: 'mmlab_kvm_mmu_lock_hold_seconds',
    type: 'histogram',
    help:
      "How long a VM's kvm->mmu_lock was held (kvm.mmu_lock heldMs), by KVM instance, mmuLock " +
      'mode (spin, sleep, generation) and what for (zap, fault, page, change_pte, young, ...)',
    labels: ['agent', 'mode', 'what'],
  },
  kvmMmuLockWait: {
    name: 'mmlab_kvm_mmu_lock_wait_seconds',
    type: 'histogram',
    help:
      "How long a taker waited for a VM's kvm->mmu_lock (kvm.mmu_lock waitMs): a guest fault " +
      'behind a long range zap waits here; by KVM instance, mmuLock mode and what for',
    labels: ['agent', 'mode', 'what'],
  },
  kvmSptesZapped: {
    name: 'mmlab_kvm_sptes_zapped_total',
    type: 'counter',
    help:
      'sPTEs removed by mmu_lock holds (kvm.mmu_lock zapped; generation: made invalid by an ' +
      'mmu_valid_gen bump), by KVM instance and mmuLock mode',
    labels: ['agent', 'mode'],
  },
  kvmSptes: {
    name: 'mmlab_kvm_sptes',
    type: 'gauge',
    help:
      "sPTEs in a KVM instance's VMs, read at scrape time: valid, or obsolete (of an older " +
      'mmu_valid_gen, waiting for kvm_zap_obsolete_pages)',
    labels: ['agent', 'state'],
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
    help: 'Swap slots in use: pages swapped out, or in the swap cache (Redis swapInfo, read at scrape time by mm)',
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
  | { metric: 'kvmGuestFault'; labels: { agent: string; result: string }; seconds: number }
  | { metric: 'kvmFaultRetries'; labels: { agent: string }; count: number }
  | {
      metric: 'kvmMmuLockHold' | 'kvmMmuLockWait';
      labels: { agent: string; mode: string; what: string };
      seconds: number;
    }
  | { metric: 'kvmSptesZapped'; labels: { agent: string; mode: string }; count: number }
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
/**
 * Op ids are `<instance>/<kind>#<n>` (OpIds): a prefetch populates the MTT ahead of any lookup,
 * and KVM's change_pte switches an sPTE to the new page without any access asking for it.
 */
const isNotAFill = (op: string | undefined): boolean =>
  op !== undefined && (op.includes('/prefetch#') || op.includes('/change_pte#'));

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
    if (isNotAFill(e.op)) return [];
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
  'kvm.fault.end': (e) => [
    {
      metric: 'kvmGuestFault',
      labels: { agent: e.agent, result: e.result },
      seconds: seconds(e.durMs),
    },
    ...(e.retries > 0
      ? [{ metric: 'kvmFaultRetries' as const, labels: { agent: e.agent }, count: e.retries }]
      : []),
  ],
  'kvm.mmu_lock': (e) => {
    const labels = { agent: e.agent, mode: e.mode, what: e.what };
    return [
      { metric: 'kvmMmuLockWait', labels, seconds: seconds(e.waitMs) },
      { metric: 'kvmMmuLockHold', labels, seconds: seconds(e.heldMs) },
      ...(e.zapped > 0
        ? [
            {
              metric: 'kvmSptesZapped' as const,
              labels: { agent: e.agent, mode: e.mode },
              count: e.zapped,
            },
          ]
        : []),
    ];
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

/** A KVM instance's sPTEs, over all its VMs (read on scrape). */
export interface SpteCounts {
  valid: number;
  /** of an older mmu_valid_gen, not yet freed (mmuLock generation) */
  obsolete: number;
}

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
  readonly kvmGuestFault: Histogram<'agent' | 'result'>;
  readonly kvmFaultRetries: Counter<'agent'>;
  readonly kvmMmuLockHold: Histogram<'agent' | 'mode' | 'what'>;
  readonly kvmMmuLockWait: Histogram<'agent' | 'mode' | 'what'>;
  readonly kvmSptesZapped: Counter<'agent' | 'mode'>;
  private sptes: (() => SpteCounts) | null = null;
  private memory: {
    read: () => Promise<{ free: number; swapUsed?: number }>;
    timeoutMs: number;
  } | null = null;
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
    const counter = (d: MetricDef) =>
      new Counter({
        name: d.name,
        help: d.help,
        labelNames: d.labels,
        registers: [this.registry],
      });
    this.lookups = counter(METRIC_DEFS.lookups);
    this.kvmGuestFault = histogram(METRIC_DEFS.kvmGuestFault);
    this.kvmFaultRetries = counter(METRIC_DEFS.kvmFaultRetries);
    this.kvmMmuLockHold = histogram(METRIC_DEFS.kvmMmuLockHold);
    this.kvmMmuLockWait = histogram(METRIC_DEFS.kvmMmuLockWait);
    this.kvmSptesZapped = counter(METRIC_DEFS.kvmSptesZapped);
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
        case 'kvmGuestFault':
          this.kvmGuestFault.observe(s.labels, s.seconds);
          break;
        case 'kvmFaultRetries':
          this.kvmFaultRetries.inc(s.labels, s.count);
          break;
        case 'kvmMmuLockHold':
          this.kvmMmuLockHold.observe(s.labels, s.seconds);
          break;
        case 'kvmMmuLockWait':
          this.kvmMmuLockWait.observe(s.labels, s.seconds);
          break;
        case 'kvmSptesZapped':
          this.kvmSptesZapped.inc(s.labels, s.count);
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
  trackMemory(read: () => Promise<{ free: number; swapUsed?: number }>, timeoutMs = 1000): void {
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
      async collect() {
        const m = source();
        try {
          this.set((await withTimeout(m.read(), m.timeoutMs, 'swapInfo')).swapUsed ?? 0);
        } catch {
          this.set(NaN);
        }
      },
    });
  }

  /**
   * kvm: the sPTEs of the instance's VMs, valid and obsolete, from `read` on every scrape (a
   * later call replaces the source). Read in the service's memory, so it cannot fail or wait.
   */
  trackSptes(agent: string, read: () => SpteCounts): void {
    const first = this.sptes === null;
    this.sptes = read;
    if (!first) return;
    const source = () => this.sptes!;
    new Gauge({
      name: METRIC_DEFS.kvmSptes.name,
      help: METRIC_DEFS.kvmSptes.help,
      labelNames: METRIC_DEFS.kvmSptes.labels,
      registers: [this.registry],
      collect() {
        const c = source()();
        this.set({ agent, state: 'valid' }, c.valid);
        this.set({ agent, state: 'obsolete' }, c.obsolete);
      },
    });
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
