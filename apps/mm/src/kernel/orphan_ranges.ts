/**
 * Models: nothing in the kernel. There, the CPU running munmap cannot die between
 * mmu_notifier_invalidate_range_start() and _end() without taking the whole machine down; in
 * mmlab an mm replica is a process that can be killed there, and every subscriber would then
 * keep the range active forever (an ODP fault in it: EAGAIN until the HCA restarts). This is
 * the lab's stand-in for the end the dead sender owed: every replica periodically looks for open
 * invalidations ({p:<pid>}:inv) whose owning incarnation's liveness lease ({mm}:live:<it>) has
 * expired, and sends their invalidate_range_end (invalidateRangeEndForDead).
 *
 * State (per replica): deadSince — incarnation → when this replica first found its lease gone,
 * dropped as soon as it is found alive again. An owner is taken for dead only once its lease
 * was found gone on scans at least one TTL apart, with no scan finding it alive in between: a
 * replica stopped for a moment (SIGSTOP, a long GC) just past its TTL is not robbed of its ends
 * while it can still go on with the body of the invalidation.
 *
 * Invariant: an open invalidation of a live incarnation is never finished here (the owner of
 * each record is checked, and the take-over is one script: invClaim). What remains is the
 * check-then-claim gap: an owner found dead, stopped not killed, that renews just then loses
 * its end to us; its own invalidateRangeEnd then finds the record taken and sends none (one end
 * per inv either way), but it may finish its body after the range was reopened.
 *
 *   mm-1 (scan)                              mm-0 (stopped past TTL + TTL)
 *   EXISTS {mm}:live:mm-0.a1 → 0 (twice)
 *                                            SIGCONT; renews its lease
 *   invClaim(7: mm-0.a1 → mm-1.c3) → OK
 *   range_end(7) to hca0                     invalidateRangeEnd(7): invClaim → LOST, no end
 */
import type { OpenInvalidation } from '@mmlab/model';
import type { MmContext } from './context';
import { invalidateRangeEndForDead } from './mmu_notifier';

export class OrphanRangeReaper {
  private readonly deadSince = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  /** a scan in progress (scans never overlap) */
  private running: Promise<number> | null = null;
  /** invs this replica is finishing (a slow subscriber's end must not hold up the scans) */
  private readonly finishing = new Set<string>();

  constructor(
    private readonly ctx: MmContext,
    private readonly log: { warn(msg: string): void },
  ) {}

  /** Scan every half TTL (an owner is confirmed dead within about two TTLs of its lease's end). */
  start(): void {
    const every = Math.max(50, Math.floor(this.ctx.env.MMLAB_LEASE_TTL_MS / 2));
    this.timer = setInterval(() => {
      if (this.running) return;
      void this.scan().catch((e: unknown) =>
        this.log.warn(`open invalidations not scanned: ${String(e)}`),
      );
    }, every);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => 0);
  }

  /** One pass over every process: → how many invalidations this replica took over. */
  scan(): Promise<number> {
    this.running ??= this.scanOnce().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async scanOnce(): Promise<number> {
    const { store, incarnation, env } = this.ctx;
    const open = (
      await Promise.all((await store.processes()).map((pid) => store.openInvalidations(pid)))
    )
      .flat()
      .filter((o) => o.owner !== incarnation);
    const owners = [...new Set(open.map((o) => o.owner))];
    const alive = new Map(
      await Promise.all(owners.map(async (w) => [w, await store.mmIsAlive(w)] as const)),
    );
    const t = Date.now();
    for (const w of [...this.deadSince.keys()])
      if (!owners.includes(w) || alive.get(w)) this.deadSince.delete(w);
    const dead = new Set<string>();
    for (const w of owners) {
      if (alive.get(w)) continue;
      const since = this.deadSince.get(w);
      if (since === undefined) this.deadSince.set(w, t);
      else if (t - since >= env.MMLAB_LEASE_TTL_MS) dead.add(w);
    }
    const orphans = open.filter((o) => dead.has(o.owner) && !this.finishing.has(o.inv));
    for (const o of orphans) void this.finish(o);
    return orphans.length;
  }

  private async finish(o: OpenInvalidation): Promise<void> {
    this.finishing.add(o.inv);
    try {
      await invalidateRangeEndForDead(this.ctx, o);
    } catch (e) {
      this.log.warn(`invalidate_range_end of inv ${o.inv} for dead ${o.owner}: ${String(e)}`);
    } finally {
      this.finishing.delete(o.inv);
    }
  }
}
