/** Handlers of the THP steps (schemas: libs/scenario/src/steps/thp.ts): RPCs to mm. */
import type { ThpStepOp } from '@mmlab/scenario';
import type { StepHandlers } from './context';

export const thpHandlers: StepHandlers<ThpStepOp> = {
  'thp.split': async (step, { rpc, timeoutMs, bindings }) => {
    const req = { pid: bindings.number(step.process), addr: bindings.addr(step.addr, step.page) };
    return { value: await rpc.call('thpSplit', req, { timeoutMs }) };
  },
  'thp.collapse': async (step, { rpc, timeoutMs, bindings }) => {
    const req = { pid: bindings.number(step.process), addr: bindings.addr(step.addr, step.page) };
    return { value: await rpc.call('thpCollapse', req, { timeoutMs }) };
  },
};
