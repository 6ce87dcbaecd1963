/**
 * The HCA steps: register and deregister a memory region (ODP or pinned), RDMA READ and
 * WRITE through it, prefetch. Executed by apps/lab/src/steps/hca.ts.
 */
import { z } from 'zod';
import { HcaAccess, Pages, Value } from '@mmlab/protocol';
import { Binding, SubscriberName, mrAddr, range, step } from './common';

export const HcaRegMrStep = step('hca.reg_mr', {
  /** a configured subscriber of kind hca */
  hca: SubscriberName,
  ...range,
  odp: z.boolean(),
  access: z.array(HcaAccess).min(1),
  /** binds the memory region (its HCA, number, pid and start address) */
  as: Binding.optional(),
});
export const HcaDeregMrStep = step('hca.dereg_mr', { mr: Binding });
export const HcaRdmaWriteStep = step('hca.rdma_write', { ...mrAddr, value: Value });
export const HcaRdmaReadStep = step('hca.rdma_read', {
  ...mrAddr,
  /** the value the RDMA READ must return */
  expect: Value.optional(),
});
export const HcaPrefetchStep = step('hca.prefetch', {
  ...mrAddr,
  pages: Pages,
  write: z.boolean().default(false),
});

/** The HCA steps, in the order of the Step union. */
export const hcaSteps = [
  HcaRegMrStep,
  HcaDeregMrStep,
  HcaRdmaWriteStep,
  HcaRdmaReadStep,
  HcaPrefetchStep,
] as const;
export type HcaStepOp = z.output<(typeof hcaSteps)[number]>['op'];
