/**
 * The memory steps: a process's syscalls (process.create, mmap, munmap, fork, mprotect, mremap,
 * madvise, exit), a CPU's loads and stores, and a reclaim pass. Each is executed by the handler of the same name
 * in apps/lab/src/steps/memory.ts.
 */
import { z } from 'zod';
import { MapFlag, Pages, Prot, Value } from '@mmlab/protocol';
import { AddrRef, Binding, CpuId, PageOffset, range, step } from './common';

export const ProcessCreateStep = step('process.create', { as: Binding.optional() });
export const MmapStep = step('mmap', {
  process: Binding,
  pages: Pages,
  prot: Prot,
  flags: z.array(MapFlag).default([]),
  as: Binding.optional(),
});
export const MunmapStep = step('munmap', {
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  pages: Pages,
});
export const CpuReadStep = step('cpu.read', {
  cpu: CpuId,
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  /** the value the load must return */
  expect: Value.optional(),
});
export const CpuWriteStep = step('cpu.write', {
  cpu: CpuId,
  process: Binding,
  addr: AddrRef,
  page: PageOffset,
  value: Value,
});

export const ForkStep = step('fork', { process: Binding, as: Binding.optional() });
export const MprotectStep = step('mprotect', { ...range, prot: Prot });
export const MremapStep = step('mremap', {
  ...range,
  /** the new length (default: pages) */
  newPages: Pages.optional(),
  /** binds the new start address */
  as: Binding.optional(),
});
export const MadviseStep = step('madvise', { ...range, advice: z.enum(['dontneed']) });
export const ExitStep = step('exit', { process: Binding });
/**
 * A synchronous reclaim pass (try_to_free_pages with this target), whatever the watermarks: it
 * frees up to `pages` anonymous frames by swapping them out (config.swapSlots).
 */
export const ReclaimStep = step('reclaim', { pages: Pages });

/** The memory steps, in the order of the Step union. */
export const memorySteps = [
  ProcessCreateStep,
  MmapStep,
  MunmapStep,
  CpuReadStep,
  CpuWriteStep,
  ForkStep,
  MprotectStep,
  MremapStep,
  MadviseStep,
  ExitStep,
  ReclaimStep,
] as const;
export type MemoryStepOp = z.output<(typeof memorySteps)[number]>['op'];
