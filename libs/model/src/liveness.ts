/**
 * Models: nothing in the kernel, where a dead device is a PCI event and a CPU that stops
 * answering IPIs is a hard lockup. In mmlab, mm tells a slow agent from a dead one by this
 * lease ({sub}:live:<name> in Redis): the agent renews it every third of its TTL on a timer of
 * its own, never on the callback or shootdown path, so an agent busy in a long invalidation
 * stays alive and a paused or killed one expires. Used by notifier subscribers (apps/hca) and
 * by CPU agents (apps/cpu).
 *
 * A restarted agent is a new agent: start() takes the lease, then lifts the fence a previous
 * incarnation may have earned (in that order, so mm never sees it unfenced without a lease).
 *
 * The late-ack fault (libs/runtime callback-faults.ts) makes a subscriber a zombie: expire()
 * stops the renewals and resolves once mm has fenced it; resume() renews again but never lifts
 * the fence — only start(), in a new incarnation, does (or ensure(), for a CPU: below).
 *
 * Lapse detection (onLapsed): the holder cannot ask Redis whether the key expired in between
 * (the renewal is an unconditional SET), so it measures. Let S be the monotonic time at which
 * the last successful take/renew was *sent*; Redis applied it at or after S, so the key lives
 * at least until S + ttl. A renewal whose reply comes back later than S + ttl may have found the
 * key gone: the lease "may have lapsed". The test is conservative (it can report a lapse that
 * did not happen, never miss one), and mayHaveLapsed() applies it synchronously, so a CPU
 * resumed from SIGSTOP sees it before it serves anything, whichever timer fires first.
 *
 *   agent (paused)                     Redis                      mm
 *   renew sent at S ─────────────────► live:cpu0 PX ttl
 *   ... SIGSTOP ...                    (S + ttl) key expires
 *                                                                 EXISTS live:cpu0 → 0: dead,
 *                                                                 fence cpu0, drop it from cpumask
 *   SIGCONT: now - S > ttl → lapsed:
 *   flush everything, unfence, serve
 */
import type { Store } from './store';

/** The Redis calls a liveness lease makes (a narrow view of Store, so tests can stand in). */
export type LivenessStore = Pick<Store, 'subscriberAlive' | 'unfence' | 'isFenced'>;

/** How long a zombie waits for mm's fence past the lease, at most (mm may be gone too). */
const FENCE_WAIT_MS = 30_000;

export interface LivenessOptions {
  /**
   * Called (once per lapse, before the lease is used again) when the lease may have lapsed:
   * the agent drops whatever mm may have revoked meanwhile, then the fence is lifted.
   */
  onLapsed?: () => void | Promise<void>;
}

/**
 * State: timer is set iff the lease is being renewed (started, not expiring, not stopped);
 * expiring is set iff renewals were stopped by expire() and not resumed since; sentAt only
 * grows, and only by a take or a renewal that landed while the lease still lived.
 */
export class LivenessLease {
  private timer: NodeJS.Timeout | null = null;
  private expiring: { done: Promise<void>; cancel: () => void } | null = null;
  /** monotonic time the last successful take/renew was sent (−∞: never) */
  private sentAt = Number.NEGATIVE_INFINITY;
  /** a recovery in progress (onLapsed, then take + unfence): every user waits for it */
  private recovering: Promise<void> | null = null;

  constructor(
    private readonly store: LivenessStore,
    private readonly name: string,
    private readonly ttlMs: number,
    private readonly log: { warn(msg: string): void },
    private readonly opts: LivenessOptions = {},
  ) {}

  async start(): Promise<void> {
    await this.take();
    this.renewEvery();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.expiring?.cancel();
    this.expiring = null;
  }

  /**
   * late-ack: stop renewing; resolves once mm has fenced this agent (it must, once the lease
   * is gone and a callback of ours is overdue), or after FENCE_WAIT_MS past the lease, or on
   * resume()/stop(). Idempotent until resumed.
   */
  expire(): Promise<void> {
    if (this.expiring) return this.expiring.done;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    let cancelled = false;
    let wake: () => void = () => {};
    const poll = Math.max(10, Math.floor(this.ttlMs / 10));
    const deadline = Date.now() + this.ttlMs + FENCE_WAIT_MS;
    const done = (async () => {
      while (!cancelled && Date.now() < deadline) {
        try {
          if (await this.store.isFenced(this.name)) return;
        } catch (e) {
          this.log.warn(`${this.name}: fence check failed: ${String(e)}`);
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, poll);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
    })();
    this.expiring = {
      done,
      cancel: () => {
        cancelled = true;
        wake();
      },
    };
    return done;
  }

  /** late-ack healed: renew again (now, then on the timer). A fence stays. */
  resume(): void {
    if (!this.expiring) return;
    this.expiring.cancel();
    this.expiring = null;
    void this.renew();
    this.renewEvery();
  }

  private renewEvery(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => void this.renew(), Math.max(1, Math.floor(this.ttlMs / 3)));
  }

  /** Could Redis have let the lease expire since it was last renewed? (see above) */
  mayHaveLapsed(): boolean {
    return performance.now() - this.sentAt >= this.ttlMs;
  }

  /**
   * Before using anything mm may revoke from a dead agent: when the lease may have lapsed (or
   * the caller found itself fenced), run onLapsed, take the lease again and lift the fence.
   * Concurrent callers share one recovery.
   */
  async ensure(force = false): Promise<void> {
    while (this.recovering) await this.recovering;
    if (!force && !this.mayHaveLapsed()) return;
    this.recovering = (async () => {
      try {
        await this.opts.onLapsed?.();
        await this.take();
      } finally {
        this.recovering = null;
      }
    })();
    await this.recovering;
  }

  /** Take the lease, then lift the fence (never unfenced without a lease). */
  private async take(): Promise<void> {
    const sent = performance.now();
    await this.store.subscriberAlive(this.name, this.ttlMs);
    await this.store.unfence(this.name);
    this.sentAt = sent;
  }

  private async renew(): Promise<void> {
    if (this.recovering) return;
    // Lapsed already (paused, or Redis was away): recover instead of quietly renewing.
    if (this.opts.onLapsed && this.mayHaveLapsed()) {
      await this.ensure().catch((e: unknown) =>
        this.log.warn(`${this.name}: liveness lease not taken again: ${String(e)}`),
      );
      return;
    }
    const sent = performance.now();
    try {
      await this.store.subscriberAlive(this.name, this.ttlMs);
      // Only a renewal that landed while the lease still lived extends it (else: lapsed, above).
      if (!this.opts.onLapsed || performance.now() - this.sentAt < this.ttlMs) this.sentAt = sent;
    } catch (e) {
      this.log.warn(`${this.name}: liveness lease not renewed: ${String(e)}`);
    }
  }
}
