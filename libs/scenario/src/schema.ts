/**
 * The scenario format: the one schema every `mmlab run FILE` is checked against.
 *
 * A scenario is a config (the lab to run on), a list of steps run in order, and expectations.
 * Steps are ONE discriminated union on `op`; every object is strict, so a misspelt key is an
 * error rather than a silently ignored field. Adding a step kind means: add its schema to
 * `Step`, declare its bindings in `stepBindings` (check.ts) and execute it in the lab's
 * runner; the compiler and `switch-exhaustiveness-check` point at both places.
 *
 * Bindings: a step may name its result with `as` (process.create and fork bind a pid, mmap
 * and mremap an address, hca.reg_mr a memory region); later steps refer to it by name. Which
 * binding kind each field needs is checked statically (check.ts), before anything runs.
 *
 * `parallel` nests step lists (its branches run concurrently, each in order), so Step is a
 * recursive union: ParallelStep refers to Step through a getter.
 */
import { z } from 'zod';
import { INVARIANT_NAMES } from '@mmlab/checker';
import {
  Dispatch,
  ERROR_CODES,
  HcaAccess,
  InjectMode,
  MapFlag,
  Mode,
  Pages,
  Prot,
  TASK_SIZE,
  Value,
} from '@mmlab/protocol';

/** One of the eight invariant names of DESIGN.md §4 (the checker's list). */
export const InvariantName = z.enum(INVARIANT_NAMES);
export type InvariantName = z.infer<typeof InvariantName>;

const BINDING_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const HEX_RE = /^0[xX][0-9a-fA-F]+$/;

/** A name bound by `as` and referred to by later steps. */
export const Binding = z.string({ error: 'expected a binding name' }).regex(BINDING_RE, {
  error: 'expected a binding name (a letter or _, then letters, digits, _ or -)',
});

/**
 * A virtual address: a number, a hex string ("0x10000000", which YAML would otherwise read
 * as a number only when unquoted) or the name of an address binding. Parsed to a number, or
 * left as the binding name (a string) for the runner to resolve.
 */
export const AddrRef = z
  .union([z.number(), z.string()], {
    error: 'expected an address: a number, a hex string or a binding name',
  })
  .transform((v, ctx): number | string => {
    if (typeof v === 'string' && !HEX_RE.test(v)) {
      if (/^0[xX]/.test(v))
        ctx.addIssue({
          code: 'custom',
          message: `bad hex address "${v}" (expected 0x followed by hex digits)`,
        });
      else if (!BINDING_RE.test(v))
        ctx.addIssue({
          code: 'custom',
          message: `bad address "${v}" (expected a number, a hex string or a binding name)`,
        });
      return v;
    }
    const addr = typeof v === 'number' ? v : parseInt(v.slice(2), 16);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr >= TASK_SIZE)
      ctx.addIssue({ code: 'custom', message: `address ${v} is outside [0, 2^47)` });
    return addr;
  });
export type AddrRef = z.output<typeof AddrRef>;

/** Offset from `addr` in 4 KiB pages. */
const PageOffset = z.number().int().nonnegative().default(0);
const CpuId = z.number().int().nonnegative();

const SUBSCRIBER_RE = /^[A-Za-z0-9_-]+$/;
/** A subscriber's name: also its instance name and the {id} of its subjects. */
export const SubscriberName = z
  .string({ error: 'expected a subscriber name' })
  .max(64, { error: 'expected a subscriber name of at most 64 characters' })
  .regex(SUBSCRIBER_RE, { error: 'expected a subscriber name of letters, digits, _ or -' });

/** Allowed on every step: the step is ok iff it fails with exactly this code. */
const common = { expectError: z.enum(ERROR_CODES).optional() };

const step = <Op extends string, S extends z.ZodRawShape>(op: Op, shape: S) =>
  z.strictObject({ op: z.literal(op), ...shape, ...common });

export const ProcessCreateStep = step('process.create', { as: Binding.optional() });
export const MmapStep = step('mmap', {
  process: Binding,
  pages: Pages,
  prot: Prot,
  flags: z.array(MapFlag).default([]),
  as: Binding.optional(),
});
export const MunmapStep = step('munmap', {
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  pages: Pages,
});
export const CpuReadStep = step('cpu.read', {
  cpu: CpuId,
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  /** the value the load must return */
  expect: Value.optional(),
});
export const CpuWriteStep = step('cpu.write', {
  cpu: CpuId,
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  value: Value,
});

/** A range of a process: addr (+ page) and a length. */
const range = { process: Binding, addr: AddrRef, page: PageOffset, pages: Pages };

export const ForkStep = step('fork', { process: Binding, as: Binding.optional() });
export const MprotectStep = step('mprotect', { ...range, prot: Prot });
export const MremapStep = step('mremap', {
  ...range,
  /** the new length (default: pages) */
  newPages: Pages.optional(),
  /** binds the new start address */
  as: Binding.optional(),
});
export const MadviseStep = step('madvise', { ...range, advice: z.enum(['dontneed']) });
export const ExitStep = step('exit', { process: Binding });

/** An address inside a memory region: `addr` defaults to the MR's start; `page` is added. */
const mrAddr = { mr: Binding, addr: AddrRef.optional(), page: PageOffset };

export const HcaRegMrStep = step('hca.reg_mr', {
  /** a configured subscriber of kind hca */
  hca: SubscriberName,
  ...range,
  odp: z.boolean(),
  access: z.array(HcaAccess).min(1),
  /** binds the memory region (its HCA, number, pid and start address) */
  as: Binding.optional(),
});
export const HcaDeregMrStep = step('hca.dereg_mr', { mr: Binding });
export const HcaRdmaWriteStep = step('hca.rdma_write', { ...mrAddr, value: Value });
export const HcaRdmaReadStep = step('hca.rdma_read', {
  ...mrAddr,
  /** the value the RDMA READ must return */
  expect: Value.optional(),
});
export const HcaPrefetchStep = step('hca.prefetch', {
  ...mrAddr,
  pages: Pages,
  write: z.boolean().default(false),
});

export const SleepStep = step('sleep', { ms: z.number().int().nonnegative().max(600_000) });

/**
 * Arm every mm replica: the next operation that holds a PT lock sleeps ms inside it (a
 * breakpoint in a spin_lock section; `mmlab.mm.<instance>.debug`). For races that need one
 * side held at a precise point.
 */
export const MmStallStep = step('mm.stall', { ms: z.number().int().positive().max(600_000) });

/**
 * A process-level fault on one service instance of a local lab (`--local`): `pause` is
 * SIGSTOP (it keeps its sockets and memory and makes no progress: peers see only timeouts),
 * `kill` is SIGKILL, `restart` is a kill and a fresh start. With `ms` the fault heals by itself
 * after that long; otherwise at the next `heal` naming it (or any), or at the end of the run.
 * Every fault window is recorded (chaos.start / chaos.end trace events).
 */
export const ChaosStep = step('chaos', {
  target: z.string().regex(/^[A-Za-z0-9_-]+$/),
  fault: z.enum(['pause', 'kill', 'restart']),
  ms: z.number().int().positive().max(600_000).optional(),
});
export const HealStep = step('heal', {
  target: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .optional(),
});

/**
 * Branches that run concurrently; each branch is a step list run in order. A binding made in
 * a branch is visible later in that branch and after the parallel step, never in another
 * branch (check.ts).
 */
export const ParallelStep = z.strictObject({
  op: z.literal('parallel'),
  get branches(): z.ZodArray<z.ZodArray<typeof Step>> {
    return z.array(z.array(Step).min(1)).min(1);
  },
  expectError: common.expectError,
});

type StepOptions = [
  typeof ProcessCreateStep,
  typeof MmapStep,
  typeof MunmapStep,
  typeof CpuReadStep,
  typeof CpuWriteStep,
  typeof ForkStep,
  typeof MprotectStep,
  typeof MremapStep,
  typeof MadviseStep,
  typeof ExitStep,
  typeof HcaRegMrStep,
  typeof HcaDeregMrStep,
  typeof HcaRdmaWriteStep,
  typeof HcaRdmaReadStep,
  typeof HcaPrefetchStep,
  typeof ParallelStep,
  typeof SleepStep,
  typeof MmStallStep,
  typeof ChaosStep,
  typeof HealStep,
];

// The annotation breaks the cycle Step → ParallelStep → Step for the type checker.
export const Step: z.ZodDiscriminatedUnion<StepOptions> = z.discriminatedUnion('op', [
  ProcessCreateStep,
  MmapStep,
  MunmapStep,
  CpuReadStep,
  CpuWriteStep,
  ForkStep,
  MprotectStep,
  MremapStep,
  MadviseStep,
  ExitStep,
  HcaRegMrStep,
  HcaDeregMrStep,
  HcaRdmaWriteStep,
  HcaRdmaReadStep,
  HcaPrefetchStep,
  ParallelStep,
  SleepStep,
  MmStallStep,
  ChaosStep,
  HealStep,
]);
export type Step = z.output<typeof Step>;
export type StepOp = Step['op'];
export type StepOf<Op extends StepOp> = Extract<Step, { op: Op }>;
export const STEP_OPS: StepOp[] = Step.options.map((o) => o.shape.op.value);

/**
 * A device latency: milliseconds, or a distribution drawn from per callback (seeded):
 * "uniform:a:b" (a <= b), "normal:mean:sd", "pareto:scale:shape" (both > 0).
 */
export const LatencySpec = z
  .union([z.number(), z.string()], {
    error:
      'expected a latency: milliseconds, or "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape"',
  })
  .superRefine((v, ctx) => {
    const problem = latencyProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** Why v is not a valid latency spec, or undefined. */
export function latencyProblem(v: number | string): string | undefined {
  if (typeof v === 'number')
    return Number.isFinite(v) && v >= 0
      ? undefined
      : `expected a latency of at least 0 ms, got ${v}`;
  const parts = v.split(':');
  const nums = parts.slice(1).map((x) => (x.trim() === '' ? NaN : Number(x)));
  const bad = `bad latency "${v}" (expected "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape" with numbers)`;
  if (parts.length !== 3 || nums.some((n) => !Number.isFinite(n))) return bad;
  const [a, b] = nums;
  switch (parts[0]) {
    case 'uniform':
      return a >= 0 && a <= b ? undefined : `bad latency "${v}": uniform needs 0 <= a <= b`;
    case 'normal':
      return a >= 0 && b >= 0
        ? undefined
        : `bad latency "${v}": normal needs mean >= 0 and sd >= 0`;
    case 'pareto':
      return a > 0 && b > 0
        ? undefined
        : `bad latency "${v}": pareto needs scale > 0 and shape > 0`;
    default:
      return bad;
  }
}

/** Instance names the lab itself uses: a subscriber may not take one. */
const RESERVED_INSTANCE = /^(observer|mm-\d+|cpu\d+)$/;

export const SubscriberSpec = z.strictObject({
  name: SubscriberName.refine((n) => !RESERVED_INSTANCE.test(n), {
    error: 'this name is taken by a service of the lab (observer, mm-N, cpuN)',
  }),
  kind: z.enum(['hca']),
  /** how long the device takes to complete an invalidation (default 0) */
  invalidateLatencyMs: LatencySpec.optional(),
  /** a slow page-fault work queue: ms between hmm_range_fault and the re-check (default 0) */
  npfDelayMs: z.number().int().nonnegative().max(600_000).optional(),
});
export type SubscriberSpec = z.output<typeof SubscriberSpec>;

/** Names must be unique too: check.ts checks that (also when another entry is malformed). */
export const Subscribers = z.array(SubscriberSpec);

/** The lab a scenario runs on; `mmlab run --local` starts exactly this. */
export const ScenarioConfig = z.strictObject({
  mode: Mode.default('patched'),
  frames: z.number().int().positive().default(256),
  cpus: z.number().int().positive().max(64).default(2),
  mmReplicas: z.number().int().positive().max(16).default(2),
  /** PT-lock and mmap_sem lease TTL (MMLAB_LEASE_TTL_MS) */
  leaseTtlMs: z.number().int().positive().optional(),
  /** bounded-ptlock-hold threshold (MMLAB_SOFTLOCKUP_MS); the checker uses it too */
  softlockupMs: z.number().int().positive().optional(),
  /** notifier subscribers to start (and register by their hca.reg_mr steps) */
  subscribers: Subscribers.optional(),
  /** how mm sends one callback to several subscribers (default parallel) */
  dispatch: Dispatch.optional(),
  /** fault-injection modes: each reproduces a known mistake (libs/protocol InjectMode) */
  inject: z.array(InjectMode).optional(),
});
export type ScenarioConfig = z.output<typeof ScenarioConfig>;

export const ScenarioExpect = z.strictObject({
  /** exactly the invariants this run must violate (a fault-injection mode); default none */
  violations: z.array(InvariantName).default([]),
});

export const ScenarioSchema = z.strictObject({
  /** also the default results directory: results/<name>/ */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, {
    error: 'expected a name of letters, digits, ".", "_" or "-"',
  }),
  seed: z.number().int().optional(),
  config: ScenarioConfig.prefault({}),
  steps: z.array(Step).min(1),
  expect: ScenarioExpect.prefault({}),
});

export type ParallelStep = StepOf<'parallel'>;

/**
 * A step with the line of the scenario file it was written on (for messages and results);
 * the steps inside a parallel step carry their own lines.
 */
export type LocatedStep = Step extends infer S
  ? S extends { op: 'parallel' }
    ? Omit<S, 'branches'> & { branches: LocatedStep[][]; readonly line: number }
    : S & { readonly line: number }
  : never;

export type Scenario = Omit<z.output<typeof ScenarioSchema>, 'steps'> & {
  steps: LocatedStep[];
  /** the file name given to parseScenario */
  file: string;
};
