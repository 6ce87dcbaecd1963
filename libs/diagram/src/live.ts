/**
 * What the live view computes beside the diagram, as pure code: the events-per-second meter
 * (it must fall to 0 when the lab goes idle, not keep its last value) and which violations the
 * running scenario expects.
 */
import type { ViolationInput } from './types';

/** Events per second over a sliding window: ask it as often as you like, events or not. */
export class RateMeter {
  private readonly arrivals: Array<[number, number]> = [];

  constructor(private readonly windowMs = 1000) {}

  add(now: number, n: number): void {
    this.arrivals.push([now, n]);
  }

  /** events that arrived in (now - window, now]; 0 once the lab has been idle that long */
  rate(now: number): number {
    while (this.arrivals.length > 0 && this.arrivals[0][0] <= now - this.windowMs)
      this.arrivals.shift();
    return this.arrivals.reduce((s, [, n]) => s + n, 0);
  }

  clear(): void {
    this.arrivals.length = 0;
  }
}

/** The newest `run.start` seen: when the scenario began and what it expects to break. */
export interface RunExpectation {
  ts: number;
  scenario: string;
  invariants: readonly string[];
}

/**
 * Each violation marked `expected` iff the latest run expects its invariant and all its
 * events happened since that run began (a violation of an earlier run stays a finding).
 * `tsOf` gives an event's time, undefined for one no longer kept (then: not expected).
 */
export function markExpected(
  violations: readonly ViolationInput[],
  run: RunExpectation | null,
  tsOf: (eventId: string) => number | undefined,
): ViolationInput[] {
  return violations.map((v) => {
    const expected =
      run !== null &&
      run.invariants.includes(v.invariant) &&
      v.events.length > 0 &&
      v.events.every((e) => {
        const ts = tsOf(e.id);
        return ts !== undefined && ts >= run.ts;
      });
    return { ...v, expected };
  });
}
