/**
 * Handlers of the workload steps (schemas: libs/scenario/src/steps/workload.ts). A workload's
 * outcome is its step's value; an impossible read or an unexplained failure fails the step.
 */
import type { WorkloadStepOp } from '@mmlab/scenario';
import {
  type WorkloadResult,
  runCpuWorkload,
  runHcaWorkload,
  runKvmWorkload,
  workloadProblem,
} from '../workload';
import { type Executed, NotOk, type StepContext, type StepHandlers } from './context';

/**
 * Deadline of one workload access: longer than a fault's own deadline (MMLAB_FAULT_DEADLINE_MS,
 * 10 s), short enough that a request lost with a restarting nats-server fails soon (ETIMEDOUT,
 * indefinite) and the workload goes on.
 */
const WORKLOAD_OP_TIMEOUT_MS = 12_000;

function workloadDone(ctx: StepContext, r: WorkloadResult): Executed {
  ctx.recordWorkload(r);
  const problem = workloadProblem(r);
  if (problem) throw new NotOk(`workload ${r.name}: ${problem}`, r);
  return { value: r };
}

export const workloadHandlers: StepHandlers<WorkloadStepOp> = {
  workload: async (step, ctx) => {
    const r = await runCpuWorkload(
      ctx.rpc,
      {
        name: step.name ?? `workload@${step.line}`,
        cpus: step.cpus,
        pid: ctx.bindings.number(step.process),
        addr: ctx.bindings.addr(step.addr, step.page),
        pages: step.pages,
        ops: step.ops,
        durationMs: step.durationMs,
        writeRatio: step.writeRatio,
        pattern: step.pattern,
        zapEvery: step.zapEvery,
        seed: step.seed ?? ctx.scenario.seed ?? 0,
      },
      Math.min(ctx.timeoutMs, WORKLOAD_OP_TIMEOUT_MS),
    );
    return workloadDone(ctx, r);
  },
  'hca.workload': async (step, ctx) => {
    const m = ctx.bindings.mr(step.mr);
    const r = await runHcaWorkload(
      ctx.rpc,
      {
        name: step.name ?? `hca.workload@${step.line}`,
        hca: m.hca,
        mr: m.mr,
        addr: m.addr,
        pages: step.pages,
        ops: step.ops,
        durationMs: step.durationMs,
        writeRatio: step.writeRatio,
        seed: step.seed ?? ctx.scenario.seed ?? 0,
      },
      Math.min(ctx.timeoutMs, WORKLOAD_OP_TIMEOUT_MS),
    );
    return workloadDone(ctx, r);
  },
  'kvm.workload': async (step, ctx) => {
    const v = ctx.bindings.vm(step.vm);
    const r = await runKvmWorkload(
      ctx.rpc,
      {
        name: step.name ?? `kvm.workload@${step.line}`,
        kvm: v.kvm,
        vm: v.vm,
        vcpus: step.vcpus,
        gfn: step.gfn,
        pages: step.pages,
        ops: step.ops,
        durationMs: step.durationMs,
        writeRatio: step.writeRatio,
        seed: step.seed ?? ctx.scenario.seed ?? 0,
      },
      Math.min(ctx.timeoutMs, WORKLOAD_OP_TIMEOUT_MS),
    );
    return workloadDone(ctx, r);
  },
};
