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
 */
import type { NatsConnection, Subscription } from 'nats';
import { Events } from 'nats';
import {
  type Service,
  TRACE_REPLAY_SUBJECT,
  type TraceEvent,
  type TraceInput,
  traceSubject,
} from '@mmlab/protocol';
import { now } from './clock';

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
    if (this.nc && !this.nc.isClosed()) this.nc.publish(this.subject, data);
    for (const t of this.taps) t(e);
    return e;
  }

  tap(fn: (e: TraceEvent) => void): void {
    this.taps.push(fn);
  }

  async flush(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }

  /** Publish the kept events again, oldest first (the observer drops those it has). */
  replay(): number {
    const nc = this.nc;
    if (!nc || nc.isClosed()) return 0;
    const n = this.ring.length;
    for (let i = 0; i < n; i++) nc.publish(this.subject, this.ring[(this.start + i) % n]);
    return n;
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
      this.replaySub = nc.subscribe(TRACE_REPLAY_SUBJECT, { callback: () => this.replay() });
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
    this.replaySub?.unsubscribe();
  }
}
