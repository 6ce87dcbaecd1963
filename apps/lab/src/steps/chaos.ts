/**
 * Handlers of the chaos steps (schemas: libs/scenario/src/steps/chaos.ts): the run's nemesis
 * opens and heals fault windows, or runs a seeded schedule of them.
 */
import type { ChaosStepOp } from '@mmlab/scenario';
import { planSchedule, runSchedule } from '../schedule';
import type { StepHandlers } from './context';

export const chaosHandlers: StepHandlers<ChaosStepOp> = {
  chaos: async (step, { nemesis }) => {
    const { op: _op, expectError: _e, line: _l, ...spec } = step;
    const w = await nemesis.inject(spec);
    return { value: { window: w.id, instance: w.instance, label: w.label } };
  },
  heal: async (step, { nemesis }) => ({ value: await nemesis.heal(step.target) }),
  'chaos.schedule': async (step, ctx) => {
    const seed = step.seed ?? ctx.scenario.seed ?? 0;
    const plan = planSchedule(seed, step.intervalMs, step.durationMs, step.faults);
    const out = await runSchedule(ctx.nemesis, seed, plan, step.durationMs, ctx.signal);
    ctx.recordSchedule(out);
    return {
      value: {
        seed,
        plan: out.plan.map((p) => ({
          atMs: p.atMs,
          target: p.spec.target,
          fault: p.spec.fault,
          ms: p.spec.ms,
        })),
        errors: out.errors,
      },
    };
  },
};
