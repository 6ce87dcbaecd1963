/**
 * Models: nothing in the kernel (SRCU never calls a notifier twice). Over NATS, mm resends a
 * callback whose ack did not come in time, with the same inv: the subscriber must do the work
 * once and ack every copy. A copy of a callback in progress waits for it; a copy of one done
 * gets its result at once. A callback that failed is forgotten, so its copy runs it again.
 *
 * Keyed by (callback, inv): invalidate_range_start and _end carry the same inv. Keeps the last
 * `capacity` keys (far more than mm can have outstanding).
 */
export class CallbackLog {
  private readonly runs = new Map<string, Promise<unknown>>();

  constructor(private readonly capacity = 4096) {}

  has(key: string): boolean {
    return this.runs.has(key);
  }

  /** Run work once per key; every call gets its result. work starts in this tick if new. */
  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const seen = this.runs.get(key);
    if (seen) return seen as Promise<T>;
    const p = work();
    this.runs.set(key, p);
    p.catch(() => {
      if (this.runs.get(key) === p) this.runs.delete(key);
    });
    while (this.runs.size > this.capacity) {
      const oldest = this.runs.keys().next().value as string;
      this.runs.delete(oldest);
    }
    return p;
  }
}
