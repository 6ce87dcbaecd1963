/**
 * Models: the RDMA operations a QP has in flight through MTT entries (3.19 mlx5). An invalidation
 * completes only after the device finished every operation that used a translation it
 * removed (mlx5 waits for the ZAP UMR's completion, which the HCA orders after the WQEs that
 * went before it); the same holds for dereg_mr.
 *
 * Invariant: an operation is registered in the same tick as the MTT lookup that gave it its
 * translation, before any await, so every invalidation that removes that entry afterwards sees
 * it and waits (as a CPU's shootdown waits for an access in flight, apps/cpu).
 *
 *   DMA (hca)                                 invalidation (hca)
 *   e = mtt.get(vpn); begin(pid, vpn)         ← same tick
 *   frameAccess(e.pfn) ...                    zap vpn (smap.clear); drain(pid, range): waits
 *   ... lands; finish()                       → drained; ack → mm may free e.pfn now
 */
import { PAGE_SIZE } from '@mmlab/protocol';

interface Op {
  readonly pid: number;
  readonly vpn: number;
  readonly mr: number;
  readonly odp: boolean;
  readonly done: Promise<void>;
}

export class InflightDma {
  private readonly ops = new Set<Op>();

  get size(): number {
    return this.ops.size;
  }

  /** Register an operation through (pid, vpn) of MR mr; call the returned function when it landed. */
  begin(pid: number, vpn: number, mr: number, odp: boolean): () => void {
    let finish!: () => void;
    const op: Op = { pid, vpn, mr, odp, done: new Promise<void>((r) => (finish = r)) };
    this.ops.add(op);
    return () => {
      this.ops.delete(op);
      finish();
    };
  }

  /** Wait for the operations through ODP MRs of pid in [start, end) registered so far. */
  async drain(pid: number, start: number, end: number): Promise<void> {
    const first = Math.floor(start / PAGE_SIZE);
    const last = Math.ceil(end / PAGE_SIZE);
    const busy = [...this.ops].filter(
      (o) => o.odp && o.pid === pid && o.vpn >= first && o.vpn < last,
    );
    await Promise.all(busy.map((o) => o.done));
  }

  /** Wait for the operations through MR mr registered so far. */
  async drainMr(mr: number): Promise<void> {
    await Promise.all([...this.ops].filter((o) => o.mr === mr).map((o) => o.done));
  }
}
