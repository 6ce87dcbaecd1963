/**
 * results.json: what `mmlab run` writes next to trace.jsonl. The runner validates it against
 * this schema before writing, and tests and comparison tools parse it with the same schema.
 *
 * verdict: `valid` iff every step was ok and the violated invariants are exactly
 * `expect.violations`; `invalid` otherwise; `unknown` when the run could not complete (the
 * lab was unreachable, a barrier timed out, the runner failed): then `error` says why.
 */
import { z } from 'zod';
import { ScenarioConfig } from './schema';

export const Verdict = z.enum(['valid', 'invalid', 'unknown']);
export type Verdict = z.infer<typeof Verdict>;

/** Exit code of `mmlab run` for each verdict (2 also for a scenario that does not parse). */
export const VERDICT_EXIT_CODE: Record<Verdict, number> = { valid: 0, invalid: 1, unknown: 2 };

export const StepResult = z.object({
  /** position in its step list: steps[index], or the branch of a parallel step */
  index: z.number().int().nonnegative(),
  /** where the step is in the scenario: `steps[3]`, `steps[3].branches[1][0]` */
  path: z.string().optional(),
  /** line of the step in the scenario file */
  line: z.number().int().positive(),
  op: z.string(),
  ok: z.boolean(),
  /** the step's result: pid, address, the value read, munmap's counts ... */
  value: z.unknown().optional(),
  /** the typed error the service answered with (an ERROR_CODES code) */
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  /** why the step is not ok, in words (wrong value, missing expected error, unbound name) */
  reason: z.string().optional(),
  durationMs: z.number().nonnegative(),
  /** parallel: the outcome of every step of every branch (the parallel step is ok iff all are) */
  get branches(): z.ZodOptional<z.ZodArray<z.ZodArray<typeof StepResult>>> {
    return z.array(z.array(StepResult)).optional();
  },
});
export type StepResult = z.infer<typeof StepResult>;

/** One invariant's verdict, as the checker (libs/checker checkInvariants) reports it. */
export const InvariantResult = z.object({
  name: z.string(),
  ok: z.boolean(),
  /** how many events or situations the rule looked at */
  checked: z.number().int().nonnegative(),
  violations: z.array(z.object({ message: z.string(), events: z.array(z.unknown()) })),
});
export type InvariantResult = z.infer<typeof InvariantResult>;

const ms = z.number().nonnegative().nullable().describe('null when count is 0');

export const RunMetrics = z.object({
  /** fault.end durMs: fault latency as the faulting agent saw it */
  faults: z.object({ count: z.number().int(), p50Ms: ms, p90Ms: ms, p99Ms: ms, maxMs: ms }),
  /** ptl.release heldMs: how long PT locks were held */
  ptlHold: z.object({ count: z.number().int(), p50Ms: ms, p99Ms: ms, maxMs: ms }),
  events: z.object({ total: z.number().int(), byKind: z.record(z.string(), z.number().int()) }),
});
export type RunMetrics = z.infer<typeof RunMetrics>;

/** The run report `mmlab run` writes beside results.json (absolute paths, like `trace`). */
export const ReportFiles = z.object({
  /** report.html: verdicts, sequence, plots, metrics and steps in one self-contained page */
  html: z.string(),
  /** latency.svg: fault and invalidation latency over time */
  latencySvg: z.string(),
  /** ptl-hold.svg: PT-lock hold time distribution */
  ptlHoldSvg: z.string(),
});
export type ReportFiles = z.infer<typeof ReportFiles>;

export const RunResults = z.object({
  name: z.string(),
  seed: z.number().int().nullable(),
  config: ScenarioConfig,
  verdict: Verdict,
  /** set when verdict is unknown: what stopped the run */
  error: z.string().optional(),
  /** ISO 8601 */
  startedAt: z.string(),
  durationMs: z.number().nonnegative(),
  steps: z.array(StepResult),
  invariants: z.array(InvariantResult),
  metrics: RunMetrics,
  /** path of trace.jsonl: every event of the run, one JSON object a line */
  trace: z.string(),
  /** the run report; absent when it could not be rendered (that changes nothing else) */
  report: ReportFiles.optional(),
});
export type RunResults = z.infer<typeof RunResults>;
