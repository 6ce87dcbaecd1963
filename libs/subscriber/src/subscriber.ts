/**
 * The subscriber side of the MMU notifier, for any secondary MMU (the HCA and KVM):
 * what mm/mmu_notifier.c gives a driver for free in the kernel, and what a subscriber over NATS
 * must do itself. A device plugs its per-callback handlers (NotifierOps: the driver's
 * mmu_notifier_ops) into a NotifierSubscriber, which owns:
 *
 *   the envelope   every callback: mn.recv; the sender's PT locks checked in Redis (mn.ptl_held
 *                  if it still holds one: it must not, we may sleep); the handler, once per
 *                  (callback, inv) however many times mm resends it (CallbackLog); mn.done; the
 *                  ack echoing inv. With telemetry on, one span `<spanPrefix><callback>`.
 *   the faults     the lab's callback-level faults (CallbackFaults, set by subChaos) wrap the
 *                  handler: its stall() marks where the driver part begins (latency, hang);
 *                  crash after the work, before the ack; drop/dup/late-ack on each reply.
 *   the lease      the liveness lease mm checks before it gives up on a slow callback
 *                  (LivenessLease); start() takes it and lifts a previous incarnation's fence.
 *   the fence      frameAccess(): the device's DMA (or a vCPU's access) straight to a frame,
 *                  refused with ENODEV (and access.refused) once mm fenced this subscriber.
 *
 * Models: nothing in the kernel for the envelope, lease and fence (SRCU never resends, a dead
 * device is a PCI event); the handlers model the driver's callbacks.
 *
 * A callback the device does not implement (an optional NotifierOps member left out, as a
 * NULL op in mmu_notifier_ops) is acked without work, young ones answering not young.
 *
 * State changes the fault path must see happen in the tick the callback arrives, before any
 * await (a JavaScript tick is atomic): the handler is called synchronously in the tick of
 * mn.recv and runs up to its first await there.
 */
import {
  type Access,
  MmlabError,
  type MnCallback,
  PAGE_SIZE,
  type ReqParsed,
  TASK_SIZE,
} from '@mmlab/protocol';
import { LivenessLease, type Store } from '@mmlab/model';
import { CallbackFaults, type OpIds, type Tracer, now, sleep } from '@mmlab/runtime';
import { CallbackLog } from './callback_log';

/** The Redis calls a subscriber makes (a narrow view of Store, so tests can stand in for it). */
export type SubscriberStore = Pick<
  Store,
  'frameAccess' | 'ptlHeldBy' | 'subscriberAlive' | 'unfence' | 'isFenced' | 'livenessDrop'
>;

export interface SubscriberDeps {
  /** the subscriber name (mmu_notifier_register's), and the agent of its events and accesses */
  readonly name: string;
  readonly store: SubscriberStore;
  readonly tracer: Tracer;
  readonly ids: OpIds;
  /** MMLAB_SUBSCRIBER_LEASE_MS */
  readonly leaseMs: number;
  /** MMLAB_SEED: the callback faults' draws */
  readonly seed: number;
  readonly log: { warn(msg: string): void };
  /** crash (a callback fault): default SIGKILL to this process */
  readonly kill?: () => void;
  /** span name prefix: ib_umem_notifier_ (HCA), kvm_mmu_notifier_ (KVM) */
  readonly spanPrefix?: string;
}

/**
 * A device's SubscriberDeps from its context (the HCA's and KVM's have the same fields): its
 * name, Redis, tracer, op ids and log, and the lease and seed of its environment.
 */
export function subscriberDepsOf(
  ctx: Pick<SubscriberDeps, 'name' | 'store' | 'tracer' | 'ids' | 'log'> & {
    readonly env: { readonly MMLAB_SUBSCRIBER_LEASE_MS: number; readonly MMLAB_SEED: number };
  },
  spanPrefix: string,
  kill?: () => void,
): SubscriberDeps {
  return {
    name: ctx.name,
    store: ctx.store,
    tracer: ctx.tracer,
    ids: ctx.ids,
    leaseMs: ctx.env.MMLAB_SUBSCRIBER_LEASE_MS,
    seed: ctx.env.MMLAB_SEED,
    log: ctx.log,
    kill,
    spanPrefix,
  };
}

/** What a handler gets besides its request. */
export interface CallbackCtx {
  /** the op id of this callback (the op of the events it causes) */
  readonly op: string;
  /** where the driver part begins: the callback faults' latency and hang act here */
  readonly stall: () => Promise<void>;
}

type Handler<K extends MnRpc, R = void> = (req: ReqParsed<K>, cb: CallbackCtx) => Promise<R>;

type MnRpc =
  | 'mnRelease'
  | 'mnInvalidatePage'
  | 'mnInvalidateRangeStart'
  | 'mnInvalidateRangeEnd'
  | 'mnChangePte'
  | 'mnClearFlushYoung'
  | 'mnTestYoung';

/**
 * A device's mmu_notifier_ops: the range callbacks and release are required (every subscriber
 * that maps memory needs them); the 2012 single-page and young callbacks are optional.
 */
export interface NotifierOps {
  release: Handler<'mnRelease'>;
  invalidateRangeStart: Handler<'mnInvalidateRangeStart'>;
  invalidateRangeEnd: Handler<'mnInvalidateRangeEnd'>;
  invalidatePage?: Handler<'mnInvalidatePage'>;
  changePte?: Handler<'mnChangePte'>;
  /** returns: was any of [start, end) accessed (the bits are cleared) */
  clearFlushYoung?: Handler<'mnClearFlushYoung', boolean>;
  /** returns: was addr accessed */
  testYoung?: Handler<'mnTestYoung', boolean>;
}

interface CallbackReq {
  pid: number;
  inv: string;
  owner: string;
}

interface Span {
  start: number;
  end: number;
}

type Base = { op: string; agent: string; pid: number; callback: MnCallback; inv: string };

const pageOf = (addr: number): Span => ({ start: addr, end: addr + PAGE_SIZE });
const ALL: Span = { start: 0, end: TASK_SIZE };
const key = (callback: MnCallback, inv: string): string => `${callback}|${inv}`;

export class NotifierSubscriber {
  readonly faults: CallbackFaults;
  private readonly lease: LivenessLease;
  private readonly log = new CallbackLog();
  /**
   * The invalidations this subscriber acked a start of and has not had the end of yet (by
   * inv): a clean shutdown waits for them (quiesce) before it stops answering callbacks, so
   * that mm's ends find it.
   */
  private readonly openRanges = new Set<string>();
  private readonly rangesClosed = new Set<() => void>();

  constructor(
    private readonly deps: SubscriberDeps,
    private readonly ops: NotifierOps,
  ) {
    this.lease = new LivenessLease(deps.store, deps.name, deps.leaseMs, deps.log);
    this.faults = new CallbackFaults({
      agent: deps.name,
      seed: deps.seed,
      tracer: deps.tracer,
      lease: this.lease,
      kill: deps.kill,
    });
  }

  get name(): string {
    return this.deps.name;
  }

  /** The callbacks this device implements (mmu_notifier_ops members that are not NULL). */
  get callbacks(): MnCallback[] {
    const o = this.ops;
    const all: Array<[MnCallback, unknown]> = [
      ['release', o.release],
      ['invalidate_page', o.invalidatePage],
      ['invalidate_range_start', o.invalidateRangeStart],
      ['invalidate_range_end', o.invalidateRangeEnd],
      ['clear_flush_young', o.clearFlushYoung],
      ['test_young', o.testYoung],
      ['change_pte', o.changePte],
    ];
    return all.filter(([, f]) => f !== undefined).map(([c]) => c);
  }

  /** Power on: take the liveness lease and lift any fence of a previous incarnation. */
  async start(): Promise<void> {
    await this.lease.start();
  }

  stop(): void {
    this.lease.stop();
  }

  /**
   * A clean shutdown's last word: stop renewing the liveness lease and drop it, so that mm
   * takes this subscriber for gone at once should anything still be sent to it (it has
   * unregistered everywhere by then). A restart takes a new lease (start()).
   */
  async drop(): Promise<void> {
    this.lease.stop();
    await this.deps.store.livenessDrop(this.deps.name);
  }

  /** Invalidations started here and not ended yet (their starts acked or running). */
  get openInvalidations(): number {
    return this.openRanges.size;
  }

  /**
   * Until every invalidation started here has ended, or ms passed; true when none is open.
   * (A clean shutdown: mm sends the end of each range after its start's ack, and this
   * subscriber must still be there to take it.)
   */
  async quiesce(ms: number): Promise<boolean> {
    if (this.openRanges.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    try {
      return await new Promise<boolean>((resolve) => {
        wake = () => {
          if (this.openRanges.size === 0) resolve(true);
        };
        this.rangesClosed.add(wake);
        timer = setTimeout(() => resolve(this.openRanges.size === 0), ms);
      });
    } finally {
      clearTimeout(timer);
      if (wake) this.rangesClosed.delete(wake);
    }
  }

  /**
   * A clean shutdown's teardown of a device's objects (an HCA's MRs, a KVM's VMs): destroy each
   * of ids in turn (its unregistration answered here: mm sends release first), then quiesce —
   * all within ms: a hung callback (its own release) must not hold the stop past its deadline.
   * A destroy that fails is passed to `failed` and counted; running out of time counts as one.
   */
  async teardown(
    ids: readonly number[],
    destroy: (id: number) => Promise<unknown>,
    ms: number,
    failed: (id: number, e: unknown) => void,
  ): Promise<{ failed: number; quiet: boolean }> {
    const deadline = Date.now() + ms;
    let n = 0;
    const all = (async () => {
      for (const id of ids)
        await destroy(id).catch((e: unknown) => {
          n++;
          failed(id, e);
        });
      return true;
    })();
    const done = await Promise.race([all, sleep(ms).then(() => false)]);
    if (!done) n = Math.max(n, 1);
    return { failed: n, quiet: await this.quiesce(Math.max(0, deadline - Date.now())) };
  }

  /**
   * subChaos: set the callback-level faults (the whole list; [] heals). A heal never lifts a
   * fence mm put on this subscriber (late-ack, or a lease lost otherwise): only a restart does.
   */
  subChaos(req: ReqParsed<'subChaos'>): { active: ReqParsed<'subChaos'>['faults'] } {
    return { active: this.faults.set(req.faults) };
  }

  /** Has (callback, inv) been run (or is it running)? A resend is then answered without redoing. */
  seen(callback: MnCallback, inv: string): boolean {
    return this.log.has(key(callback, inv));
  }

  invalidateRangeStart(req: ReqParsed<'mnInvalidateRangeStart'>): Promise<{ inv: string }> {
    const h = this.ops.invalidateRangeStart;
    if (!this.seen('invalidate_range_end', req.inv)) this.openRanges.add(req.inv);
    return this.ack('invalidate_range_start', req, req, (cb) => h(req, cb));
  }

  invalidateRangeEnd(req: ReqParsed<'mnInvalidateRangeEnd'>): Promise<{ inv: string }> {
    const h = this.ops.invalidateRangeEnd;
    const ended = this.ack('invalidate_range_end', req, req, (cb) => h(req, cb));
    const close = () => {
      if (!this.openRanges.delete(req.inv)) return;
      for (const w of [...this.rangesClosed]) w();
    };
    void ended.then(close, close);
    return ended;
  }

  invalidatePage(req: ReqParsed<'mnInvalidatePage'>): Promise<{ inv: string }> {
    const h = this.ops.invalidatePage;
    return this.ack('invalidate_page', req, pageOf(req.addr), h && ((cb) => h(req, cb)));
  }

  changePte(req: ReqParsed<'mnChangePte'>): Promise<{ inv: string }> {
    const h = this.ops.changePte;
    return this.ack('change_pte', req, pageOf(req.addr), h && ((cb) => h(req, cb)));
  }

  release(req: ReqParsed<'mnRelease'>): Promise<{ inv: string }> {
    const h = this.ops.release;
    return this.ack('release', req, ALL, (cb) => h(req, cb));
  }

  clearFlushYoung(req: ReqParsed<'mnClearFlushYoung'>): Promise<{ inv: string; young: boolean }> {
    const h = this.ops.clearFlushYoung;
    return this.callback('clear_flush_young', req, req, async (cb) => ({
      inv: req.inv,
      young: h ? await h(req, cb) : false,
    }));
  }

  testYoung(req: ReqParsed<'mnTestYoung'>): Promise<{ inv: string; young: boolean }> {
    const h = this.ops.testYoung;
    return this.callback('test_young', req, pageOf(req.addr), async (cb) => ({
      inv: req.inv,
      young: h ? await h(req, cb) : false,
    }));
  }

  /**
   * A load or store of this subscriber through translation t (the frame it names and the
   * frame generation it was made for): frameAccess (ENODEV once fenced; EFAULT: no such frame),
   * traced as `access` with what the frame held. stale: the frame was freed or reused since t
   * was made (the checker's stale-access evidence; the access still lands, as DMA would).
   */
  async access(
    a: { op: string; pid: number; addr: number },
    t: { pfn: number; gen: number },
    rw: Access,
    value?: number,
  ): Promise<{ value: number; pfn: number; gen: number; stale: boolean }> {
    const tStart = now();
    const f = await this.frameAccess(a, t.pfn, rw, value);
    if (!f) throw new MmlabError('EFAULT', `no frame ${t.pfn}`);
    const frameFree = f.state === 'free';
    this.deps.tracer.emit({
      kind: 'access',
      op: a.op,
      agent: this.deps.name,
      pid: a.pid,
      addr: a.addr,
      rw,
      value: f.value,
      pfn: t.pfn,
      gen: t.gen,
      frameGen: f.gen,
      frameFree,
      tStart,
      tEnd: now(),
    });
    return { value: f.value, pfn: t.pfn, gen: t.gen, stale: f.gen !== t.gen || frameFree };
  }

  /**
   * A load or store of this subscriber straight to frame pfn (a DMA, a vCPU access through an
   * sPTE), for op at (pid, addr): refused with ENODEV once mm fenced us (its lease expired),
   * after an access.refused event. null: no such frame.
   */
  async frameAccess(
    a: { op: string; pid: number; addr: number },
    pfn: number,
    rw: Access,
    value?: number,
  ): Promise<{ gen: number; state: string; value: number } | null> {
    const f = await this.deps.store.frameAccess(pfn, rw, value, this.deps.name);
    if (f !== 'FENCED') return f;
    this.deps.tracer.emit({
      kind: 'access.refused',
      op: a.op,
      agent: this.deps.name,
      pid: a.pid,
      addr: a.addr,
      reason: 'fenced: liveness lease expired',
    });
    throw new MmlabError('ENODEV', `${this.deps.name} is fenced off: its access is refused`);
  }

  private ack(
    callback: MnCallback,
    req: CallbackReq,
    span: Span,
    work: ((cb: CallbackCtx) => Promise<void>) | undefined,
  ): Promise<{ inv: string }> {
    return this.callback(callback, req, span, async (cb) => {
      if (work) await work(cb);
      return { inv: req.inv };
    });
  }

  /**
   * The envelope of every callback: mn.recv, the work, mn.done — one step (Tracer.step): with
   * telemetry on, the span of the callback carries the fields of its mn.recv and mn.done.
   */
  private callback<T>(
    callback: MnCallback,
    req: CallbackReq,
    span: Span,
    work: (cb: CallbackCtx) => Promise<T>,
  ): Promise<T> {
    const { deps } = this;
    const op = deps.ids.next(callback);
    const base: Base = { op, agent: deps.name, pid: req.pid, callback, inv: req.inv };
    return deps.tracer.step(
      `${deps.spanPrefix ?? 'mmu_notifier_'}${callback}`,
      { kind: 'mn.recv', ...base, start: span.start, end: span.end },
      async () => {
        const checked = this.checkPtl(req, span, base);
        try {
          // work() runs up to its first await now, in the tick of the mn.recv (around() calls
          // it at once). A resend of an inv whose work is done gets its result without redoing
          // it, and without its stall: the reply faults still act on its reply.
          return await this.faults.around(callback, req.inv, (stall) =>
            this.log.run(key(callback, req.inv), () => work({ op, stall })),
          );
        } finally {
          await checked;
        }
      },
      () => ({ kind: 'mn.done', ...base }),
    );
  }

  /** Does the sending op still hold a PT lock of the range? (It must not: we may sleep.) */
  private async checkPtl(req: CallbackReq, span: Span, base: Base): Promise<void> {
    try {
      const lock = await this.deps.store.ptlHeldBy(req.pid, req.owner, span.start, span.end);
      if (lock) this.deps.tracer.emit({ kind: 'mn.ptl_held', ...base, lock, owner: req.owner });
    } catch (e) {
      this.deps.log.warn(`${this.deps.name}: PT-lock check of ${req.inv} failed: ${String(e)}`);
    }
  }
}
