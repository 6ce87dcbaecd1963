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
export const Gfn = z
  .number()
  .int()
  .nonnegative()
  .max(2 ** 35)
  .describe('guest frame number (a guest physical page)');
/** A VM of a KVM instance: its number there, never reused by one incarnation. */
export const VmId = z.number().int().positive().describe('VM number within its KVM instance');
export const Prot = z.enum(['none', 'r', 'rw']).describe('VMA protection');
export const Access = z.enum(['read', 'write']);
/** mmap flags: MAP_SHARED, or MAP_PRIVATE (the default) */
export const MapFlag = z.enum(['shared', 'private', 'hugetlb']);
/** A file: its inode number in the lab's one filesystem, never reused. */
export const Ino = z.number().int().positive().describe('inode number of a file');
export const Token = z
  .number()
  .int()
  .positive()
  .describe('fencing token of a PT-lock or mmap_sem lease');
export const Agent = z.string().min(1).max(64).describe('who touches memory: cpu0, hca0, ...');
export const OpId = z.string().min(1).max(128).describe('operation id: instance + sequence');
export const Mode = z.enum(['patched', 'legacy']);
/**
 * The kernel a lab models (config `kernel`): an era. `mode` is its older name, kept as an alias:
 * v3.7 = patched (Linux v3.7 as shipped: the seed and its companion 6bdb913f), v3.6 = legacy.
 */
export const Kernel = z.enum(['v3.6', 'v3.7']);
export type Kernel = z.infer<typeof Kernel>;
export const MODE_OF_KERNEL = { 'v3.6': 'legacy', 'v3.7': 'patched' } as const satisfies Record<
  Kernel,
  z.infer<typeof Mode>
>;
export const KERNEL_OF_MODE = { legacy: 'v3.6', patched: 'v3.7' } as const satisfies Record<
  z.infer<typeof Mode>,
  Kernel
>;
/** Transparent huge pages (config `thp`, MMLAB_THP): /sys/kernel/mm/transparent_hugepage/enabled */
export const ThpMode = z.enum(['always', 'never']);
export type ThpMode = z.infer<typeof ThpMode>;

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
  /** do_wp_page's set_pte_at script skips the fencing-token check: a holder whose PT-lock lease was lost still writes → fenced-writes */
  'skip-fence-check',
  /** KVM's tdp_page_fault installs its sPTE without mmu_notifier_retry() → no-map-during-invalidate */
  'kvm-skip-retry',
  /** try_to_unmap_cluster's range_start/end get an uninitialised end (the seed's V1, caught in review): the range covers nothing, the device keeps pages the cluster unmaps → teardown-before-free */
  'uninit-cluster-end',
]);
export type InjectMode = z.infer<typeof InjectMode>;
export const Dispatch = z.enum(['parallel', 'serial']);
/**
 * How a KVM instance's kvm->mmu_lock is held for a range zap (apps/kvm mmu_lock.ts):
 * spin       v3.7: a spinlock held for the whole zap of the range (and the remote TLB flush)
 * sleep      a sleeping lock (the conversion sleepable notifiers made possible): the zap goes in
 *            chunks, dropping the lock and yielding between them
 * generation Avi Kivity's O(1) teardown: bump the VM's mmu_valid_gen, older sPTEs are invalid
 *            and reclaimed lazily (v3.11 did this for memslot changes and zap-all only; using it
 *            for notifier ranges is the lab's own extension)
 */
export const MmuLockMode = z.enum(['spin', 'sleep', 'generation']);
export type MmuLockMode = z.infer<typeof MmuLockMode>;
export type Dispatch = z.infer<typeof Dispatch>;

/**
 * A device latency: milliseconds, or a distribution drawn from per callback (seeded):
 * "uniform:a:b" (a <= b), "normal:mean:sd", "pareto:scale:shape" (both > 0).
 */
export const LatencySpec = z
  .union([z.number(), z.string()], {
    error:
      'expected a latency: milliseconds, or "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape"',
  })
  .superRefine((v, ctx) => {
    const problem = latencyProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** Why v is not a valid latency spec, or undefined. */
export function latencyProblem(v: number | string): string | undefined {
  if (typeof v === 'number')
    return Number.isFinite(v) && v >= 0
      ? undefined
      : `expected a latency of at least 0 ms, got ${v}`;
  const parts = v.split(':');
  // plain decimals only (no 1e3, 0x10, Infinity): what the services' parseLatency reads
  const nums = parts.slice(1).map((x) => (/^\d+(\.\d+)?$/.test(x.trim()) ? Number(x) : NaN));
  const bad = `bad latency "${v}" (expected "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape" with numbers)`;
  if (parts.length !== 3 || nums.some((n) => !Number.isFinite(n))) return bad;
  const [a, b] = nums;
  switch (parts[0]) {
    case 'uniform':
      return a >= 0 && a <= b ? undefined : `bad latency "${v}": uniform needs 0 <= a <= b`;
    case 'normal':
      return a >= 0 && b >= 0
        ? undefined
        : `bad latency "${v}": normal needs mean >= 0 and sd >= 0`;
    case 'pareto':
      return a > 0 && b > 0
        ? undefined
        : `bad latency "${v}": pareto needs scale > 0 and shape > 0`;
    default:
      return bad;
  }
}

/** The notifier callbacks, by their kernel names. */
export const MnCallback = z.enum([
  'invalidate_range_start',
  'invalidate_range_end',
  'invalidate_page',
  'change_pte',
  'clear_flush_young',
  'test_young',
  'release',
]);
export type MnCallback = z.infer<typeof MnCallback>;

/**
 * The callbacks v3.7 still sends under the PT lock (set_pte_at_notify's change_pte,
 * ptep_clear_flush_young_notify, pte test_young): a subscriber must answer them without
 * sleeping, as a CPU answers a TLB shootdown. Sending them under the lock is no
 * no-sleep-under-ptlock violation; a subscriber that sleeps in one shows up as a long PT-lock
 * hold (bounded-ptlock-hold). Models: include/linux/mmu_notifier.h, v3.7.
 */
export const ATOMIC_CALLBACKS: ReadonlySet<MnCallback> = new Set<MnCallback>([
  'change_pte',
  'clear_flush_young',
  'test_young',
]);
