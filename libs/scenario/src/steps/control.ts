/**
 * The control steps: wait (a time, or a trace event), and arm mm's PT-lock stall or a lost
 * PT-lock lease (`parallel`, which nests step lists, is declared with the Step union in
 * schema.ts). Executed by apps/lab/src/steps/control.ts.
 */
import { z } from 'zod';
import { CrashPointName, TraceKindName } from '@mmlab/protocol';
import { step } from './common';

export const SleepStep = step('sleep', { ms: z.number().int().nonnegative().max(600_000) });

/**
 * Arm every mm replica: the next operation that holds a PT lock sleeps ms inside it (a
 * breakpoint in a spin_lock section; `mmlab.mm.<instance>.debug`). For races that need one
 * side held at a precise point.
 */
export const MmStallStep = step('mm.stall', { ms: z.number().int().positive().max(600_000) });

/**
 * Arm every mm replica with one crash point (`mmlab.mm.<instance>.crash_point`, one token: it
 * fires once in the lab) with the action lose-lease: the first operation to reach `at` holding
 * a PT lock stops renewing that lock's lease and waits there until another operation has been
 * granted the lock (a newer fencing token) and released it; then it goes on with its stale
 * token. A holder paused past its lease, built without timing; its replica keeps serving.
 * Points: `do_wp_page.ptl_held` (do_wp_page's copy, the PTE cleared, before the TLB shootdown).
 */
export const MmLoseLeaseStep = step('mm.lose_lease', { at: CrashPointName });

/**
 * Wait until `instance` (any, when absent) has traced `count` events of kind `event` since the
 * run began (as the observer has them), at most timeoutMs (default: the step timeout; then
 * ETIMEDOUT). For a branch that must start only once another reached a point, e.g. the HCA's
 * page fault past its sequence snapshot (`npf.delay`).
 */
export const TraceWaitStep = step('trace.wait', {
  event: TraceKindName,
  instance: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_-]+$/, { error: 'expected an instance name (mm-0, cpu1, hca0, ...)' })
    .optional(),
  count: z.number().int().positive().max(1_000_000).default(1),
  timeoutMs: z.number().int().positive().max(600_000).optional(),
});

/** The control steps (without parallel), in the order of the Step union. */
export const controlSteps = [SleepStep, MmStallStep, MmLoseLeaseStep, TraceWaitStep] as const;
export type ControlStepOp = z.output<(typeof controlSteps)[number]>['op'] | 'parallel';
