/**
 * Handlers of the device steps (schemas: libs/scenario/src/steps/dev.ts): requests to an
 * external device (libs/subscriber runDevice) on mmlab.dev.<name>.*.
 */
import type { DevStepOp } from '@mmlab/scenario';
import type { StepHandlers } from './context';

export const devHandlers: StepHandlers<DevStepOp> = {
  'dev.attach': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    return { value: await rpc.call('devAttach', { pid }, { id: step.dev, timeoutMs }) };
  },
  'dev.detach': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    return { value: await rpc.call('devDetach', { pid }, { id: step.dev, timeoutMs }) };
  },
  'dev.write': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    const addr = bindings.addr(step.addr, step.page);
    const req = { pid, addr, op: 'write' as const, value: step.value };
    return { value: await rpc.call('devAccess', req, { id: step.dev, timeoutMs }) };
  },
  'dev.read': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    const addr = bindings.addr(step.addr, step.page);
    const r = await rpc.call('devAccess', { pid, addr, op: 'read' }, { id: step.dev, timeoutMs });
    return { value: r.value };
  },
};
