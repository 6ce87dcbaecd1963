/**
 * Models: the RDMA operations a QP has in flight through MTT entries (3.19 mlx5). An invalidation
 * completes only after the device finished every operation that used a translation it
 * removed (mlx5 waits for the ZAP UMR's completion, which the HCA orders after the WQEs that
 * went before it); the same holds for dereg_mr. The tracker is the SDK's InflightAccesses
 * (libs/subscriber inflight.ts), which a Device uses too.
 *
 * Invariant: an operation is registered in the same tick as the MTT lookup that gave it its
 * translation, before any await, so every invalidation that removes that entry afterwards sees
 * it and waits (as a CPU's shootdown waits for an access in flight, apps/cpu).
 *
 *   DMA (hca)                                 invalidation (hca)
 *   e = mtt.get(vpn); begin({pid, vpn, ...})  ← same tick
 *   frameAccess(e.pfn) ...                    zap vpn (smap.clear); drain(pid, range): waits
 *   ... lands; finish()                       → drained; ack → mm may free e.pfn now
 */
import { InflightAccesses } from '@mmlab/subscriber';

/** A DMA in flight: through (pid, vpn) of MR mr; invalidations wait for ODP MRs' only. */
export interface DmaOp {
  readonly pid: number;
  readonly vpn: number;
  readonly mr: number;
  readonly odp: boolean;
}

export type InflightDma = InflightAccesses<DmaOp>;
export const newInflightDma = (): InflightDma => new InflightAccesses<DmaOp>();
