/**
 * The scenario format: the one schema every `mmlab run FILE` is checked against.
 *
 * A scenario is a config (the lab to run on), a list of steps run in order, and expectations.
 * Steps are ONE discriminated union on `op`; every object is strict, so a misspelt key is an
 * error rather than a silently ignored field. Adding a step kind means: add its schema to
 * `Step`, declare its bindings in `stepBindings` (check.ts) and execute it in the lab's
 * runner; the compiler and `switch-exhaustiveness-check` point at both places.
 *
 * Bindings: a step may name its result with `as` (process.create binds a pid, mmap binds the
 * start address); later steps refer to it by name. Which binding kind each field needs is
 * checked statically (check.ts), before anything runs.
 */
import { z } from 'zod';
import { INVARIANT_NAMES } from '@mmlab/checker';
import { ERROR_CODES, MapFlag, Mode, Pages, Prot, TASK_SIZE, Value } from '@mmlab/protocol';

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

export const Step = z.discriminatedUnion('op', [
  ProcessCreateStep,
  MmapStep,
  MunmapStep,
  CpuReadStep,
  CpuWriteStep,
]);
export type Step = z.output<typeof Step>;
export type StepOp = Step['op'];
export type StepOf<Op extends StepOp> = Extract<Step, { op: Op }>;
export const STEP_OPS: StepOp[] = Step.options.map((o) => o.shape.op.value);

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

/** A step with the line of the scenario file it was written on (for messages and results). */
export type LocatedStep = Step & { readonly line: number };

export type Scenario = Omit<z.output<typeof ScenarioSchema>, 'steps'> & {
  steps: LocatedStep[];
  /** the file name given to parseScenario */
  file: string;
};
