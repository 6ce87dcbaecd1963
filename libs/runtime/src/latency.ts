/**
 * Seeded latency distributions: the HCA's device latency (the wait in
 * mlx5r_umr_post_send_wait(), how long the device takes to complete a ZAP UMR: the slow path
 * the 2012 patch lets a notifier sleep through) and the callback-level latency faults of any
 * notifier subscriber (callback-faults.ts). Plain code, no Nest.
 *
 * A spec (MMLAB_INVALIDATE_LATENCY, or a SubFault's distribution), in milliseconds:
 *   "200"                 fixed
 *   "uniform:a:b"         uniform in [a, b)
 *   "normal:mean:sd"      normal, clamped at 0
 *   "pareto:scale:shape"  Pareto (scale / U^(1/shape)): mostly near scale, a heavy tail
 * Every sample is capped at MAX_LATENCY_MS (a Pareto tail is unbounded; setTimeout is not).
 * Draws come from a pure-rand xoroshiro128+ seeded from MMLAB_SEED, so a run is reproducible.
 */
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';

export type LatencyDistribution =
  | { kind: 'fixed'; ms: number }
  | { kind: 'uniform'; min: number; max: number }
  | { kind: 'normal'; mean: number; sd: number }
  | { kind: 'pareto'; scale: number; shape: number };

/** Ten minutes: longer than any callback timeout a lab would configure. */
export const MAX_LATENCY_MS = 600_000;

const NUM = /^\d+(\.\d+)?$/;

function num(s: string | undefined, what: string, spec: string): number {
  if (s === undefined || !NUM.test(s.trim()))
    throw new Error(`invalid latency "${spec}": ${what} must be a non-negative number`);
  return Number(s.trim());
}

/** Parse a latency spec (a number is fixed ms); throws an Error naming what is wrong. */
export function parseLatency(spec: string | number): LatencyDistribution {
  if (typeof spec === 'number') {
    if (!Number.isFinite(spec) || spec < 0)
      throw new Error(`invalid latency ${spec}: must be a non-negative number of ms`);
    return { kind: 'fixed', ms: spec };
  }
  const s = spec.trim();
  if (NUM.test(s)) return { kind: 'fixed', ms: Number(s) };
  const [kind, ...args] = s.split(':');
  const want = (n: number) => {
    if (args.length !== n)
      throw new Error(`invalid latency "${spec}": ${kind} takes ${n} parameters`);
  };
  switch (kind) {
    case 'uniform': {
      want(2);
      const min = num(args[0], 'a', spec);
      const max = num(args[1], 'b', spec);
      if (max < min) throw new Error(`invalid latency "${spec}": uniform needs a <= b`);
      return { kind, min, max };
    }
    case 'normal': {
      want(2);
      return { kind, mean: num(args[0], 'mean', spec), sd: num(args[1], 'sd', spec) };
    }
    case 'pareto': {
      want(2);
      const scale = num(args[0], 'scale', spec);
      const shape = num(args[1], 'shape', spec);
      if (scale <= 0 || shape <= 0)
        throw new Error(`invalid latency "${spec}": pareto needs scale > 0 and shape > 0`);
      return { kind, scale, shape };
    }
    default:
      throw new Error(
        `invalid latency "${spec}": expected ms, uniform:a:b, normal:mean:sd or pareto:scale:shape`,
      );
  }
}

/** A 32-bit seed from MMLAB_SEED and the instance name (FNV-1a), so two HCAs draw apart. */
export function seedFor(seed: number, instance: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < instance.length; i++) {
    h ^= instance.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h ^ seed) | 0;
}

/** A seeded pure-rand generator (xoroshiro128+), for LatencySampler and drawLatency. */
export type Rng = ReturnType<typeof xoroshiro128plus>;
export const seededRng = (seed: number): Rng => xoroshiro128plus(seed | 0);

/** A uniform draw in [0, 1) from rng. */
export const uniform01 = (rng: Rng): number => uniformFloat64(rng);

/** One draw of spec from rng, in ms: ≥ 0 and ≤ MAX_LATENCY_MS. */
export function drawLatency(spec: LatencyDistribution, rng: Rng): number {
  return Math.min(MAX_LATENCY_MS, Math.max(0, rawDraw(spec, rng)));
}

function rawDraw(s: LatencyDistribution, rng: Rng): number {
  switch (s.kind) {
    case 'fixed':
      return s.ms;
    case 'uniform':
      return s.min + (s.max - s.min) * uniformFloat64(rng);
    case 'normal': {
      // Box–Muller; 1 - U is in (0, 1], so the log is finite.
      const u1 = 1 - uniformFloat64(rng);
      const u2 = uniformFloat64(rng);
      return s.mean + s.sd * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
    case 'pareto':
      return s.scale / Math.pow(1 - uniformFloat64(rng), 1 / s.shape);
  }
}

/** Draws latencies, in ms, from one spec and one seeded generator of its own. */
export class LatencySampler {
  readonly spec: LatencyDistribution;
  private readonly rng: Rng;

  constructor(spec: LatencyDistribution | string | number, seed: number) {
    this.spec = typeof spec === 'object' ? spec : parseLatency(spec);
    this.rng = seededRng(seed);
  }

  /** One latency in ms, ≥ 0 and ≤ MAX_LATENCY_MS. */
  sample(): number {
    return drawLatency(this.spec, this.rng);
  }
}
