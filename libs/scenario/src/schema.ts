/**
 * The scenario format: the one schema every `mmlab run FILE` is checked against.
 *
 * A scenario is a config (the lab to run on), a list of steps run in order, and expectations.
 * Steps are ONE discriminated union on `op`; every object is strict, so a misspelt key is an
 * error rather than a silently ignored field.
 *
 * Step kinds come in families, one file each under steps/ (memory, hca, control, chaos,
 * workload), and each family's handlers live in the file of the same name under
 * apps/lab/src/steps/. Adding a step kind means: add its schema to its family's list, declare
 * its bindings in `stepBindings` (check.ts) and give it a handler in the lab's family file;
 * the lab's `StepHandlers` type (one handler per kind) and `switch-exhaustiveness-check` point
 * at both places.
 *
 * Bindings: a step may name its result with `as` (process.create and fork bind a pid, mmap
 * and mremap an address, hca.reg_mr a memory region); later steps refer to it by name. Which
 * binding kind each field needs is checked statically (check.ts), before anything runs.
 *
 * `parallel` nests step lists (its branches run concurrently, each in order), so Step is a
 * recursive union: ParallelStep refers to Step through a getter, and is declared here with it.
 */
import { z } from 'zod';
import { FSCK_CODES } from '@mmlab/fsck';
import { INVARIANT_NAMES } from '@mmlab/checker';
import {
  Dispatch,
  InjectMode,
  Kernel,
  LatencySpec,
  MODE_OF_KERNEL,
  MmuLockMode,
  Mode,
  ThpMode,
} from '@mmlab/protocol';
import { chaosSteps } from './steps/chaos';
import { SubscriberName, common } from './steps/common';
import { controlSteps } from './steps/control';
import { devSteps } from './steps/dev';
import { hcaSteps } from './steps/hca';
import { ksmSteps } from './steps/ksm';
import { kvmSteps } from './steps/kvm';
import { memorySteps } from './steps/memory';
import { thpSteps } from './steps/thp';
import { workloadSteps } from './steps/workload';

export * from './steps/chaos';
export { AddrRef, Binding, SubscriberName } from './steps/common';
export * from './steps/control';
export * from './steps/dev';
export * from './steps/hca';
export * from './steps/ksm';
export * from './steps/kvm';
export * from './steps/memory';
export * from './steps/thp';
export * from './steps/workload';

/** One of the eight invariant names of DESIGN.md §4 (the checker's list). */
export const InvariantName = z.enum(INVARIANT_NAMES);
export type InvariantName = z.infer<typeof InvariantName>;

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
  ...typeof memorySteps,
  ...typeof thpSteps,
  ...typeof hcaSteps,
  ...typeof kvmSteps,
  ...typeof devSteps,
  typeof ParallelStep,
  ...typeof controlSteps,
  ...typeof chaosSteps,
  ...typeof workloadSteps,
  ...typeof ksmSteps,
];

// The annotation breaks the cycle Step → ParallelStep → Step for the type checker.
export const Step: z.ZodDiscriminatedUnion<StepOptions> = z.discriminatedUnion('op', [
  ...memorySteps,
  ...thpSteps,
  ...hcaSteps,
  ...kvmSteps,
  ...devSteps,
  ParallelStep,
  ...controlSteps,
  ...chaosSteps,
  ...workloadSteps,
  ...ksmSteps,
]);
export type Step = z.output<typeof Step>;
export type StepOp = Step['op'];
export type StepOf<Op extends StepOp> = Extract<Step, { op: Op }>;
export const STEP_OPS: StepOp[] = Step.options.map((o) => o.shape.op.value);

/** Instance names the lab itself uses: a subscriber may not take one. */
const RESERVED_INSTANCE = /^(observer|mm-\d+|cpu\d+)$/;

export const SubscriberSpec = z
  .strictObject({
    name: SubscriberName.refine((n) => !RESERVED_INSTANCE.test(n), {
      error: 'this name is taken by a service of the lab (observer, mm-N, cpuN)',
    }),
    /**
     * hca: an RDMA HCA with ODP (apps/hca); kvm: a KVM instance (apps/kvm); external: a device
     * the user runs (libs/subscriber Device, examples/byo; `mmlab up --byo NAME`), which the
     * lab does not start
     */
    kind: z.enum(['hca', 'kvm', 'external']),
    /**
     * how long the device takes to complete an invalidation (kvm: a slow KVM, after its zap;
     * default 0)
     */
    invalidateLatencyMs: LatencySpec.optional(),
    /**
     * hca: a slow page-fault work queue (test hook): between hmm_range_fault and the re-check,
     * wait up to ms for an invalidation to reach the device after the fault's snapshot
     * (default 0: none)
     */
    npfDelayMs: z.number().int().nonnegative().max(600_000).optional(),
    /** kvm: how mmu_lock is held for a range zap: spin (v3.7, default), sleep, generation */
    mmuLock: MmuLockMode.optional(),
    /**
     * kvm: a slow guest fault (test hook): between resolving the host page and
     * mmu_notifier_retry(), wait up to ms for an invalidation to reach the VM (default 0: none)
     */
    faultDelayMs: z.number().int().nonnegative().max(600_000).optional(),
  })
  .superRefine((s, ctx) => {
    const only = { npfDelayMs: 'hca', mmuLock: 'kvm', faultDelayMs: 'kvm' } as const;
    for (const [k, kind] of Object.entries(only))
      if (s[k as keyof typeof only] !== undefined && s.kind !== kind)
        ctx.addIssue({
          code: 'custom',
          path: [k],
          message: `${k} belongs to a subscriber of kind ${kind}, not ${s.kind}`,
        });
  });
export type SubscriberSpec = z.output<typeof SubscriberSpec>;

/** Names must be unique too: check.ts checks that (also when another entry is malformed). */
export const Subscribers = z.array(SubscriberSpec);

/** The lab a scenario runs on; `mmlab run --local` starts exactly this. */
export const ScenarioConfig = z
  .strictObject({
    /** the kernel modelled: patched = v3.7, legacy = v3.6 (`kernel` names the same choice) */
    mode: Mode.default('patched'),
    /**
     * the kernel modelled, by version (docs/eras.md): v3.7 (as shipped) or v3.6. An alias of
     * `mode`: a config giving only `kernel` gets its mode (ScenarioSchema's config), one giving
     * both must agree.
     */
    kernel: Kernel.optional(),
    /** transparent huge pages (MMLAB_THP): always = anonymous THP on aligned faults; default never */
    thp: ThpMode.optional(),
    /** a huge page (THP and hugetlbfs) is 2^hugePageOrder frames (MMLAB_HUGE_PAGE_ORDER, default 3) */
    hugePageOrder: z.number().int().min(1).max(9).optional(),
    /** huge pages reserved for hugetlbfs at boot (MMLAB_HUGETLB_PAGES, nr_hugepages); default 0 */
    hugetlbPages: z
      .number()
      .int()
      .nonnegative()
      .max(1 << 16)
      .optional(),
    frames: z.number().int().positive().default(256),
    /**
     * Slots of the swap device (MMLAB_SWAP_SLOTS): anonymous pages reclaim writes out (a
     * `reclaim` step). 0, the default: no swap — memory that runs out fails with ENOMEM.
     */
    swapSlots: z
      .number()
      .int()
      .nonnegative()
      .max(1 << 20)
      .optional(),
    /**
     * kswapd's watermarks in free frames (MMLAB_WATERMARK_LOW/HIGH): it wakes when an allocation
     * leaves fewer than `low` free and reclaims until `high` are. Default none: only direct
     * reclaim (an allocation that finds no frame) and the reclaim step.
     */
    watermarks: z
      .strictObject({ low: z.number().int().positive(), high: z.number().int().positive() })
      .refine((w) => w.high >= w.low, { error: 'watermarks.high must be at least watermarks.low' })
      .optional(),
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
  })
  .superRefine((c, ctx) => {
    if (c.kernel !== undefined && MODE_OF_KERNEL[c.kernel] !== c.mode)
      ctx.addIssue({
        code: 'custom',
        path: ['kernel'],
        message: `kernel ${c.kernel} is mode ${MODE_OF_KERNEL[c.kernel]}, but mode says ${c.mode}: give one of them`,
      });
  });
/** A raw config's `kernel` as its `mode` when the config gives no mode (the alias). */
export function kernelAlias(raw: unknown): unknown {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return raw;
  const r = raw as Record<string, unknown>;
  if (r.mode !== undefined || typeof r.kernel !== 'string') return raw;
  const k = Kernel.safeParse(r.kernel);
  return k.success ? { ...r, mode: MODE_OF_KERNEL[k.data] } : raw;
}
export type ScenarioConfig = z.output<typeof ScenarioConfig>;

export const ScenarioExpect = z.strictObject({
  /** exactly the invariants this run must violate (a fault-injection mode); default none */
  violations: z.array(InvariantName).default([]),
  /**
   * mmlab fsck finding codes this run may leave: a recovery mmlab does not have yet (issue 10's
   * note), named so that the run says so instead of hiding it. Any other finding makes the run
   * invalid; default none.
   */
  fsck: z.array(z.enum(FSCK_CODES)).default([]),
});

export const ScenarioSchema = z.strictObject({
  /** also the default results directory: results/<name>/ */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, {
    error: 'expected a name of letters, digits, ".", "_" or "-"',
  }),
  seed: z.number().int().optional(),
  config: z.preprocess(kernelAlias, ScenarioConfig),
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
