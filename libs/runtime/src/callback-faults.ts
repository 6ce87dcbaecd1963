/**
 * Callback-level faults of a notifier subscriber (SubFault, libs/protocol/src/chaos.ts), set by
 * the lab's nemesis on `mmlab.sub.<name>.chaos` (RPC subChaos). Models: nothing in the kernel —
 * a misbehaving device driver or KVM vCPU thread behind its mmu_notifier_ops. Generic over the
 * subscriber: its callback envelope runs every callback through `around`.
 *
 * Where each fault acts, in one callback (the envelope's mn.recv and PT-lock check come first):
 *
 *   work(stall)            the subscriber's work; it calls stall() where its driver part begins
 *     stall: latency       sleep a draw of the distribution (+ jitter), once per work
 *     stall: hang          wait until the fault is gone (a subChaos without it), then go on
 *   after the work         crash: SIGKILL to itself (the zap done, the ack not sent)
 *   the reply              drop-ack: the first reply of each (callback, inv) is never sent
 *                          dup-ack:  the reply is sent twice
 *                          late-ack: the liveness lease stops being renewed and the reply waits
 *                                    until mm has fenced us (the reply then lands on nobody)
 *
 * A subscriber runs its work once per (callback, inv) however often mm resends it (CallbackLog):
 * stall() runs only inside that one run, while the reply faults act on every reply. `callbacks`
 * restricts a fault to those callbacks. Every fault that fires emits one `sub.fault` event.
 *
 * The reply faults need the raw NATS reply: they go through the ReplyControl of the request
 * being handled (nest.ts, MmlabServerNats); outside a request they do not fire.
 *
 * A hung callback and a heal (the stall loop wakes on every change of the list):
 *
 *   callback (hca0)                          nemesis
 *   recv start inv 7; stall: hang → wait
 *                                            subChaos [hang]      still hung: wait again
 *                                            subChaos []          healed
 *   woken: no hang for this callback → work goes on; ack
 */
import { MmlabError, type MnCallback, SubFault, type SubFaultKind } from '@mmlab/protocol';
import { sleep } from './clock';
import {
  type LatencyDistribution,
  type Rng,
  drawLatency,
  parseLatency,
  seedFor,
  seededRng,
  uniform01,
} from './latency';
import { type ReplyControl, currentReply } from './nest';
import type { Tracer } from './tracer';

/**
 * The subscriber's liveness lease, as late-ack needs it (LivenessLease, libs/model): a zombie
 * keeps working but stops saying it is alive.
 */
export interface ZombieLease {
  /** Stop renewing the lease; resolves once mm has given up on us (fenced us). Idempotent. */
  expire(): Promise<void>;
  /** Renew again (late-ack healed). Never lifts a fence: only a restart does. */
  resume(): void;
}

export interface CallbackFaultsDeps {
  /** the subscriber's name (the agent of its events) */
  agent: string;
  /** MMLAB_SEED: draws are seeded from it and the agent, so a run is reproducible */
  seed: number;
  tracer: Pick<Tracer, 'emit' | 'flush'>;
  /** late-ack's lease; without one, a late ack is held until healed */
  lease?: ZombieLease;
  /** crash: default SIGKILL to this process */
  kill?: () => void;
  /** the reply of the request being handled: default nest.ts currentReply() */
  reply?: () => ReplyControl | undefined;
  sleep?: (ms: number) => Promise<void>;
}

/** A fault as set, with its distribution parsed (latency). */
interface Active {
  fault: SubFault;
  dist?: LatencyDistribution;
}

/** How long crash waits for its sub.fault event to reach NATS before it dies anyway. */
const CRASH_FLUSH_MS = 1000;

/** Replies dropped by drop-ack, remembered per (callback, inv): more than mm has outstanding. */
const DROPPED_CAPACITY = 4096;

export class CallbackFaults {
  /** the active faults, in the order set; [] when healthy */
  private faults: Active[] = [];
  /** resolved (and replaced) at every set(): what a hung callback or a held reply waits for */
  private changed = deferred();
  /**
   * `${callback}|${inv}` whose first reply drop-ack dropped since the list was last set (a
   * resend is answered); bounded by DROPPED_CAPACITY, oldest forgotten first
   */
  private readonly dropped = new Set<string>();
  /** one generator for every draw (latency, jitter), seeded from (MMLAB_SEED, agent) */
  private readonly rng: Rng;
  /** late-ack fired and not healed yet: the lease is not being renewed */
  private zombie = false;

  constructor(private readonly deps: CallbackFaultsDeps) {
    this.rng = seededRng(seedFor(deps.seed, `${deps.agent}/sub-faults`));
  }

  /** The faults now active, as they were set. */
  get active(): SubFault[] {
    return this.faults.map((a) => a.fault);
  }

  /**
   * Set the whole list ([] heals everything): validated first (EBADMSG for a bad shape, EINVAL
   * for a distribution that does not parse), so bad input changes nothing. Hung callbacks and
   * held replies re-check; a late-ack healed renews the lease again (a fence stays).
   */
  set(faults: unknown[]): SubFault[] {
    const next: Active[] = faults.map((f, i) => {
      const r = SubFault.safeParse(f);
      if (!r.success)
        throw new MmlabError(
          'EBADMSG',
          `faults.${i}: ${r.error.issues.map((x) => x.message).join('; ')}`,
        );
      if (r.data.distribution === undefined) return { fault: r.data };
      try {
        return { fault: r.data, dist: parseLatency(r.data.distribution) };
      } catch (e) {
        throw new MmlabError('EINVAL', `faults.${i}: ${(e as Error).message}`);
      }
    });
    this.faults = next;
    this.dropped.clear();
    if (this.zombie && !next.some((a) => a.fault.fault === 'late-ack')) {
      this.zombie = false;
      this.deps.lease?.resume();
    }
    const woken = this.changed;
    this.changed = deferred();
    woken.resolve();
    return this.active;
  }

  /**
   * The callback envelope: run work (which calls stall() where its driver part begins), then
   * the crash point, then the reply faults. Returns work's result; the reply is the caller's.
   */
  async around<T>(
    callback: MnCallback,
    inv: string,
    work: (stall: () => Promise<void>) => Promise<T>,
  ): Promise<T> {
    const r = await work(() => this.stall(callback, inv));
    if (this.find('crash', callback)) await this.crash(callback, inv);
    this.replyFaults(callback, inv);
    return r;
  }

  /** latency, then hang: where the subscriber's driver part of a callback begins. */
  async stall(callback: MnCallback, inv: string): Promise<void> {
    const lat = this.find('latency', callback);
    if (lat?.dist) {
      this.fired(callback, inv, 'latency');
      const jitter = (lat.fault.jitterMs ?? 0) * uniform01(this.rng);
      await (this.deps.sleep ?? sleep)(drawLatency(lat.dist, this.rng) + jitter);
    }
    if (!this.find('hang', callback)) return;
    this.fired(callback, inv, 'hang');
    // The lease is renewed meanwhile (a timer of its own): mm keeps waiting, never fences.
    while (this.find('hang', callback)) await this.changed.promise;
  }

  /**
   * crash: the event out first (flushed: SIGKILL leaves no time; but a NATS that does not
   * answer the flush must not keep us alive), then die. Never returns.
   */
  private async crash(callback: MnCallback, inv: string): Promise<never> {
    this.fired(callback, inv, 'crash');
    try {
      await Promise.race([this.deps.tracer.flush(), sleep(CRASH_FLUSH_MS)]);
    } finally {
      (this.deps.kill ?? (() => process.kill(process.pid, 'SIGKILL')))();
    }
    return new Promise<never>(() => {});
  }

  /** drop-ack, dup-ack and late-ack, on the reply of the request being handled. */
  private replyFaults(callback: MnCallback, inv: string): void {
    const reply = (this.deps.reply ?? currentReply)();
    if (!reply) return;
    if (this.find('late-ack', callback)) {
      this.fired(callback, inv, 'late-ack');
      reply.holdUntil(this.lateAck(callback));
    }
    if (this.find('drop-ack', callback)) {
      const k = `${callback}|${inv}`;
      if (!this.dropped.has(k)) {
        this.dropped.add(k);
        if (this.dropped.size > DROPPED_CAPACITY)
          this.dropped.delete(this.dropped.values().next().value as string);
        this.fired(callback, inv, 'drop-ack');
        reply.drop();
      }
    }
    if (this.find('dup-ack', callback)) {
      this.fired(callback, inv, 'dup-ack');
      reply.copies(2);
    }
  }

  /**
   * late-ack: stop renewing the lease and wait until mm has fenced us, or until late-ack is
   * healed for this callback, whichever comes first.
   *
   *   mm                                   subscriber (late-ack)
   *   send start inv 7, wait ≤ T           work done; lease renewals stop; reply held
   *   timeout; lease alive → resend        (the resend's reply held too)
   *   timeout; lease expired → fence       fenced seen → replies sent: nobody waits for them
   */
  private async lateAck(callback: MnCallback): Promise<void> {
    const lease = this.deps.lease;
    const expired = lease ? lease.expire() : new Promise<void>(() => {});
    this.zombie = true;
    for (;;) {
      const changed = this.changed.promise;
      const done = await Promise.race([expired.then(() => true), changed.then(() => false)]);
      if (done || !this.find('late-ack', callback)) return;
    }
  }

  private find(kind: SubFaultKind, callback: MnCallback): Active | undefined {
    return this.faults.find(
      (a) => a.fault.fault === kind && (!a.fault.callbacks || a.fault.callbacks.includes(callback)),
    );
  }

  private fired(callback: MnCallback, inv: string, fault: SubFaultKind): void {
    this.deps.tracer.emit({ kind: 'sub.fault', agent: this.deps.agent, callback, inv, fault });
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
