/**
 * Events from several services reach the observer slightly out of timestamp order. The
 * dashboard holds each event back until events `holdbackMs` newer have arrived (or the stream
 * went quiet), so that DiagramBuilder almost always appends and rarely has to rebuild.
 */
import type { TraceEvent } from '@mmlab/protocol';

export class ReorderBuffer {
  private pending: TraceEvent[] = [];
  private newest = -Infinity;

  constructor(readonly holdbackMs = 50) {}

  get size(): number {
    return this.pending.length;
  }

  add(events: readonly TraceEvent[]): void {
    for (const e of events) {
      this.pending.push(e);
      if (e.ts > this.newest) this.newest = e.ts;
    }
  }

  /** The events old enough to place, in ts order; every pending one when `all`. */
  take(all = false): TraceEvent[] {
    if (this.pending.length === 0) return [];
    if (all) {
      const out = this.pending.sort((a, b) => a.ts - b.ts);
      this.pending = [];
      return out;
    }
    const limit = this.newest - this.holdbackMs;
    const out: TraceEvent[] = [];
    const keep: TraceEvent[] = [];
    for (const e of this.pending) (e.ts <= limit ? out : keep).push(e);
    this.pending = keep;
    return out.sort((a, b) => a.ts - b.ts);
  }

  clear(): void {
    this.pending = [];
    this.newest = -Infinity;
  }
}
