/**
 * `chaos.schedule`: a seeded nemesis (Jepsen's generator of faults, Maelstrom's --nemesis with
 * --nemesis-interval). The plan is a pure function of (seed, intervalMs, durationMs, faults):
 * the same seed gives the same sequence of faults, at the same offsets, for the same lengths —
 * which is what makes a failing chaos run reproducible. Running it opens each planned window at
 * its offset and lets it heal after its length; whatever is still open at the end is healed.
 */
import { now, sleep } from '@mmlab/runtime';
import type { ChaosSpec } from '@mmlab/scenario';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import type { FaultWindow, Nemesis } from './nemesis';

export interface PlannedFault {
  /** offset from the start of the schedule */
  atMs: number;
  spec: ChaosSpec & { ms: number };
}

export interface ScheduleOutcome {
  seed: number;
  plan: PlannedFault[];
  /** the windows opened (a planned fault that could not be injected has none: see errors) */
  windows: FaultWindow[];
  errors: Array<{ atMs: number; target: string; fault: string; error: string }>;
}

/**
 * The fault sequence of a schedule: one fault every intervalMs from 0 while < durationMs,
 * drawn uniformly from `faults`; a fault without ms lasts a draw in [interval/4, 3·interval/4]
 * (so it heals before the next one starts); no window outlives the schedule.
 */
export function planSchedule(
  seed: number,
  intervalMs: number,
  durationMs: number,
  faults: readonly ChaosSpec[],
): PlannedFault[] {
  const rng = xoroshiro128plus(seed | 0);
  const plan: PlannedFault[] = [];
  const lo = Math.max(1, Math.floor(intervalMs / 4));
  const hi = Math.max(lo, Math.floor((3 * intervalMs) / 4));
  for (let at = 0; at < durationMs; at += intervalMs) {
    const spec = faults[uniformInt(rng, 0, faults.length - 1)];
    const drawn = uniformInt(rng, lo, hi);
    const ms = Math.max(1, Math.min(spec.ms ?? drawn, durationMs - at));
    plan.push({ atMs: at, spec: { ...spec, ms } });
  }
  return plan;
}

/** Run a plan against the nemesis; returns once durationMs has passed and its faults are healed. */
export async function runSchedule(
  nemesis: Nemesis,
  seed: number,
  plan: readonly PlannedFault[],
  durationMs: number,
  signal?: AbortSignal,
): Promise<ScheduleOutcome> {
  const t0 = now();
  const windows: FaultWindow[] = [];
  const errors: ScheduleOutcome['errors'] = [];
  for (const p of plan) {
    const wait = t0 + p.atMs - now();
    if (wait > 0) await sleep(wait);
    if (signal?.aborted) break;
    try {
      windows.push(await nemesis.inject(p.spec));
    } catch (e) {
      // e.g. the drawn target is still under an earlier fault: recorded, the schedule goes on
      errors.push({
        atMs: p.atMs,
        target: p.spec.target,
        fault: p.spec.fault,
        error: e instanceof Error ? e.message : String(e),
      });
    }
  }
  const rest = t0 + durationMs - now();
  if (rest > 0 && !signal?.aborted) await sleep(rest);
  for (const w of windows) await nemesis.healWindow(w.id);
  const final = new Map(nemesis.windows().map((w) => [w.id, w]));
  return { seed, plan: [...plan], windows: windows.map((w) => final.get(w.id) ?? w), errors };
}
