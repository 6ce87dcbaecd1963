/**
 * Models: nothing in the kernel, where a dead device is a PCI event. In mmlab, mm tells a slow
 * subscriber from a dead one by this lease ({sub}:live:<name> in Redis): the HCA renews it
 * every third of MMLAB_SUBSCRIBER_LEASE_MS on a timer of its own, never on the callback path,
 * so a device busy in a long invalidation stays alive and a paused or killed one expires.
 *
 * A restarted device is a new device: start() takes the lease, then lifts the fence a previous
 * incarnation may have earned (in that order, so mm never sees it unfenced without a lease).
 */
import type { HcaStore } from './context';

export class LivenessLease {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: HcaStore,
    private readonly name: string,
    private readonly ttlMs: number,
    private readonly log: { warn(msg: string): void },
  ) {}

  async start(): Promise<void> {
    await this.store.subscriberAlive(this.name, this.ttlMs);
    await this.store.unfence(this.name);
    this.timer = setInterval(() => void this.renew(), Math.max(1, Math.floor(this.ttlMs / 3)));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async renew(): Promise<void> {
    try {
      await this.store.subscriberAlive(this.name, this.ttlMs);
    } catch (e) {
      this.log.warn(`${this.name}: liveness lease not renewed: ${String(e)}`);
    }
  }
}
