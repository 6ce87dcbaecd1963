/** Small helpers over sorted traces, shared by the rules. */
import type { EventOf, TraceEvent, TraceKind } from '@mmlab/protocol';

/** Type guard for one event kind: `events.filter(isKind('access'))`. */
export const isKind =
  <K extends TraceKind>(kind: K) =>
  (e: TraceEvent): e is EventOf<K> =>
    e.kind === kind;

/** Sort by ts, stably (Array.prototype.sort is stable since ES2019); the input is not modified. */
export function sortByTs(events: readonly TraceEvent[]): TraceEvent[] {
  return [...events].sort((a, b) => a.ts - b.ts);
}

/** First index i with xs[i] >= x in an ascending array (xs.length if none). */
export function lowerBound(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Milliseconds, printed for a human reading a verdict. */
export const ms = (n: number): string => `${Number(n.toFixed(3))} ms`;
