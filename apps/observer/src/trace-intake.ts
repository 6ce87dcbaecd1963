/**
 * Trace intake: the observer's own NATS connection, subscribed to every service's trace
 * subject. Trace messages are plain JSON published by Tracer (not Nest packets): batches of
 * events (TraceBatch, libs/protocol), or one bare event. So this is a raw `nats`
 * subscription, not a Nest handler. Every event is validated on its own; a bad one is counted
 * and its reason kept, never thrown: a broken publisher must not blind the observer.
 *
 * A batch carries the seq range of its events. Per instance the intake remembers the highest
 * seq it got; a batch that starts above the next one means the events between were lost
 * (core NATS is at most once), so it asks every tracer to replay (TRACE_REPLAY_SUBJECT, at
 * most once per REPLAY_ASK_MS) and drops the copies of what it has (SeenEvents).
 */
import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import { Events, type NatsConnection } from 'nats';
import {
  TRACE_REPLAY_SUBJECT,
  TRACE_WILDCARD,
  TraceBatchEnvelope,
  TraceEvent,
  TRACE_PREFIX,
  traceMessageEvents,
  traceSubject,
} from '@mmlab/protocol';
import { REPLAY_KEEP, connectNats } from '@mmlab/runtime';
import { TraceFile } from './trace-file';
import type { TraceStore } from './trace-store';

/** The instance a trace subject names (mmlab.trace.<service>.<instance>), else undefined. */
function traceSubjectInstance(subject: string): string | undefined {
  const rest = subject.startsWith(`${TRACE_PREFIX}.`) ? subject.slice(TRACE_PREFIX.length + 1) : '';
  const dot = rest.indexOf('.');
  return dot > 0 ? rest.slice(dot + 1) : undefined;
}

/** How many rejection reasons GET /stats shows. */
export const KEPT_REJECTIONS = 10;

export type Decoded = { ok: true; event: TraceEvent } | { ok: false; reason: string };

/** At most one replay request per this long (a gap seen in a burst asks once). */
export const REPLAY_ASK_MS = 1000;

const reasonOf = (issues: ReadonlyArray<{ path: PropertyKey[]; message: string }>): string => {
  const why = issues
    .slice(0, 3)
    .map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`)
    .join('; ');
  return why.length > 300 ? why.slice(0, 300) + '…' : why;
};

/** Validate one parsed event; never throws. */
function validateEvent(raw: unknown): Decoded {
  const r = TraceEvent.safeParse(raw);
  if (r.success) return { ok: true, event: r.data };
  return { ok: false, reason: reasonOf(r.error.issues) };
}

const parseJson = (data: Uint8Array | string): { ok: true; raw: unknown } | { ok: false } => {
  try {
    return {
      ok: true,
      raw: JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8')),
    };
  } catch {
    return { ok: false };
  }
};

/** Decode one message holding a single trace event; never throws. */
export function decodeTraceEvent(data: Uint8Array | string): Decoded {
  const j = parseJson(data);
  return j.ok ? validateEvent(j.raw) : { ok: false, reason: 'not JSON' };
}

/** What one trace message holds: each event decoded on its own, and a batch's seq range. */
export interface DecodedMessage {
  events: Decoded[];
  range?: { instance: string; first: number; last: number };
}

/** Decode one trace message (a TraceBatch, or one bare event); never throws. */
export function decodeTraceMessage(data: Uint8Array | string): DecodedMessage {
  const j = parseJson(data);
  if (!j.ok) return { events: [{ ok: false, reason: 'not JSON' }] };
  const m = traceMessageEvents(j.raw);
  if (!m) {
    // not a batch (a broken one, or no object at all): say why, as of an event or a batch
    const b = TraceBatchEnvelope.safeParse(j.raw);
    const isBatch = typeof j.raw === 'object' && j.raw !== null && 'events' in j.raw;
    if (isBatch && !b.success)
      return { events: [{ ok: false, reason: `batch: ${reasonOf(b.error.issues)}` }] };
    return { events: [validateEvent(j.raw)] };
  }
  return { events: m.events.map(validateEvent), ...(m.range ? { range: m.range } : {}) };
}

export interface IntakeOptions {
  natsUrl: string;
  /** NATS connection name (shows in the server's connz) */
  name: string;
  store: TraceStore;
  /** append every stored event here as JSON lines ('' or absent: memory only) */
  traceFile?: string;
}

/**
 * The events already stored, to drop what a tracer's replay sends again (libs/runtime Tracer):
 * per instance, the keys (`id@ts`: a restarted instance numbers its events from 1 again, at
 * other times) of its last 2·REPLAY_KEEP events — more than a replay resends.
 */
export class SeenEvents {
  private readonly perInstance = new Map<
    string,
    { keys: Set<string>; order: string[]; head: number }
  >();
  private readonly keep: number;

  constructor(keep = 2 * REPLAY_KEEP) {
    this.keep = keep;
  }

  /** true the first time this event is offered, false for a copy of one already seen. */
  first(e: TraceEvent): boolean {
    const key = `${e.id}@${e.ts}`;
    let s = this.perInstance.get(e.instance);
    if (!s) this.perInstance.set(e.instance, (s = { keys: new Set(), order: [], head: 0 }));
    if (s.keys.has(key)) return false;
    s.keys.add(key);
    if (s.order.length < this.keep) s.order.push(key);
    else {
      s.keys.delete(s.order[s.head]);
      s.order[s.head] = key;
      s.head = (s.head + 1) % this.keep;
    }
    return true;
  }
}

export class TraceIntake implements OnApplicationShutdown {
  private readonly log = new Logger('TraceIntake');
  /** false between a NATS disconnect and the reconnect (the connection object stays open) */
  private linkUp = true;
  private closing: Promise<void> | null = null;
  /** Messages that failed to decode or validate since the last reset. */
  rejected = 0;
  /** Of those, events sent on another service's or instance's trace subject (forgeries). */
  forged = 0;
  /** Copies of stored events (a tracer's replay) dropped. */
  duplicates = 0;
  /** Batches that started past the next seq of their instance (events lost in between). */
  gaps = 0;
  /** per instance: the highest seq a batch brought */
  private readonly lastSeq = new Map<string, number>();
  private lastReplayAsk = 0;
  private readonly seen = new SeenEvents();
  /** `<subject>: <reason>` of the last KEPT_REJECTIONS rejected messages, oldest first. */
  lastRejected: string[] = [];

  private constructor(
    readonly nc: NatsConnection,
    readonly store: TraceStore,
    readonly file: TraceFile | null,
  ) {}

  /** Connect, open the trace file, subscribe: events flow into the store from here on. */
  static async open(o: IntakeOptions): Promise<TraceIntake> {
    const file = o.traceFile ? await TraceFile.open(o.traceFile) : null;
    let nc: NatsConnection;
    try {
      nc = await connectNats(o.natsUrl, o.name);
    } catch (e) {
      await file?.close();
      throw e;
    }
    const intake = new TraceIntake(nc, o.store, file);
    // A callback subscription, not an async iterator: the callback runs synchronously while
    // the client parses the socket, in arrival order. sync() relies on it (see there).
    nc.subscribe(TRACE_WILDCARD, { callback: (_err, msg) => intake.accept(msg.subject, msg.data) });
    void intake.watchLink();
    return intake;
  }

  /**
   * One trace message: store each of its events (and append it to the file) in order, or count
   * it as rejected; note a gap in its instance's seqs.
   */
  accept(subject: string, data: Uint8Array | string): void {
    const m = decodeTraceMessage(data);
    // A batch or an event is its sender's only on that sender's own subject (mmlab.trace.
    // <service>.<instance>, which NATS lets only that identity publish: libs/protocol
    // permissions.ts): one naming another service or instance is a forgery, dropped.
    const forged = m.range && traceSubjectInstance(subject) !== m.range.instance;
    if (m.range && !forged) this.checkSeq(m.range);
    for (const d of m.events) {
      const why = !d.ok
        ? d.reason
        : forged || traceSubject(d.event.service, d.event.instance) !== subject
          ? `an event of ${d.event.service}/${d.event.instance} sent on another's subject`
          : null;
      if (why !== null || !d.ok) {
        this.rejected++;
        if (d.ok) this.forged++;
        this.lastRejected.push(`${subject}: ${why}`);
        if (this.lastRejected.length > KEPT_REJECTIONS) this.lastRejected.shift();
        continue;
      }
      if (!this.seen.first(d.event)) {
        this.duplicates++;
        continue;
      }
      this.store.add(d.event);
      this.file?.append(d.event);
    }
  }

  /**
   * A batch of seqs first..last from instance: past the next seq expected (lost events), ask
   * for a replay. A batch from seq 1 is a restarted instance (or a replay from its start).
   * An instance not seen before is taken as it comes (the observer joined late).
   */
  private checkSeq(r: { instance: string; first: number; last: number }): void {
    const prev = this.lastSeq.get(r.instance);
    if (prev !== undefined && r.first > prev + 1) {
      this.gaps++;
      const t = Date.now();
      if (t - this.lastReplayAsk >= REPLAY_ASK_MS && !this.nc.isClosed()) {
        this.lastReplayAsk = t;
        try {
          this.nc.publish(TRACE_REPLAY_SUBJECT);
        } catch {
          // draining: nothing to ask any more
        }
      }
    }
    this.lastSeq.set(
      r.instance,
      r.first === 1 || prev === undefined ? r.last : Math.max(prev, r.last),
    );
  }

  /**
   * Wait until every trace event the NATS server delivered to this connection before now is
   * stored; returns the store size.
   *
   * flush() sends PING on the intake connection and resolves on the PONG. The server writes
   * to one client connection in order, so the PONG comes after every MSG it had already routed
   * to us (a publisher's own flush() returning means its messages were routed: that is the
   * barrier the lab uses, `flush` on every service, then observerSync). The client parses the
   * socket in order and hands each MSG to the callback subscription synchronously, before it
   * reaches the PONG; so when flush() resolves, each of those events went through accept().
   * An iterator subscription would only have queued them.
   */
  async sync(): Promise<number> {
    await this.nc.flush();
    return this.store.size;
  }

  /** Clear the store and the rejection counters (POST /reset). Returns the events dropped. */
  reset(): number {
    this.rejected = 0;
    this.forged = 0;
    this.lastRejected = [];
    return this.store.clear();
  }

  /** The NATS connection is open and connected (not closed, not between reconnects). */
  get healthy(): boolean {
    return !this.nc.isClosed() && this.linkUp;
  }

  private async watchLink(): Promise<void> {
    try {
      for await (const s of this.nc.status()) {
        if (s.type === Events.Disconnect) this.linkUp = false;
        else if (s.type === Events.Reconnect) {
          this.linkUp = true;
          // what was published while we were away is gone: ask every tracer for it again
          this.nc.publish(TRACE_REPLAY_SUBJECT);
        }
      }
    } catch (e) {
      this.log.warn(`status watch ended: ${String(e)}`);
    }
  }

  /** Stop receiving, store what is in flight (drain), then close the trace file. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (!this.nc.isClosed()) {
      // drain() needs the server; disconnected, or if it takes too long, just close.
      const drained = this.linkUp
        ? Promise.race([
            this.nc.drain().then(() => true),
            new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref()),
          ])
        : Promise.resolve(false);
      if (!(await drained.catch(() => false))) await this.nc.close().catch(() => undefined);
    }
    await this.file?.close();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }
}
