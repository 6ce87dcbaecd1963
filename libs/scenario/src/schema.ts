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
  LatencySpec,
  MapFlag,
  MnCallback,
  Mode,
  Pages,
  Prot,
  SUB_FAULTS,
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

/** How long a workload runs: a number of operations, or a time. */
const workloadLength = {
  ops: z.number().int().positive().max(10_000_000).optional(),
  durationMs: z.number().int().positive().max(3_600_000).optional(),
};
const oneLength = (w: { ops?: number; durationMs?: number }, ctx: z.RefinementCtx): void => {
  if ((w.ops === undefined) === (w.durationMs === undefined))
    ctx.addIssue({
      code: 'custom',
      path: ['ops'],
      message: 'give exactly one of ops and durationMs',
    });
};

/**
 * CPU traffic on a private anonymous range (will-it-scale's page_fault loops): each CPU gets
 * its own slice of `pages` and, until the workload ends, loads or stores (writeRatio) a page
 * of it, random or the next one (`pattern`); with zapEvery, after every zapEvery of its
 * accesses it drops its slice (madvise(MADV_DONTNEED)), so the next touches fault again
 * (sequential with zapEvery = the slice: every access is a fault, as in page_fault1). Every load is checked against
 * the last store the workload knows of (after an indefinite failure: either value). The step
 * is ok iff no load returned a value it could not have, and every failure was transient.
 */
export const WorkloadStep = step('workload', {
  /** names the workload in results.json */
  name: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
  cpus: z.array(CpuId).min(1).max(64),
  ...range,
  ...workloadLength,
  writeRatio: z.number().min(0).max(1).default(0.5),
  /** which page each access touches: a random one of the CPU's slice, or the next one (wrapping) */
  pattern: z.enum(['random', 'sequential']).default('random'),
  zapEvery: z.number().int().positive().optional(),
  seed: z.number().int().optional(),
}).superRefine(oneLength);

/** RDMA traffic through one memory region: RDMA READs and WRITEs of random pages of it, checked the same way. */
export const HcaWorkloadStep = step('hca.workload', {
  name: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
  mr: Binding,
  /** how many pages of the MR, from its start (default all the MR was registered with: give it) */
  pages: Pages,
  ...workloadLength,
  writeRatio: z.number().min(0).max(1).default(0.5),
  seed: z.number().int().optional(),
}).superRefine(oneLength);

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
  typeof ChaosScheduleStep,
  typeof WorkloadStep,
  typeof HcaWorkloadStep,
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
  ChaosScheduleStep,
  WorkloadStep,
  HcaWorkloadStep,
]);
export type Step = z.output<typeof Step>;
export type StepOp = Step['op'];
export type StepOf<Op extends StepOp> = Extract<Step, { op: Op }>;
export const STEP_OPS: StepOp[] = Step.options.map((o) => o.shape.op.value);

/** Instance names the lab itself uses: a subscriber may not take one. */
const RESERVED_INSTANCE = /^(observer|mm-\d+|cpu\d+)$/;

export const SubscriberSpec = z.strictObject({
  name: SubscriberName.refine((n) => !RESERVED_INSTANCE.test(n), {
    error: 'this name is taken by a service of the lab (observer, mm-N, cpuN)',
  }),
  kind: z.enum(['hca']),
  /** how long the device takes to complete an invalidation (default 0) */
  invalidateLatencyMs: LatencySpec.optional(),
  /**
   * a slow page-fault work queue (test hook): between hmm_range_fault and the re-check, wait up
   * to ms for an invalidation to reach the device after the fault's snapshot (default 0: none)
   */
  npfDelayMs: z.number().int().nonnegative().max(600_000).optional(),
});
export type SubscriberSpec = z.output<typeof SubscriberSpec>;

/** Names must be unique too: check.ts checks that (also when another entry is malformed). */
export const Subscribers = z.array(SubscriberSpec);

/** The lab a scenario runs on; `mmlab run --local` starts exactly this. */
export const ScenarioConfig = z.strictObject({
  mode: Mode.default('patched'),
  frames: z.number().int().positive().default(256),
  /**
   * RLIMIT_MEMLOCK in pages (MMLAB_MEMLOCK_PAGES): what one process's pinned registrations may
   * pin together (pinned_vm); a registration past it fails with ENOMEM before it touches a
   * page. Default: a quarter of the frames.
   */
  memlockPages: z.number().int().nonnegative().optional(),
  cpus: z.number().int().positive().max(64).default(2),
  mmReplicas: z.number().int().positive().max(16).default(2),
  /** PT-lock and mmap_sem lease TTL (MMLAB_LEASE_TTL_MS) */
  leaseTtlMs: z.number().int().positive().optional(),
  /** bounded-ptlock-hold threshold (MMLAB_SOFTLOCKUP_MS); the checker uses it too */
  softlockupMs: z.number().int().positive().optional(),
  /** notifier subscribers to start (and register by their hca.reg_mr steps) */
  subscribers: Subscribers.optional(),
  /**
   * how long a subscriber's liveness lease lasts without renewal (MMLAB_SUBSCRIBER_LEASE_MS,
   * default 3000): a subscriber silent for longer is dead, and mm fences it
   */
  subscriberLeaseMs: z.number().int().positive().max(600_000).optional(),
  /** mm's deadline for one attempt of a callback (MMLAB_CALLBACK_TIMEOUT_MS, default 2000) */
  callbackTimeoutMs: z.number().int().positive().max(600_000).optional(),
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
