/**
 * The one clock of every trace event: wall-clock milliseconds with sub-millisecond resolution,
 * comparable across the processes of one machine to well under a millisecond.
 *
 * It is CLOCK_MONOTONIC (process.hrtime, one clock for every process of the machine) plus an
 * offset to the wall clock that each process measures once (wallOffset). It is not
 * `performance.timeOrigin + performance.now()`: Node reads the two clocks behind timeOrigin
 * one after the other at start, and a process preempted between the two reads (a loaded
 * 2-core machine starting a dozen services) keeps that error for its whole life. One CPU agent
 * was 9–13 ms ahead of mm that way, so its TLB shootdown acks were traced after the frees they
 * came before, and the checker reported teardown-before-free on a correct run.
 */
import { hrtime } from 'node:process';

/** CLOCK_MONOTONIC in milliseconds. */
const monoMs = (): number => Number(hrtime.bigint()) / 1e6;

/**
 * wall − mono, measured at WALL_EDGES ticks of the millisecond wall clock: right after Date.now()
 * turns, the wall clock is just past the value read, so `wall − mono` read then is a lower bound
 * of the true offset within a loop iteration; a preemption anywhere only lowers that sample,
 * never raises it, so the largest sample is the estimate (error: one loop iteration, unless
 * every edge was preempted). Pure: the two clocks are parameters (tests give it fake ones).
 */
export function wallOffset(wallMs: () => number, mono: () => number, edges = WALL_EDGES): number {
  let best = -Infinity;
  for (let i = 0; i < edges; i++) {
    const before = wallMs();
    let w: number;
    let m: number;
    do {
      w = wallMs();
      m = mono();
    } while (w === before);
    best = Math.max(best, w - m);
  }
  return best;
}
const WALL_EDGES = 5;

let offset: number | undefined;

/** Wall-clock milliseconds (µs fraction), comparable across local processes. */
export const now = (): number => (offset ??= wallOffset(Date.now, monoMs)) + monoMs();
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
