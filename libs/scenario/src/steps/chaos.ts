/**
 * The chaos steps: open a fault window, heal, run a seeded schedule of faults. Executed by
 * apps/lab/src/steps/chaos.ts; the fault spec is also the body of the lab API's POST /chaos.
 */
import { z } from 'zod';
import { LatencySpec, MnCallback, SUB_FAULTS } from '@mmlab/protocol';
import { step } from './common';

/**
 * The lab's faults (Jepsen's nemesis), by kind:
 *
 *   on a notifier subscriber, asked of it (mmlab.sub.<name>.chaos; libs/protocol SubFault):
 *     latency   each callback waits a draw from `distribution` (+ jitterMs) first
 *     hang      callbacks wait until healed (the subscriber stays alive: mm keeps waiting)
 *     drop-ack  the first ack of each inv is lost (mm resends the same inv)
 *     dup-ack   every ack is sent twice
 *     late-ack  the subscriber stops renewing its liveness lease and acks only after it
 *               expired (mm fences it)
 *     crash     the process dies in the middle of a callback (healed by a restart)
 *   on any process of a local lab (a subscriber, mm-N, `mm`, cpuN, nats, redis), done to it:
 *     pause     SIGSTOP: it keeps its sockets and memory, makes no progress
 *     kill      SIGKILL (healed by a fresh start)
 *     restart   a kill and a fresh start, at once
 *
 * `mm` is the mm replica holding a PT lock at that moment (else the first). With `ms` a fault
 * heals by itself after that long; otherwise at the next `heal` naming it (or any), or at the
 * end of the run. Every fault window is recorded (chaos.start / chaos.end trace events).
 */
export const SUBSCRIBER_FAULTS = SUB_FAULTS;
export const PROCESS_FAULTS = ['pause', 'kill', 'restart'] as const;
export const ChaosFault = z.enum([...SUB_FAULTS, ...PROCESS_FAULTS]);
export type ChaosFault = z.infer<typeof ChaosFault>;

/** A subscriber, `mm` or mm-N, cpuN, `nats` or `redis`. */
export const ChaosTarget = z
  .string()
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, {
    error: 'expected a target: a subscriber, mm, mm-N, cpuN, nats or redis',
  });

const chaosShape = {
  target: ChaosTarget,
  fault: ChaosFault,
  /** the window: heal after ms (default: at a heal step, or the end of the run) */
  ms: z.number().int().positive().max(600_000).optional(),
  /** latency: the delay of each callback (ms, "uniform:a:b", "normal:mean:sd", "pareto:scale:shape") */
  distribution: LatencySpec.optional(),
  /** latency: plus a uniform draw in [0, jitterMs) */
  jitterMs: z.number().nonnegative().max(600_000).optional(),
  /** subscriber faults: the callbacks hit (default all) */
  callbacks: z.array(MnCallback).min(1).optional(),
};

/** The cross-field rules of a fault (also used by the lab's HTTP API and `mmlab chaos`). */
function chaosRules(
  f: { fault: ChaosFault; distribution?: unknown; jitterMs?: unknown; callbacks?: unknown },
  ctx: z.RefinementCtx,
): void {
  if (f.fault === 'latency' && f.distribution === undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['distribution'],
      message: 'a latency fault needs a distribution',
    });
  if (f.fault !== 'latency')
    for (const k of ['distribution', 'jitterMs'] as const)
      if (f[k] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: [k],
          message: `${k} belongs to a latency fault, not ${f.fault}`,
        });
  if ((PROCESS_FAULTS as readonly string[]).includes(f.fault) && f.callbacks !== undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['callbacks'],
      message: `callbacks belong to a subscriber's callback fault, not ${f.fault}`,
    });
}

/** One fault on one target: a chaos step without its op, the body of POST /chaos. */
export const ChaosSpec = z.strictObject(chaosShape).superRefine(chaosRules);
export type ChaosSpec = z.output<typeof ChaosSpec>;

export const ChaosStep = step('chaos', chaosShape).superRefine(chaosRules);
export const HealStep = step('heal', { target: ChaosTarget.optional() });

/**
 * A seeded nemesis: every intervalMs for durationMs, one fault drawn from `faults` (a fault
 * without ms lasts a draw in [intervalMs/4, 3·intervalMs/4]); everything healed at the end.
 * The drawn sequence depends on the seed only (default: the scenario's seed, else 0) and is
 * the step's value; its windows are in results.json.
 */
export const ChaosScheduleStep = step('chaos.schedule', {
  seed: z.number().int().optional(),
  intervalMs: z.number().int().min(50).max(600_000),
  durationMs: z.number().int().positive().max(3_600_000),
  faults: z.array(ChaosSpec).min(1).max(64),
});

/** The chaos steps, in the order of the Step union. */
export const chaosSteps = [ChaosStep, HealStep, ChaosScheduleStep] as const;
export type ChaosStepOp = z.output<(typeof chaosSteps)[number]>['op'];
