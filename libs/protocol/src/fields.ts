/** Field schemas shared by requests, replies and trace events. */
import { z } from 'zod';
import { TASK_SIZE } from './units';

export const Pid = z.number().int().positive().describe('process id (an mm_struct)');
export const Addr = z
  .number()
  .int()
  .nonnegative()
  .max(TASK_SIZE)
  .describe('virtual address in bytes');
export const Pages = z
  .number()
  .int()
  .positive()
  .max(1 << 20)
  .describe('length in 4 KiB pages');
export const Pfn = z.number().int().nonnegative().describe('physical frame number');
export const Gen = z
  .number()
  .int()
  .nonnegative()
  .describe('frame generation, bumped at every allocation');
export const Value = z.number().int().describe('the one machine word a page holds');
export const Prot = z.enum(['none', 'r', 'rw']).describe('VMA protection');
export const Access = z.enum(['read', 'write']);
export const MapFlag = z.enum(['shared']);
export const Token = z
  .number()
  .int()
  .positive()
  .describe('fencing token of a PT-lock or mmap_sem lease');
export const Agent = z.string().min(1).max(64).describe('who touches memory: cpu0, hca0, ...');
export const OpId = z.string().min(1).max(128).describe('operation id: instance + sequence');
export const Mode = z.enum(['patched', 'legacy']);

export type Prot = z.infer<typeof Prot>;
export type Access = z.infer<typeof Access>;
export type Mode = z.infer<typeof Mode>;

/**
 * Fault-injection modes (config `inject: [...]`): each reproduces a known mistake and breaks
 * one invariant, so the checker is shown able to fail.
 */
export const InjectMode = z.enum([
  /** do_wp_page frees the old page before mmu_notifier_invalidate_page → teardown-before-free */
  'free-before-invalidate-page',
  /** invalidate_range_end gets a range other than its start's (the haddr bug of the patch review) → paired-range */
  'range-end-mismatch',
  /** the HCA installs a device mapping without re-checking its invalidation sequence → no-map-during-invalidate */
  'skip-seq-recheck',
]);
export type InjectMode = z.infer<typeof InjectMode>;
export const Dispatch = z.enum(['parallel', 'serial']);
export type Dispatch = z.infer<typeof Dispatch>;
