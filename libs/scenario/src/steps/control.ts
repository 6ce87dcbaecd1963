/**
 * The control steps: wait, and arm mm's PT-lock stall (`parallel`, which nests step lists, is
 * declared with the Step union in schema.ts). Executed by apps/lab/src/steps/control.ts.
 */
import { z } from 'zod';
import { step } from './common';

export const SleepStep = step('sleep', { ms: z.number().int().nonnegative().max(600_000) });

/**
 * Arm every mm replica: the next operation that holds a PT lock sleeps ms inside it (a
 * breakpoint in a spin_lock section; `mmlab.mm.<instance>.debug`). For races that need one
 * side held at a precise point.
 */
export const MmStallStep = step('mm.stall', { ms: z.number().int().positive().max(600_000) });

/** The control steps (without parallel), in the order of the Step union. */
export const controlSteps = [SleepStep, MmStallStep] as const;
export type ControlStepOp = z.output<(typeof controlSteps)[number]>['op'] | 'parallel';
