import { describe, expect, it } from 'vitest';
import { ChaosSpec } from '@mmlab/scenario';
import { planSchedule } from './schedule';

const faults = [
  { target: 'hca0', fault: 'drop-ack' },
  { target: 'hca0', fault: 'pause' },
  { target: 'cpu1', fault: 'pause', ms: 100 },
  { target: 'redis', fault: 'kill' },
].map((f) => ChaosSpec.parse(f));

describe(planSchedule.name, () => {
  it('draws the same sequence from the same seed, and another from another seed', () => {
    const a = planSchedule(42, 1000, 20_000, faults);
    expect(planSchedule(42, 1000, 20_000, faults)).toEqual(a);
    expect(planSchedule(43, 1000, 20_000, faults)).not.toEqual(a);
    // every fault of the list can be drawn
    expect(new Set(a.map((p) => `${p.spec.target} ${p.spec.fault}`)).size).toBe(faults.length);
  });

  it('opens one fault per interval, each healed before the next and none outliving the schedule', () => {
    const plan = planSchedule(7, 400, 1900, faults);
    expect(plan.map((p) => p.atMs)).toEqual([0, 400, 800, 1200, 1600]);
    for (const p of plan) {
      expect(p.atMs + p.spec.ms).toBeLessThanOrEqual(1900);
      if (p.spec.target === 'cpu1')
        expect(p.spec.ms).toBe(100); // its own ms is kept
      else {
        expect(p.spec.ms).toBeGreaterThanOrEqual(100);
        expect(p.spec.ms).toBeLessThanOrEqual(Math.min(300, 1900 - p.atMs));
      }
    }
  });
});
