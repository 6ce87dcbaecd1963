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
  /**
   * change_pte as KVM saw it (kvm.change_pte, one per VM): how many came, and how many found no
   * sPTE to update — in v3.7 invalidate_range_start zapped it first. Absent: none came.
   */
  changePte: z.object({ count: z.number().int(), noSpte: z.number().int() }).optional(),
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
  /** memory.svg: free frames against kswapd's watermarks, swap-outs and swap-ins (a run that reclaimed) */
  memorySvg: z.string().optional(),
});
export type ReportFiles = z.infer<typeof ReportFiles>;

const Latency = z.object({ count: z.number().int(), p50Ms: ms, p99Ms: ms, maxMs: ms });

/** One workload's outcome (apps/lab/src/workload.ts): throughput, failures, impossible reads. */
export const WorkloadResult = z.object({
  name: z.string(),
  kind: z.enum(['cpu', 'hca', 'kvm']),
  ops: z.number().int(),
  reads: z.number().int(),
  writes: z.number().int(),
  zaps: z.number().int(),
  faults: z.number().int(),
  failed: z.object({
    definite: z.number().int(),
    indefinite: z.number().int(),
    byCode: z.record(z.string(), z.number().int()),
  }),
  unexpected: z.number().int(),
  impossibleReads: z.number().int(),
  impossible: z.array(
    z.object({
      agent: z.string(),
      page: z.number().int(),
      got: z.number(),
      allowed: z.array(z.number()),
    }),
  ),
  startedAt: z.number(),
  durationMs: z.number(),
  /** the measuring window (durationMs for a timed workload; operations still in flight at its end are not in it) */
  window: z.object({ ms: z.number(), ops: z.number().int(), faults: z.number().int() }),
  opsPerSec: z.number(),
  faultsPerSec: z.number(),
  latencyMs: z.object({
    p50: z.number().nullable(),
    p99: z.number().nullable(),
    max: z.number().nullable(),
  }),
});
export type WorkloadResult = z.infer<typeof WorkloadResult>;

/** The run under faults: what the nemesis did and what it did to the lab. */
export const ChaosResults = z.object({
  /** every fault window, in ms from the start of the steps (endMs null: never healed) */
  faults: z.array(
    z.object({
      id: z.number().int(),
      target: z.string(),
      instance: z.string(),
      fault: z.string(),
      label: z.string(),
      startMs: z.number(),
      endMs: z.number().nullable(),
      healError: z.string().optional(),
      /**
       * opened on the lab before the run (`mmlab chaos`) and still open when it began; such a
       * window has a negative id and a negative startMs, and the run does not heal it
       */
      openedBefore: z.literal(true).optional(),
    }),
  ),
  /** chaos.schedule steps: the seed and the fault sequence it drew */
  schedules: z.array(
    z.object({
      seed: z.number().int(),
      plan: z.array(
        z.object({ atMs: z.number(), target: z.string(), fault: z.string(), ms: z.number() }),
      ),
      errors: z.array(
        z.object({ atMs: z.number(), target: z.string(), fault: z.string(), error: z.string() }),
      ),
    }),
  ),
  /**
   * operations (steps that act on the lab, and every workload access): ok, failed definitely
   * (certainly did not happen) or indefinitely (may have happened: ETIMEDOUT, ESTALE)
   */
  operations: z.object({
    ok: z.number().int(),
    failedDefinite: z.number().int(),
    failedIndefinite: z.number().int(),
    byCode: z.record(z.string(), z.number().int()),
  }),
  /** fault.end latency of faults that overlapped a fault window, and of the others */
  latency: z.object({ inFaults: Latency, outsideFaults: Latency }),
  /** the longest PT-lock hold released in the run */
  longestPtlHold: z
    .object({
      ms: z.number(),
      lock: z.string(),
      pid: z.number().int(),
      owner: z.string(),
      atMs: z.number(),
    })
    .nullable(),
  /** PT-lock and mmap_sem leases still held a lease TTL after the run: must be empty for valid */
  locksLeft: z.array(z.object({ lock: z.string(), pid: z.number().int(), owner: z.string() })),
});
export type ChaosResults = z.infer<typeof ChaosResults>;

/**
 * `mmlab fsck` of the lab's state in Redis after the run (libs/fsck): ok iff no finding; a run
 * with findings is invalid. Absent when the lab's Redis was not known (a remote lab without
 * REDIS_URL); error when it could not be read.
 */
export const FsckResult = z.object({
  ok: z.boolean(),
  findings: z.array(
    z.object({
      code: z.string(),
      key: z.string(),
      message: z.string(),
      objects: z.record(z.string(), z.unknown()),
    }),
  ),
  error: z.string().optional(),
});
export type FsckResult = z.infer<typeof FsckResult>;

export const RunResults = z.object({
  name: z.string(),
  seed: z.number().int().nullable(),
  /**
   * the lab the run ran on: the scenario's config with --local; a running lab's own, as its
   * services report it (mmlab.ctl.config), otherwise — never a config that did not run
   */
  config: ScenarioConfig,
  verdict: Verdict,
  /** the scenario's expect.violations: the invariants this run had to violate (default none) */
  expectedViolations: z.array(z.string()).optional(),
  /** the fsck finding codes the scenario expects (expect.fsck): a recovery not built yet */
  expectedFsck: z.array(z.string()).optional(),
  /** set when verdict is unknown: what stopped the run */
  error: z.string().optional(),
  /** ISO 8601 */
  startedAt: z.string(),
  durationMs: z.number().nonnegative(),
  steps: z.array(StepResult),
  invariants: z.array(InvariantResult),
  metrics: RunMetrics,
  /** the workloads' outcomes, in the order they finished */
  workloads: z.array(WorkloadResult).optional(),
  /** fault windows, failures, latency in and out of faults, longest PT-lock hold, locks left */
  chaos: ChaosResults.optional(),
  /** fsck of the lab's state after the run */
  fsck: FsckResult.optional(),
  /** path of trace.jsonl: every event of the run, one JSON object a line */
  trace: z.string(),
  /** the run report; absent when it could not be rendered (that changes nothing else) */
  report: ReportFiles.optional(),
});
export type RunResults = z.infer<typeof RunResults>;
