/**
 * The observer's in-memory trace: a bounded ring of TraceEvents in arrival order, the log
 * buffer of the lab (like the kernel's printk ring buffer, the oldest records go first).
 * Plain class: no Nest, no I/O.
 */
import type { TraceEvent, TraceKind } from '@mmlab/protocol';

export const DEFAULT_MAX_EVENTS = 2_000_000;

/** Filters of GET /events; every given field must match (ts range inclusive). */
export interface EventFilter {
  kinds?: readonly TraceKind[];
  pid?: number;
  instance?: string;
  op?: string;
  from?: number;
  to?: number;
}

export interface EventPage {
  total: number;
  offset: number;
  events: TraceEvent[];
}

export class TraceStore {
  /**
   * Invariants: buf.length <= cap; the events in arrival order are buf[head..] then
   * buf[..head) (head is 0 until the ring first wraps); byKind counts exactly the stored
   * events; dropped counts every event overwritten since the last clear().
   */
  private buf: TraceEvent[] = [];
  private head = 0;
  private counts = new Map<string, number>();
  private droppedCount = 0;

  constructor(readonly cap: number = DEFAULT_MAX_EVENTS) {
    if (!Number.isInteger(cap) || cap < 1)
      throw new RangeError(`store cap must be a positive integer, got ${cap}`);
  }

  get size(): number {
    return this.buf.length;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  add(e: TraceEvent): void {
    this.counts.set(e.kind, (this.counts.get(e.kind) ?? 0) + 1);
    if (this.buf.length < this.cap) {
      this.buf.push(e);
      return;
    }
    const old = this.buf[this.head];
    this.counts.set(old.kind, this.counts.get(old.kind)! - 1);
    this.buf[this.head] = e;
    this.head = (this.head + 1) % this.cap;
    this.droppedCount++;
  }

  /** Every stored event, oldest first (a copy). */
  all(): TraceEvent[] {
    return this.head === 0
      ? this.buf.slice()
      : this.buf.slice(this.head).concat(this.buf.slice(0, this.head));
  }

  /** Stored events per kind (kinds with none are absent). */
  byKind(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, n] of [...this.counts].sort(([a], [b]) => a.localeCompare(b)))
      if (n > 0) out[k] = n;
    return out;
  }

  /** The matching events, oldest first: total matches, and the page [offset, offset + limit). */
  query(f: EventFilter, offset: number, limit: number): EventPage {
    const kinds = f.kinds && f.kinds.length > 0 ? new Set<string>(f.kinds) : null;
    const match = (e: TraceEvent): boolean =>
      (kinds === null || kinds.has(e.kind)) &&
      (f.pid === undefined || ('pid' in e && e.pid === f.pid)) &&
      (f.instance === undefined || e.instance === f.instance) &&
      (f.op === undefined || e.op === f.op) &&
      (f.from === undefined || e.ts >= f.from) &&
      (f.to === undefined || e.ts <= f.to);
    const events: TraceEvent[] = [];
    let total = 0;
    const n = this.buf.length;
    for (let i = 0; i < n; i++) {
      const e = this.buf[(this.head + i) % n];
      if (!match(e)) continue;
      if (total >= offset && events.length < limit) events.push(e);
      total++;
    }
    return { total, offset, events };
  }

  /** Forget everything (between runs of a long-lived lab). Returns how many events were stored. */
  clear(): number {
    const n = this.buf.length;
    this.buf = [];
    this.head = 0;
    this.counts = new Map();
    this.droppedCount = 0;
    return n;
  }
}
