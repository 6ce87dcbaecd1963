/**
 * Publishes trace events without ever blocking the caller: `emit` encodes and hands the bytes
 * to the NATS client's outbound buffer (no await, no flush). `flush` waits for the server to
 * have them, which the lab uses as a barrier before it reads the verdict.
 *
 * Core NATS is at most once: what is published while this client, the server or the observer
 * is away (a nats-server restart) is gone, and a trace with holes makes the checker see locks
 * never released and ranges never ended. So each tracer keeps its last REPLAY_KEEP events and
 * publishes them again when it is connected again, and when the observer asks (it does when
 * it is connected again: TRACE_REPLAY_SUBJECT); the observer drops the events it already has
 * (by id). Whichever of the two reconnects last, the events meet:
 *
 *   tracer                     nats-server            observer
 *   emit 41, 42 (lost)         restarting
 *   reconnect → republish      up                     (not yet back: dropped)
 *                                                     reconnect → replay request
 *   republish 1..42 ──────────────────────────────→   41, 42 stored; 1..40 already there
 *
 * Batches. An event is not published alone: emit appends it to the pending batch, which goes
 * out as one TraceBatch message (libs/protocol) when it holds TRACE_BATCH_MAX events or one
 * millisecond after its first event, whichever comes first; flush() and replay() send it at
 * once. Invariants:
 *   - every emitted event is in the ring (for a replay) and in exactly one live batch;
 *   - batches go out in seq order on one connection and one subject, so the observer gets each
 *     instance's events in emission order; a batch's events are consecutive: first..last;
 *   - a replay first sends the pending batch, then the ring again, oldest first, in batches.
 * Under load (the fault path) this is one message for several events instead of one each.
 */
import type { NatsConnection, Subscription } from 'nats';
import { Events } from 'nats';
import {
  type Service,
  TRACE_BATCH_MAX,
  TRACE_REPLAY_SUBJECT,
  type TraceEvent,
  type TraceInput,
  traceSubject,
} from '@mmlab/protocol';
import { now } from './clock';
import { type Span, endSpan, inSpan, startSpan } from './otel';

/** Fields that hold a virtual address: shown in hex on a span, as the lab writes them. */
const ADDR_FIELDS = new Set(['addr', 'start', 'end', 'from', 'to']);
/** What every event has and a span says otherwise (its resource, its own times). */
const NOT_ATTRIBUTES = new Set(['id', 'ts', 'service', 'kind']);

/** A trace event's fields as span attributes: `mmlab.<field>`, addresses in hex. */
export function eventAttributes(
  e: TraceEvent,
): Record<string, string | number | boolean | string[]> {
  const out: Record<string, string | number | boolean | string[]> = {};
  for (const [k, v] of Object.entries(e)) {
    if (NOT_ATTRIBUTES.has(k)) continue;
    if (typeof v === 'number') out[`mmlab.${k}`] = ADDR_FIELDS.has(k) ? `0x${v.toString(16)}` : v;
    else if (typeof v === 'string' || typeof v === 'boolean') out[`mmlab.${k}`] = v;
    else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) out[`mmlab.${k}`] = v;
  }
  return out;
}

/** How a step ended, for its closing event. */
export type StepOutcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * A step opened by Tracer.open and not closed yet (a hold that outlives the function that took
 * it, as a PT lock's does): its begin event, and its span (undefined: telemetry off). Run what
 * belongs under it with withSpan(step.span, fn).
 */
export interface OpenStep {
  readonly event: TraceEvent;
  readonly span: Span | undefined;
  /** Emit the closing event (if any), add its fields to the span, end the span (failed on error). */
  end(input?: TraceInput, error?: unknown): TraceEvent | undefined;
}

/** The least time between two replays asked over the bus (replayAsked). */
export const REPLAY_MIN_INTERVAL_MS = 1000;

/** Events kept for a replay: a few seconds of the busiest service under a benchmark. */
export const REPLAY_KEEP = 20_000;

export class Tracer {
  private seq = 0;
  private readonly subject: string;
  /** Local listeners (tests, the observer feeding itself). */
  private readonly taps: Array<(e: TraceEvent) => void> = [];
  /** the last REPLAY_KEEP encoded events, a ring: ring[(start + i) % REPLAY_KEEP] */
  private readonly ring: string[] = [];
  private start = 0;
  private replaySub: Subscription | null = null;
  /** replay requests received from the bus, and replays they caused (replayAsked) */
  replaysAsked = 0;
  replaysRun = 0;
  private lastReplayAt = 0;
  private replayTimer: NodeJS.Timeout | null = null;
  /** encoded events emitted and not yet published: seqs pendingFirst.. */
  private pending: string[] = [];
  private pendingFirst = 0;
  private timer: NodeJS.Timeout | null = null;
  /** batch messages published (replays included) */
  batches = 0;

  constructor(
    private readonly nc: NatsConnection | null,
    readonly service: Service,
    readonly instance: string,
  ) {
    this.subject = traceSubject(service, instance);
    if (nc) this.watch(nc);
  }

  get published(): number {
    return this.seq;
  }

  emit(input: TraceInput): TraceEvent {
    const e = {
      ...input,
      id: `${this.instance}:${++this.seq}`,
      ts: input.ts ?? now(),
      service: this.service,
      instance: this.instance,
    };
    const data = JSON.stringify(e);
    this.keep(data);
    if (this.nc) {
      if (this.pending.length === 0) {
        this.pendingFirst = this.seq;
        this.timer ??= setTimeout(() => this.sendPending(), 1);
      }
      this.pending.push(data);
      if (this.pending.length >= TRACE_BATCH_MAX) this.sendPending();
    }
    for (const t of this.taps) t(e);
    return e;
  }

  /** Publish the pending batch now (nothing when it is empty). */
  private sendPending(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const events = this.pending;
    if (events.length === 0) return;
    this.pending = [];
    this.publishBatch(this.pendingFirst, events);
  }

  /** One TraceBatch message of the encoded events first..first+n-1 (built without re-encoding them). */
  private publishBatch(first: number, events: string[]): void {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return;
    const data = `{"instance":${JSON.stringify(this.instance)},"first":${first},"last":${first + events.length - 1},"events":[${events.join(',')}]}`;
    try {
      nc.publish(this.subject, data);
      this.batches++;
    } catch {
      // draining or closing: what is lost here is in the ring, for a replay
    }
  }

  /**
   * One step, instrumented once for both views: `begin` is emitted now as the checker's trace
   * event and, with telemetry on, fn runs in a span `name` whose attributes are that event's
   * fields (eventAttributes: no attribute list written a second time beside the event). When
   * fn settles, `end` (if given) makes the closing event, which is emitted and whose fields are
   * added to the span before it ends (an error also marks the span failed). fn starts in this
   * tick, right after the begin event.
   */
  step<T>(
    name: string,
    begin: TraceInput,
    fn: (span: Span | undefined) => Promise<T>,
    end?: (outcome: StepOutcome<T>) => TraceInput | undefined,
  ): Promise<T> {
    const b = this.emit(begin);
    const finish = (span: Span | undefined, o: StepOutcome<T>): void => {
      const input = end?.(o);
      if (!input) return;
      const e = this.emit(input);
      span?.setAttributes(eventAttributes(e));
    };
    return inSpan(
      name,
      () => ({ attributes: eventAttributes(b) }),
      async (span) => {
        let value: T;
        try {
          value = await fn(span);
        } catch (error) {
          finish(span, { ok: false, error });
          throw error;
        }
        finish(span, { ok: true, value });
        return value;
      },
    );
  }

  /** Tracer.step for a step that does not fit one function: begin now, end() later. */
  open(name: string, begin: TraceInput): OpenStep {
    const event = this.emit(begin);
    const span = startSpan(name, () => ({ attributes: eventAttributes(event) }));
    let ended = false;
    return {
      event,
      span,
      end: (input, error) => {
        if (ended) return undefined;
        ended = true;
        const e = input ? this.emit(input) : undefined;
        if (span && e) span.setAttributes(eventAttributes(e));
        endSpan(span, error);
        return e;
      },
    };
  }

  tap(fn: (e: TraceEvent) => void): void {
    this.taps.push(fn);
  }

  /** Publish the pending batch and wait until the server has everything published so far. */
  async flush(): Promise<void> {
    this.sendPending();
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }

  /** Publish the kept events again, oldest first, in batches (the observer drops those it has). */
  replay(): number {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return 0;
    this.sendPending();
    const n = this.ring.length;
    // the ring holds seqs seq-n+1..seq, the oldest at start
    const oldest = this.seq - n + 1;
    for (let i = 0; i < n; i += TRACE_BATCH_MAX) {
      const chunk: string[] = [];
      for (let j = i; j < Math.min(n, i + TRACE_BATCH_MAX); j++)
        chunk.push(this.ring[(this.start + j) % n]);
      this.publishBatch(oldest + i, chunk);
    }
    return n;
  }

  /**
   * A replay request from the bus (the observer's, or anyone allowed to publish
   * TRACE_REPLAY_SUBJECT): at most one replay per REPLAY_MIN_INTERVAL_MS. A request inside the
   * interval is answered once, at its end, however many came (one of them, or a thousand: a
   * replay is up to REPLAY_KEEP events, and before this a burst of requests made every service
   * send that many times over). Requests answered → `replaysAsked`, replays run → `replaysRun`.
   */
  replayAsked(): void {
    this.replaysAsked++;
    if (this.replayTimer) return;
    const run = () => {
      this.replayTimer = null;
      this.lastReplayAt = Date.now();
      this.replaysRun++;
      this.replay();
    };
    const wait = this.lastReplayAt + REPLAY_MIN_INTERVAL_MS - Date.now();
    if (wait <= 0) return run();
    this.replayTimer = setTimeout(run, wait);
    this.replayTimer.unref?.();
  }

  private keep(data: string): void {
    if (this.ring.length < REPLAY_KEEP) this.ring.push(data);
    else {
      this.ring[this.start] = data;
      this.start = (this.start + 1) % REPLAY_KEEP;
    }
  }

  private watch(nc: NatsConnection): void {
    try {
      this.replaySub = nc.subscribe(TRACE_REPLAY_SUBJECT, { callback: () => this.replayAsked() });
    } catch {
      // a closed connection: nothing to replay to
    }
    void (async () => {
      try {
        for await (const s of nc.status()) if (s.type === Events.Reconnect) this.replay();
      } catch {
        // the status stream ends with the connection
      }
    })();
  }

  /** Stop answering replay requests (the connection itself belongs to the caller). */
  close(): void {
    this.sendPending();
    this.replaySub?.unsubscribe();
    if (this.replayTimer) clearTimeout(this.replayTimer);
    this.replayTimer = null;
  }
}
