/**
 * What a step handler gets and gives back. The runner (scenario-runner.ts) judges a step from
 * what its handler returns or throws; the handlers themselves only do the step: one handler per
 * step kind, in the file of the step's family (memory, hca, control, chaos, workload), beside
 * the family file of libs/scenario/src/steps/ that declares the step's schema.
 *
 * `StepHandlers` is keyed by every step kind, so a kind without a handler (or a handler for a
 * kind that does not exist) does not compile.
 */
import { PAGE_SIZE, type TraceKind } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import type { AddrRef, LocatedStep, Scenario, StepOp, StepResult } from '@mmlab/scenario';
import type { Nemesis } from '../nemesis';
import type { ScheduleOutcome } from '../schedule';
import type { WorkloadResult } from '../workload';

/**
 * The step is not ok for a reason of its own, not a service's error: it read a binding whose
 * defining step failed (nothing was sent), or a workload saw an impossible read.
 */
export class NotOk extends Error {
  constructor(
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
  }
}

/** A memory region bound by hca.reg_mr: which HCA, its number, and the range's pid and start. */
export interface MrBinding {
  hca: string;
  mr: number;
  pid: number;
  addr: number;
}

/** A VM bound by kvm.create_vm: which KVM instance, its number there, and the VMM's pid. */
export interface VmBinding {
  kvm: string;
  vm: number;
  pid: number;
}

/** What a name is bound to: a pid or an address (a number), a memory region, or a VM. */
export type BoundValue = number | MrBinding | VmBinding;

/** What a step produced: its value, the binding it defines (`as`), a parallel step's branches. */
export interface Executed {
  value: unknown;
  bind?: { name: string; value: BoundValue };
  branches?: StepResult[][];
}

export const bindAs = (as: string | undefined, value: BoundValue): Executed['bind'] =>
  as === undefined ? undefined : { name: as, value };

/**
 * The names steps bound with `as`: name → pid (process.create, fork), address (mmap, mremap)
 * or memory region (hca.reg_mr). Kinds were checked at parse time; a name is unbound here only
 * when its defining step failed, which makes the reading step not ok (NotOk), nothing sent.
 */
export class Bindings {
  private readonly values = new Map<string, BoundValue>();

  set(name: string, value: BoundValue): void {
    this.values.set(name, value);
  }

  /** A pid or an address. */
  number(name: string): number {
    const value = this.values.get(name);
    if (value === undefined)
      throw new NotOk(`"${name}" is unbound: the step that binds it did not succeed`);
    if (typeof value !== 'number')
      throw new NotOk(`"${name}" is a memory region or a VM, expected a pid or an address`);
    return value;
  }

  mr(name: string): MrBinding {
    const value = this.values.get(name);
    if (value === undefined)
      throw new NotOk(`"${name}" is unbound: the step that binds it did not succeed`);
    if (typeof value === 'number' || !('mr' in value))
      throw new NotOk(`"${name}" is not a memory region`);
    return value;
  }

  vm(name: string): VmBinding {
    const value = this.values.get(name);
    if (value === undefined)
      throw new NotOk(`"${name}" is unbound: the step that binds it did not succeed`);
    if (typeof value === 'number' || !('vm' in value)) throw new NotOk(`"${name}" is not a VM`);
    return value;
  }

  /** addr (a number or an address binding) + page * 4 KiB */
  addr(addr: AddrRef, page: number): number {
    return (typeof addr === 'number' ? addr : this.number(addr)) + page * PAGE_SIZE;
  }

  /** An address in a memory region: addr (default the MR's start) + page * 4 KiB. */
  mrAddr(m: MrBinding, addr: AddrRef | undefined, page: number): number {
    return addr === undefined ? m.addr + page * PAGE_SIZE : this.addr(addr, page);
  }
}

/** What a handler may use: the lab, the run's bindings and nemesis, and the runner's records. */
export interface StepContext {
  readonly rpc: RpcClient;
  /** every service instance of the lab (mm-0, cpu1, ...) */
  readonly instances: readonly string[];
  readonly scenario: Scenario;
  readonly bindings: Bindings;
  readonly nemesis: Nemesis;
  /** deadline of one step's request */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** run a step list in order, each step judged and recorded (a parallel step's branch) */
  runList(steps: readonly LocatedStep[], base: string): Promise<StepResult[]>;
  /** how many events of kind `event` (from instance, else any) the observer has since the run began */
  traceCount(event: TraceKind, instance?: string): Promise<number>;
  /** results.json's schedules and workloads */
  recordSchedule(s: ScheduleOutcome): void;
  recordWorkload(r: WorkloadResult): void;
}

/** The step of kind Op, with its line (and, for parallel, located branches). */
export type LocatedStepOf<Op extends StepOp> = Extract<LocatedStep, { op: Op }>;

/** Does one step: sends its RPC(s) and returns what it produced; a typed error is its outcome. */
export type StepHandler<Op extends StepOp> = (
  step: LocatedStepOf<Op>,
  ctx: StepContext,
  path: string,
) => Promise<Executed>;

/** One handler per step kind of Ops (default: every kind). */
export type StepHandlers<Ops extends StepOp = StepOp> = { [Op in Ops]: StepHandler<Op> };
