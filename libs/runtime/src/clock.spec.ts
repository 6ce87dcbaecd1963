import { describe, expect, it } from 'vitest';
import { now, wallOffset } from './clock';

/**
 * A fake machine: a monotonic clock advancing `step` ms per read, a wall clock `offset` ahead
 * of it that reads whole milliseconds; `stall(at, ms)` preempts the reader for ms on its at-th
 * clock read (both clocks move on meanwhile).
 */
function machine(offset: number, step = 0.01, stalls: Array<[number, number]> = []) {
  let t = 1000.123;
  let reads = 0;
  const tick = () => {
    reads++;
    for (const [at, ms] of stalls) if (reads === at) t += ms;
    t += step;
  };
  return {
    wall: () => (tick(), Math.floor(t + offset)),
    mono: () => (tick(), t),
  };
}

describe('wallOffset: wall − monotonic, measured at millisecond edges', () => {
  it('finds the offset to within one loop iteration', () => {
    const m = machine(5_000.4567);
    expect(Math.abs(wallOffset(m.wall, m.mono) - 5_000.4567)).toBeLessThan(0.03);
  });

  it('a preemption between the two reads of a sample does not move the estimate', () => {
    // reads 2k+1 are wall, 2k+2 mono: stall right before many mono reads of the first edges
    const stalls: Array<[number, number]> = [];
    for (let r = 2; r < 400; r += 2) stalls.push([r, 0.7]);
    const m = machine(-12.25, 0.01, stalls);
    const est = wallOffset(m.wall, m.mono, 3);
    expect(est).toBeLessThanOrEqual(-12.25);
    // with every edge preempted it is still a lower bound, off by at most the stall
    expect(est).toBeGreaterThan(-12.25 - 0.75);
    const quiet = machine(-12.25);
    expect(Math.abs(wallOffset(quiet.wall, quiet.mono, 3) + 12.25)).toBeLessThan(0.03);
  });

  it('only one edge needs to be quiet', () => {
    const stalls: Array<[number, number]> = [];
    for (let r = 2; r < 40; r += 2) stalls.push([r, 0.9]); // the first edges: all preempted
    const first = machine(77.5, 0.01, stalls);
    expect(wallOffset(first.wall, first.mono, 1)).toBeLessThan(77.5 - 0.1);
    const m = machine(77.5, 0.01, stalls);
    expect(Math.abs(wallOffset(m.wall, m.mono, 20) - 77.5)).toBeLessThan(0.03);
  });

  it('now() follows the wall clock of this process', () => {
    const a = Date.now();
    const n = now();
    const b = Date.now();
    expect(n).toBeGreaterThanOrEqual(a - 1);
    expect(n).toBeLessThanOrEqual(b + 1);
  });
});
