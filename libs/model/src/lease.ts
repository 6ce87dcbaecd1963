/**
 * A held lease (PT lock, or mmap_sem for write or read): renewed every ttl/3, measured from the time of renewal,
 * by compare-and-PEXPIRE; released by compare-and-delete. A renewal that finds the lease gone
 * marks it lost: the holder's later page-table writes will be refused by their fencing token,
 * so losing a lease can cost an operation but never corrupt the page tables.
 *
 *   holder A                              holder B
 *   lease(ptl:3) token 7
 *   ... paused past the TTL ...
 *                                         lease(ptl:3) token 8
 *                                         zap_pte_range(token 8)   accepted
 *   zap_pte_range(token 7)   refused: GET ptl:3 is "B|8", and 7 < ptlmax 8
 */
import type { Store } from './store';

export class Lease {
  private timer: NodeJS.Timeout | null = null;
  private _lost = false;
  readonly value: string;
  readonly acquiredAt: number;

  constructor(
    private readonly store: Store,
    readonly key: string,
    readonly owner: string,
    readonly token: number,
    private readonly ttlMs: number,
    acquiredAt: number,
    /** how to renew, when not by compare-and-PEXPIRE of key (a reader of mmap_sem) */
    private readonly renewer: (value: string, ttlMs: number) => Promise<boolean> = (v, ttl) =>
      store.leaseRenew(key, v, ttl),
  ) {
    this.value = `${owner}|${token}`;
    this.acquiredAt = acquiredAt;
    this.timer = setInterval(() => void this.renew(), Math.max(50, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get lost(): boolean {
    return this._lost;
  }

  private async renew(): Promise<void> {
    try {
      if (!(await this.renewer(this.value, this.ttlMs))) {
        this._lost = true;
        this.stop();
      }
    } catch {
      // Redis unreachable: the lease may lapse; fencing keeps the page tables safe.
    }
  }

  /**
   * Stop renewing, holding on: the lease runs out at its TTL as a stopped holder's would (a
   * test hook: the crash point action lose-lease). Its later writes are refused by their token.
   */
  stopRenewing(): void {
    this.stop();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Release; false when the lease had already been lost. */
  async release(unlock: () => Promise<boolean>): Promise<boolean> {
    this.stop();
    const ok = await unlock();
    if (!ok) this._lost = true;
    return ok;
  }
}
