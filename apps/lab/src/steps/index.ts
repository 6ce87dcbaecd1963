/**
 * Every step kind's handler, by family. The annotation is the check: a step kind of the Step
 * union without a handler here does not compile.
 */
import type { LocatedStep } from '@mmlab/scenario';
import { chaosHandlers } from './chaos';
import type { Executed, StepContext, StepHandler, StepHandlers } from './context';
import { controlHandlers } from './control';
import { devHandlers } from './dev';
import { hcaHandlers } from './hca';
import { ksmHandlers } from './ksm';
import { kvmHandlers } from './kvm';
import { memoryHandlers } from './memory';
import { thpHandlers } from './thp';
import { workloadHandlers } from './workload';

export * from './context';

export const STEP_HANDLERS: StepHandlers = {
  ...memoryHandlers,
  ...thpHandlers,
  ...hcaHandlers,
  ...kvmHandlers,
  ...devHandlers,
  ...controlHandlers,
  ...chaosHandlers,
  ...workloadHandlers,
  ...ksmHandlers,
};

/** Do one step with its kind's handler. */
export function executeStep(step: LocatedStep, ctx: StepContext, path: string): Promise<Executed> {
  // STEP_HANDLERS[step.op] is the handler of exactly step's kind; TypeScript cannot correlate
  // the two through the union, hence the one widening here.
  const handler = STEP_HANDLERS[step.op] as StepHandler<LocatedStep['op']>;
  return handler(step, ctx, path);
}
