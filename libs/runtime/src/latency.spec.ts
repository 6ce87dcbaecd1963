import { describe, expect, it } from 'vitest';
import { LatencySampler, MAX_LATENCY_MS, parseLatency, seedFor } from './latency';

const draw = (spec: string, seed: number, n = 200): number[] => {
  const s = new LatencySampler(spec, seed);
  return Array.from({ length: n }, () => s.sample());
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('MMLAB_INVALIDATE_LATENCY', () => {
  it('parses the four forms', () => {
    expect(parseLatency('200')).toEqual({ kind: 'fixed', ms: 200 });
    expect(parseLatency(' 0 ')).toEqual({ kind: 'fixed', ms: 0 });
    expect(parseLatency('2.5')).toEqual({ kind: 'fixed', ms: 2.5 });
    expect(parseLatency('uniform:100:300')).toEqual({ kind: 'uniform', min: 100, max: 300 });
    expect(parseLatency('normal:200:50')).toEqual({ kind: 'normal', mean: 200, sd: 50 });
    expect(parseLatency('pareto:100:1.5')).toEqual({ kind: 'pareto', scale: 100, shape: 1.5 });
  });

  it.each([
    ['', /expected ms/],
    ['-5', /expected ms/],
    ['fast', /expected ms/],
    ['uniform:300:100', /a <= b/],
    ['uniform:1', /takes 2 parameters/],
    ['normal:1:2:3', /takes 2 parameters/],
    ['normal:x:2', /mean must be a non-negative number/],
    ['pareto:0:1', /scale > 0/],
    ['pareto:10:0', /shape > 0/],
  ])('rejects %j', (spec, why) => {
    expect(() => parseLatency(spec)).toThrow(why);
  });

  it('fixed is fixed', () => {
    expect(new Set(draw('200', 1, 20))).toEqual(new Set([200]));
  });

  it('draws inside the distribution: uniform bounds, normal clamped at 0, pareto above scale', () => {
    const u = draw('uniform:100:300', 7, 1000);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...u)).toBeLessThan(300);
    expect(mean(u)).toBeGreaterThan(180);
    expect(mean(u)).toBeLessThan(220);
    const n = draw('normal:200:50', 7, 2000);
    expect(mean(n)).toBeGreaterThan(190);
    expect(mean(n)).toBeLessThan(210);
    expect(Math.min(...draw('normal:1:100', 7, 500))).toBe(0);
    const p = draw('pareto:100:1.5', 7, 1000);
    expect(Math.min(...p)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...p)).toBeLessThanOrEqual(MAX_LATENCY_MS);
    expect(Math.max(...draw('pareto:1000:0.01', 7, 50))).toBe(MAX_LATENCY_MS); // capped tail
  });

  it('is reproducible: the same seed draws the same sequence, another seed another', () => {
    for (const spec of ['uniform:0:1000', 'normal:200:50', 'pareto:10:1.2']) {
      expect(draw(spec, 42)).toEqual(draw(spec, 42));
      expect(draw(spec, 42)).not.toEqual(draw(spec, 43));
    }
  });

  it('seeds each instance apart, reproducibly', () => {
    expect(seedFor(1, 'hca0')).toBe(seedFor(1, 'hca0'));
    expect(seedFor(1, 'hca0')).not.toBe(seedFor(1, 'hca1'));
    expect(seedFor(1, 'hca0')).not.toBe(seedFor(2, 'hca0'));
    expect(Number.isInteger(seedFor(123456789, 'hca0'))).toBe(true);
  });
});
