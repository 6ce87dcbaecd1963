/**
 * Handler of the KSM step (schema: libs/scenario/src/steps/ksm.ts): one ksmd pass over the
 * step's ranges (RPC ksmMerge).
 */
import { type KsmStepOp, ksmRangesOf } from '@mmlab/scenario';
import type { StepHandlers } from './context';

export const ksmHandlers: StepHandlers<KsmStepOp> = {
  'ksm.merge': async (step, { rpc, timeoutMs, bindings }) => {
    const ranges = ksmRangesOf(step).map((r) => ({
      pid: bindings.number(r.process),
      addr: bindings.addr(r.addr, r.page),
      pages: r.pages,
    }));
    return { value: await rpc.call('ksmMerge', { ranges }, { timeoutMs }) };
  },
};
