/**
 * The bring-your-own-device steps: attach a device (a subscriber of kind external, written on
 * libs/subscriber Device) to a process, device loads and stores through its translation cache,
 * detach. Executed by apps/lab/src/steps/dev.ts.
 */
import { Value } from '@mmlab/protocol';
import { AddrRef, Binding, PageOffset, SubscriberName, step } from './common';

/** a configured subscriber of kind external, and the process it works on */
const devProcess = { dev: SubscriberName, process: Binding };

export const DevAttachStep = step('dev.attach', devProcess);
export const DevDetachStep = step('dev.detach', devProcess);
export const DevWriteStep = step('dev.write', {
  ...devProcess,
  addr: AddrRef,
  page: PageOffset,
  value: Value,
});
export const DevReadStep = step('dev.read', {
  ...devProcess,
  addr: AddrRef,
  page: PageOffset,
  /** the value the device load must return */
  expect: Value.optional(),
});

/** The device steps, in the order of the Step union. */
export const devSteps = [DevAttachStep, DevDetachStep, DevWriteStep, DevReadStep] as const;
export type DevStepOp = (typeof devSteps)[number]['shape']['op']['value'];
