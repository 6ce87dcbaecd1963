/**
 * A device's accesses in flight through its translations (the HCA's DMA, a Device's loads and
 * stores): registered in the tick of the lookup that gave them their translation, so an
 * invalidation that zaps the entry afterwards waits for them before it acks (mm may free the
 * frame once it has the ack).
 *
 * Invariant: begin() is called in the same tick as the lookup, before any await.
 *
 *   access (device)                           invalidation (device)
 *   e = cache.get(vpn); begin({pid, vpn})     ← same tick
 *   frameAccess(e.pfn) ...                    zap vpn; drain(pid, range): waits
 *   ... lands; finish()                       → drained; ack → mm may free e.pfn now
 */
import { PAGE_SIZE } from '@mmlab/protocol';

export class InflightAccesses<T extends { readonly pid: number; readonly vpn: number }> {
  private readonly ops = new Set<{ readonly what: T; readonly done: Promise<void> }>();

  get size(): number {
    return this.ops.size;
  }

  /** Register an access; call the returned function once it landed. */
  begin(what: T): () => void {
    let finish!: () => void;
    const op = { what, done: new Promise<void>((r) => (finish = r)) };
    this.ops.add(op);
    return () => {
      this.ops.delete(op);
      finish();
    };
  }

  /** Wait for the accesses registered so far that pred picks. */
  async drainWhere(pred: (what: T) => boolean): Promise<void> {
    await Promise.all([...this.ops].filter((o) => pred(o.what)).map((o) => o.done));
  }

  /** Wait for those of pid in the bytes [start, end) registered so far (and that pred picks). */
  drain(pid: number, start: number, end: number, pred: (what: T) => boolean = () => true) {
    const first = Math.floor(start / PAGE_SIZE);
    const last = Math.ceil(end / PAGE_SIZE);
    return this.drainWhere((o) => o.pid === pid && o.vpn >= first && o.vpn < last && pred(o));
  }
}
