/**
 * Models: mlx5_ib_advise_mr_prefetch() (ibv_advise_mr(IBV_ADVISE_MR_ADVICE_PREFETCH[_WRITE],
 * IBV_ADVISE_MR_FLAG_FLUSH)): fault a range of an ODP MR in ahead of use, synchronously, on
 * the same path as a network page fault. PREFETCH maps what mm gives for a read (possibly
 * read-only, e.g. the zero page); PREFETCH_WRITE faults for write and maps writable.
 */
import type { HcaContext } from './context';
import type { MemoryRegion } from './mr';
import { pagefaultSingleDataSegment } from './pagefault';

/** Returns the pages mapped. A pinned MR is mapped already: all of them. */
export async function mlx5IbAdviseMrPrefetch(
  ctx: HcaContext,
  mr: MemoryRegion,
  addr: number,
  pages: number,
  write: boolean,
  op?: string,
): Promise<number> {
  if (!mr.odp) return pages;
  return pagefaultSingleDataSegment(ctx, mr, addr, pages, write, op);
}
