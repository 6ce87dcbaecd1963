/**
 * Handlers of the control steps (schemas: libs/scenario/src/steps/control.ts, and `parallel`
 * in schema.ts): branches at once, a wait, and mm's PT-lock stall.
 */
import { sleep } from '@mmlab/runtime';
import type { ControlStepOp } from '@mmlab/scenario';
import type { StepHandlers } from './context';

export const controlHandlers: StepHandlers<ControlStepOp> = {
  parallel: async (step, ctx, path) => {
    // Every branch in order, all branches at once; the bindings are shared, which is safe
    // because check.ts forbids a branch to read or rebind another's names.
    const branches = await Promise.all(
      step.branches.map((b, bi) => ctx.runList(b, `${path}.branches[${bi}]`)),
    );
    return { value: undefined, branches };
  },
  sleep: async (step) => {
    await sleep(step.ms);
    return { value: undefined };
  },
  'mm.stall': async (step, { rpc, timeoutMs, instances }) => {
    const mms = instances.filter((i) => /^mm-\d+$/.test(i));
    await Promise.all(
      mms.map((id) => rpc.call('mmDebug', { stallUnderPtlMs: step.ms }, { id, timeoutMs })),
    );
    return { value: undefined };
  },
};
