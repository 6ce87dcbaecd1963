/**
 * The feed behind the page, outside React: the observer's SSE stream (GET /stream) into a
 * reorder buffer, and at most once per animation frame into the DiagramBuilder (bounded), so
 * that a burst of events costs one model update and one render per frame. Paused, events are
 * kept aside (bounded too) and placed on resume. Violations come from GET /invariants,
 * polled while the trace changes.
 */
import { useSyncExternalStore } from 'react';
import type { TraceEvent } from '@mmlab/protocol';
import {
  DiagramBuilder,
  type DiagramFilter,
  type DiagramModel,
  RateMeter,
  ReorderBuffer,
  type RunExpectation,
  type ViolationInput,
  markExpected,
} from '@mmlab/diagram';
import { postWithToken } from './lab-token';
import { EMPTY_MEMORY, type MemoryState, foldMemory } from './memory';

export type Status = 'connecting' | 'live' | 'reconnecting' | 'lagged' | 'closed';

export interface LiveSnapshot {
  model: DiagramModel;
  status: Status;
  paused: boolean;
  /** events received from the stream since the page loaded (or the last reload) */
  received: number;
  /** events waiting while paused */
  waiting: number;
  /** events dropped while paused (more than the buffer holds) */
  missed: number;
  /** events per second over the last second (0 once the lab has been idle a second) */
  rate: number;
  violations: ViolationInput[];
  /** details of the last `lagged` message */
  lagged: { dropped: number; sent: number } | null;
  /** why the last action on the observer failed (clearing the trace) */
  actionError: string | null;
  /** reclaim and swap so far (the Memory panel): every event placed, paused or not */
  memory: MemoryState;
}

export interface LiveOptions {
  /** the observer's base URL ('' : this page's origin) */
  observer: string;
  /** events the diagram keeps */
  cap: number;
  /** poll GET /invariants at most this often (ms) */
  violationsEveryMs: number;
}

const HOLDBACK_MS = 50;
/** no event for this long: place the held-back ones */
const IDLE_MS = 120;
/** no event for this long: ask the checker */
const QUIET_MS = 400;
/** an invalidation younger than this may still end */
const IN_FLIGHT_MS = 5000;
/** how often the rate is recomputed while it is not 0, events or not */
const RATE_EVERY_MS = 250;

export class Live {
  readonly builder: DiagramBuilder;
  private readonly reorder = new ReorderBuffer(HOLDBACK_MS);
  private es: EventSource | null = null;
  private frame = 0;
  private idleTimer = 0;
  private pollTimer = 0;
  private lastArrival = 0;
  private aside: TraceEvent[] = [];
  private snap: LiveSnapshot;
  private readonly listeners = new Set<() => void>();
  private readonly meter = new RateMeter(1000);
  private rateTimer = 0;
  /** the newest scenario run seen in the stream, and what it expects to break */
  private run: RunExpectation | null = null;
  private polledVersion = -1;
  private stopped = false;

  constructor(private readonly opts: LiveOptions) {
    this.builder = new DiagramBuilder({ cap: opts.cap });
    this.snap = {
      model: this.builder.model(),
      status: 'connecting',
      paused: false,
      received: 0,
      waiting: 0,
      missed: 0,
      rate: 0,
      violations: [],
      lagged: null,
      actionError: null,
      memory: EMPTY_MEMORY,
    };
  }

  // ---- React binding -------------------------------------------------------------------

  subscribe = (l: () => void): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  getSnapshot = (): LiveSnapshot => this.snap;

  private publish(patch: Partial<LiveSnapshot>): void {
    this.snap = { ...this.snap, ...patch };
    for (const l of this.listeners) l();
  }

  // ---- the stream ------------------------------------------------------------------------

  start(): void {
    this.stopped = false;
    this.connect();
    this.schedulePoll(300);
  }

  stop(): void {
    this.stopped = true;
    this.es?.close();
    this.es = null;
    cancelAnimationFrame(this.frame);
    window.clearTimeout(this.idleTimer);
    window.clearTimeout(this.pollTimer);
    window.clearInterval(this.rateTimer);
    this.rateTimer = 0;
    this.frame = 0;
  }

  /** Start over: forget everything and replay what the observer has. */
  reload(): void {
    this.es?.close();
    this.builder.clear();
    this.reorder.clear();
    this.aside = [];
    this.meter.clear();
    this.run = null;
    this.publish({
      model: this.builder.model(),
      received: 0,
      waiting: 0,
      missed: 0,
      lagged: null,
      violations: [],
      memory: EMPTY_MEMORY,
    });
    this.connect();
  }

  private connect(): void {
    this.publish({ status: 'connecting' });
    const es = new EventSource(`${this.opts.observer}/stream?from=0&tail=${this.opts.cap}`);
    this.es = es;
    es.addEventListener('hello', () => this.publish({ status: 'live' }));
    es.addEventListener('events', (m: MessageEvent<string>) => {
      const batch = JSON.parse(m.data) as TraceEvent[];
      if (this.snap.received === 0) performance.mark('mmlab:first-events');
      this.reorder.add(batch);
      this.lastArrival = performance.now();
      this.meter.add(this.lastArrival, batch.length);
      for (const e of batch)
        if (e.kind === 'run.start' && (this.run === null || e.ts >= this.run.ts))
          this.run = { ts: e.ts, scenario: e.scenario, invariants: e.expectViolations };
      this.watchRate();
      this.snap = { ...this.snap, received: this.snap.received + batch.length };
      this.scheduleFrame();
    });
    // the replay is complete: nothing older is coming, place everything now
    es.addEventListener('replayed', () => this.scheduleFrame(true));
    es.addEventListener('reset', () => {
      this.builder.clear();
      this.reorder.clear();
      this.aside = [];
      this.publish({
        model: this.builder.model(),
        received: 0,
        violations: [],
        waiting: 0,
        memory: EMPTY_MEMORY,
      });
    });
    es.addEventListener('lagged', (m: MessageEvent<string>) => {
      const info = JSON.parse(m.data) as { dropped: number; sent: number };
      es.close();
      this.publish({ status: 'lagged', lagged: info });
    });
    es.onerror = () => {
      if (this.snap.status === 'lagged' || this.stopped) return;
      // EventSource reconnects by itself, with Last-Event-ID: the observer resumes there
      this.publish({ status: es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting' });
    };
  }

  // ---- frames ----------------------------------------------------------------------------

  private flushAll = false;

  private scheduleFrame(all = false): void {
    if (all) this.flushAll = true;
    if (this.frame === 0) this.frame = requestAnimationFrame(this.onFrame);
  }

  private onFrame = (): void => {
    this.frame = 0;
    const idle = performance.now() - this.lastArrival >= IDLE_MS;
    const batch = this.reorder.take(this.flushAll || idle);
    this.flushAll = false;
    const patch: Partial<LiveSnapshot> = { rate: this.rate() };
    if (batch.length > 0) {
      // counted as they come, paused or not: events set aside may be dropped, counts are not
      const memory = foldMemory(this.snap.memory, batch);
      if (memory !== this.snap.memory) patch.memory = memory;
      if (this.snap.paused) {
        for (const e of batch) this.aside.push(e);
        if (this.aside.length > this.opts.cap) {
          const drop = this.aside.length - this.opts.cap;
          this.aside.splice(0, drop);
          patch.missed = this.snap.missed + drop;
        }
        patch.waiting = this.aside.length;
      } else {
        this.builder.push(batch);
        patch.model = this.builder.model();
      }
    }
    this.publish(patch);
    // events still held back: look again when the stream goes quiet
    window.clearTimeout(this.idleTimer);
    if (this.reorder.size > 0)
      this.idleTimer = window.setTimeout(() => this.scheduleFrame(), IDLE_MS);
  };

  private rate(): number {
    return this.meter.rate(performance.now());
  }

  /**
   * The rate is recomputed on a timer while it is above 0, not only when events arrive: on an
   * idle lab it falls to 0 instead of showing the last second that had events forever.
   */
  private watchRate(): void {
    if (this.rateTimer !== 0 || this.stopped) return;
    this.rateTimer = window.setInterval(() => {
      const rate = this.rate();
      if (rate !== this.snap.rate) this.publish({ rate });
      if (rate === 0) {
        window.clearInterval(this.rateTimer);
        this.rateTimer = 0;
      }
    }, RATE_EVERY_MS);
  }

  // ---- controls --------------------------------------------------------------------------

  setPaused(paused: boolean): void {
    if (paused === this.snap.paused) return;
    if (paused) {
      this.publish({ paused: true, waiting: 0, missed: 0 });
      return;
    }
    const aside = this.aside;
    this.aside = [];
    if (aside.length > 0) this.builder.push(aside);
    this.publish({ paused: false, waiting: 0, model: this.builder.model() });
  }

  /** Forget the observer's stored trace (POST /reset, with the lab's token); the stream says `reset`. */
  async clearTrace(): Promise<void> {
    try {
      await postWithToken(`${this.opts.observer}/reset`);
      this.publish({ actionError: null });
    } catch (e) {
      this.publish({ actionError: `Clearing the trace failed: ${(e as Error).message}` });
    }
  }

  setFilter(filter: DiagramFilter): void {
    this.builder.setFilter(filter);
    this.publish({ model: this.builder.model() });
  }

  // ---- violations --------------------------------------------------------------------------

  private lastPoll = 0;

  private schedulePoll(ms: number): void {
    window.clearTimeout(this.pollTimer);
    if (!this.stopped) this.pollTimer = window.setTimeout(() => void this.poll(), ms);
  }

  /**
   * Ask the checker again when the trace changed and then went quiet for a moment (the end of
   * a step), or every violationsEveryMs while it keeps changing.
   */
  private async poll(): Promise<void> {
    const version = this.snap.received;
    const now = performance.now();
    const quiet = now - this.lastArrival >= QUIET_MS;
    const due = now - this.lastPoll >= this.opts.violationsEveryMs;
    let wait = QUIET_MS;
    if (version !== this.polledVersion && !this.snap.paused && (quiet || due)) {
      this.lastPoll = now;
      try {
        const r = await fetch(`${this.opts.observer}/invariants?maxViolations=200`);
        if (r.ok) {
          const body = (await r.json()) as {
            verdicts: Array<{
              name: string;
              violations: Array<{ message: string; events: Array<{ id: string }> }>;
            }>;
          };
          this.polledVersion = version;
          const found = body.verdicts
            .flatMap((v) =>
              v.violations.map((x) => ({
                invariant: v.name,
                message: x.message,
                events: x.events,
              })),
            )
            .filter((v) => !this.inFlight(v));
          const violations = markExpected(found, this.run, (id) => this.tsOf(id));
          if (JSON.stringify(violations) !== JSON.stringify(this.snap.violations)) {
            this.builder.setViolations(violations);
            this.publish({ violations, model: this.builder.model() });
          }
        }
      } catch {
        // the observer is away; the stream's status says so
      }
      // the checker runs over the whole store: ask less often when it is slow
      wait = Math.max(QUIET_MS, (performance.now() - now) * 10);
    }
    this.schedulePoll(wait);
  }

  /** The time of a kept event. */
  private tsOf(id: string): number | undefined {
    const row = this.builder.rowOf(id);
    const m = this.builder.model();
    return row === undefined ? undefined : m.rows[row - m.firstRow]?.event.ts;
  }

  /**
   * The checker sees an invalidation that has not ended yet as unpaired; while its group is
   * still in flight (and young), such a finding is not shown.
   */
  private inFlight(v: ViolationInput): boolean {
    const m = this.builder.model();
    const newest = m.rows.length > 0 ? m.rows[m.rows.length - 1].event.ts : 0;
    return v.events.every((e) => {
      const row = this.builder.rowOf(e.id);
      const inv = row === undefined ? undefined : m.rows[row - m.firstRow]?.inv;
      const g = inv === undefined ? undefined : this.builder.group(inv);
      return g !== undefined && !g.complete && newest - g.startTs < IN_FLIGHT_MS;
    });
  }
}

export function useLive(live: Live): LiveSnapshot {
  return useSyncExternalStore(live.subscribe, live.getSnapshot);
}
