/**
 * Publishes trace events without ever blocking the caller: `emit` encodes and hands the bytes
 * to the NATS client's outbound buffer (no await, no flush). `flush` waits for the server to
 * have them, which the lab uses as a barrier before it reads the verdict.
 */
import type { NatsConnection } from 'nats';
import { type Service, type TraceEvent, type TraceInput, traceSubject } from '@mmlab/protocol';
import { now } from './clock';

export class Tracer {
  private seq = 0;
  private readonly subject: string;
  /** Local listeners (tests, the observer feeding itself). */
  private readonly taps: Array<(e: TraceEvent) => void> = [];

  constructor(
    private readonly nc: NatsConnection | null,
    readonly service: Service,
    readonly instance: string,
  ) {
    this.subject = traceSubject(service, instance);
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
    if (this.nc && !this.nc.isClosed()) this.nc.publish(this.subject, JSON.stringify(e));
    for (const t of this.taps) t(e);
    return e;
  }

  tap(fn: (e: TraceEvent) => void): void {
    this.taps.push(fn);
  }

  async flush(): Promise<void> {
    if (this.nc && !this.nc.isClosed()) await this.nc.flush();
  }
}
