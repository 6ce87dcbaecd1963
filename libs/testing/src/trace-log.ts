/** Every trace event of a lab, subscribed to directly on NATS (tests that run without observer). */
import type { NatsConnection, Subscription } from 'nats';
import { TRACE_WILDCARD, TraceEvent, traceMessageEvents } from '@mmlab/protocol';

export class TraceLog {
  readonly events: TraceEvent[] = [];
  private waiters: Array<{ pred: (e: TraceEvent) => boolean; resolve: (e: TraceEvent) => void }> =
    [];
  private sub: Subscription | null = null;

  constructor(private readonly nc: NatsConnection) {}

  start(): this {
    this.sub = this.nc.subscribe(TRACE_WILDCARD, {
      // a message is a batch of events (TraceBatch) or one bare event
      callback: (_err, m) => {
        const raw: unknown = JSON.parse(m.string());
        for (const r of traceMessageEvents(raw)?.events ?? [raw]) {
          const e = TraceEvent.parse(r);
          this.events.push(e);
          this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
        }
      },
    });
    return this;
  }

  /** The first event (already seen, or still to come) that matches. */
  next<E extends TraceEvent = TraceEvent>(pred: (e: TraceEvent) => boolean): Promise<E> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen as E);
    return new Promise((resolve) =>
      this.waiters.push({ pred, resolve: resolve as (e: TraceEvent) => void }),
    );
  }

  stop(): void {
    this.sub?.unsubscribe();
  }
}

/** Poll cond until it holds; throw after timeoutMs (a hang guard, not a timing assertion). */
export async function until(
  cond: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
