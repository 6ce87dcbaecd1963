/**
 * The workload steps: CPU traffic on a range, RDMA traffic through a memory region, each
 * checked against the last store it knows of. Executed by apps/lab/src/steps/workload.ts.
 */
import { z } from 'zod';
import { Gfn, Pages } from '@mmlab/protocol';
import { Binding, CpuId, range, step } from './common';

/** How long a workload runs: a number of operations, or a time. */
const workloadLength = {
  ops: z.number().int().positive().max(10_000_000).optional(),
  durationMs: z.number().int().positive().max(3_600_000).optional(),
};
const oneLength = (w: { ops?: number; durationMs?: number }, ctx: z.RefinementCtx): void => {
  if ((w.ops === undefined) === (w.durationMs === undefined))
    ctx.addIssue({
      code: 'custom',
      path: ['ops'],
      message: 'give exactly one of ops and durationMs',
    });
};

/**
 * CPU traffic on a private anonymous range (will-it-scale's page_fault loops): each CPU gets
 * its own slice of `pages` and, until the workload ends, loads or stores (writeRatio) a page
 * of it, random or the next one (`pattern`); with zapEvery, after every zapEvery of its
 * accesses it drops its slice (madvise(MADV_DONTNEED)), so the next touches fault again
 * (sequential with zapEvery = the slice: every access is a fault, as in page_fault1). Every load is checked against
 * the last store the workload knows of (after an indefinite failure: either value). The step
 * is ok iff no load returned a value it could not have, and every failure was transient.
 */
export const WorkloadStep = step('workload', {
  /** names the workload in results.json */
  name: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
  cpus: z.array(CpuId).min(1).max(64),
  ...range,
  ...workloadLength,
  writeRatio: z.number().min(0).max(1).default(0.5),
  /** which page each access touches: a random one of the CPU's slice, or the next one (wrapping) */
  pattern: z.enum(['random', 'sequential']).default('random'),
  zapEvery: z.number().int().positive().optional(),
  seed: z.number().int().optional(),
}).superRefine(oneLength);

/** RDMA traffic through one memory region: RDMA READs and WRITEs of random pages of it, checked the same way. */
export const HcaWorkloadStep = step('hca.workload', {
  name: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
  mr: Binding,
  /** how many pages of the MR, from its start (default all the MR was registered with: give it) */
  pages: Pages,
  ...workloadLength,
  writeRatio: z.number().min(0).max(1).default(0.5),
  seed: z.number().int().optional(),
}).superRefine(oneLength);

/**
 * Guest traffic in one VM: vCPUs 0..vcpus-1, each with its own slice of guest frames
 * [gfn, gfn + pages), load or store (writeRatio) a random frame of it until the workload ends
 * (a miss is a guest fault through mm), checked the same way.
 */
export const KvmWorkloadStep = step('kvm.workload', {
  name: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
  /** a VM bound by kvm.create_vm */
  vm: Binding,
  /** how many of its vCPUs run the workload: 0..vcpus-1, each on its own slice of the frames */
  vcpus: z.number().int().positive().max(64).default(1),
  /** the first guest frame */
  gfn: Gfn,
  pages: Pages,
  ...workloadLength,
  writeRatio: z.number().min(0).max(1).default(0.5),
  seed: z.number().int().optional(),
}).superRefine(oneLength);

/** The workload steps, in the order of the Step union. */
export const workloadSteps = [WorkloadStep, HcaWorkloadStep, KvmWorkloadStep] as const;
export type WorkloadStepOp = z.output<(typeof workloadSteps)[number]>['op'];
