/**
 * The memory steps: a process's syscalls (process.create, mmap, munmap, fork, mprotect, mremap,
 * madvise, exit, msync), a CPU's loads and stores, a reclaim pass, and files (file.create,
 * file.write, file.read). Each is executed by the handler of the same name
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
  /** [shared] (MAP_SHARED) or [private] (MAP_PRIVATE, the default); [hugetlb] (MAP_HUGETLB) */
  flags: z.array(MapFlag).default([]),
  /** a file (bound by file.create) to map instead of anonymous memory */
  file: Binding.optional(),
  /** the file page the mapping starts at (vm_pgoff) */
  filePage: z.number().int().nonnegative().default(0),
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

/** A file of `pages` pages, all holes (read as 0); xip: an XIP file (no page cache). */
export const FileCreateStep = step('file.create', {
  pages: Pages,
  as: Binding,
  xip: z.boolean().default(false),
});
/** write() of one word to one page of a file, through its page cache (the page gets dirty). */
export const FileWriteStep = step('file.write', {
  file: Binding,
  page: z.number().int().nonnegative(),
  value: Value,
});
/** read() of one page of a file, through its page cache. */
export const FileReadStep = step('file.read', {
  file: Binding,
  page: z.number().int().nonnegative(),
  /** the value the read must return */
  expect: Value.optional(),
});
/**
 * msync(MS_SYNC) of a range: page_mkclean takes every writable mapping of its shared file
 * pages away (invalidate_page to the secondary MMUs) and the dirty ones are written back.
 */
export const MsyncStep = step('msync', range);
/**
 * remap_file_pages(): file page `filePage` onward at a range of a shared mapping of a file —
 * nonlinear for a shmem object (MAP_SHARED|MAP_ANONYMOUS), a linear VMA of its own for a file.
 */
export const RemapFilePagesStep = step('remap_file_pages', {
  ...range,
  filePage: z.number().int().nonnegative(),
});

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
  FileCreateStep,
  FileWriteStep,
  FileReadStep,
  MsyncStep,
  RemapFilePagesStep,
] as const;
export type MemoryStepOp = z.output<(typeof memorySteps)[number]>['op'];
