/**
 * The bring-your-own-device SDK: a secondary MMU as one class (Device) with its callbacks, and
 * everything else done for it by DeviceHost — what apps/hca and apps/kvm do by hand on top of
 * NotifierSubscriber:
 *
 *   the envelope     NotifierSubscriber: mn.recv / mn.done, the PT-lock check, once per
 *                    (callback, inv) however often mm resends, the lease, the fence, the
 *                    lab's callback faults (stall() is called before the device's handler)
 *   the counters     one NotifierSeq per attached pid (mmu_notifier_seq / _count): raised in
 *                    the tick of a start's mn.recv, lowered (seq bumped) after its end
 *   the cache        DeviceCache: the device's translations, every change traced (smap.set /
 *                    smap.clear), so the checker sees what the device maps
 *   the fault        faultIn(): gup through mm with the read_begin / read_retry recheck
 *                    (mmuNotifierRecheck, in the same tick as the install)
 *   the access       access(): cache lookup, fault on a miss, then the frame access with the
 *                    fence check (ENODEV), traced as `access`; in flight until it landed, and
 *                    every invalidation waits for the accesses in its range before its ack
 *   attach / detach  mmu_notifier_register / _unregister through mm, as the device itself
 *
 * Models: a driver on mm/mmu_notifier.c (v3.7) — KVM's mmu_notifier_seq/count discipline
 * (virt/kvm/kvm_main.c, arch/x86/kvm/mmu.c) for a device with a page-table cache; the fault
 * path is today's hmm_range_fault() with mmu_interval_read_begin()/read_retry().
 *
 * The race the counters close (the device's handler runs after the count is raised):
 *
 *   access (dev)                              invalidation (mm → dev)
 *   snap = seq 7; gup(a) → pfn 12
 *                                             recv range_start [a, b): count 1 (same tick)
 *   recheck(7): count 1 → wait                device zaps a, flushes; ack
 *                                             recv range_end: seq 8, count 0 → wake
 *   snap = 8; gup(a) again
 */
import {
  MmlabError,
  type GupPage,
  type MnCallback,
  PAGE_SIZE,
  type ReqParsed,
  TASK_SIZE,
  hex,
  vpnOf,
} from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { mmuNotifierRecheck } from './fault_recheck';
import { InflightAccesses } from './inflight';
import { NotifierSeq } from './notifier_seq';
import { type NotifierOps, NotifierSubscriber, type SubscriberDeps } from './subscriber';

/** One translation of the device: virtual page → frame, with the frame's gen at install. */
export interface DevEntry {
  pfn: number;
  gen: number;
  writable: boolean;
  /** accessed since the last clear_flush_young */
  young: boolean;
}

/**
 * The device's translation cache (its page table / TLB), per pid. Every install and removal is
 * traced (smap.set, smap.clear; agent = the device): the checker's teardown-before-free and
 * no-map-during-invalidate read them.
 */
export class DeviceCache {
  private readonly pids = new Map<number, Map<number, DevEntry>>();

  constructor(
    private readonly agent: string,
    private readonly emit: (e: Record<string, unknown> & { kind: string }) => void,
  ) {}

  get(pid: number, addr: number): DevEntry | undefined {
    return this.pids.get(pid)?.get(vpnOf(addr));
  }

  /** Entries of pid (tests, a device's own walk). */
  size(pid: number): number {
    return this.pids.get(pid)?.size ?? 0;
  }

  /** Install the page mm reported (smap.clear of the entry it replaces first). */
  set(pid: number, page: GupPage, op?: string): void {
    let m = this.pids.get(pid);
    if (!m) this.pids.set(pid, (m = new Map<number, DevEntry>()));
    const vpn = vpnOf(page.addr);
    const prev = m.get(vpn);
    if (prev && prev.pfn === page.pfn && prev.gen === page.gen && prev.writable === page.writable)
      return;
    if (prev) this.traceClear(pid, vpn, prev, op);
    m.set(vpn, { pfn: page.pfn, gen: page.gen, writable: page.writable, young: false });
    this.emit({ kind: 'smap.set', op, agent: this.agent, pid, ...page });
  }

  /** Drop the entries of pid in [start, end); returns how many. */
  zap(pid: number, start: number, end: number, op?: string): number {
    const m = this.pids.get(pid);
    if (!m) return 0;
    const first = Math.floor(start / PAGE_SIZE);
    const last = Math.ceil(end / PAGE_SIZE);
    const gone = [...m].filter(([v]) => v >= first && v < last).sort((a, b) => a[0] - b[0]);
    for (const [v, e] of gone) {
      m.delete(v);
      this.traceClear(pid, v, e, op);
    }
    return gone.length;
  }

  /** Test (and with clear, clear) the accessed bits of [start, end). */
  young(pid: number, start: number, end: number, clear: boolean): boolean {
    let any = false;
    for (const [v, e] of this.pids.get(pid) ?? [])
      if (v * PAGE_SIZE >= start && v * PAGE_SIZE < end && e.young) {
        any = true;
        if (clear) e.young = false;
      }
    return any;
  }

  private traceClear(pid: number, vpn: number, e: DevEntry, op?: string): void {
    const addr = vpn * PAGE_SIZE;
    this.emit({ kind: 'smap.clear', op, agent: this.agent, pid, addr, pfn: e.pfn, gen: e.gen });
  }
}

/** What a device's handler gets besides its request. */
export interface DeviceCallbackCtx {
  /** the op id of this callback: pass it to cache.zap, so the trace links the two */
  readonly op: string;
}

type DevHandler<K extends keyof NotifierOps, R = void> = (
  req: Parameters<NonNullable<NotifierOps[K]>>[0],
  cb: DeviceCallbackCtx,
) => Promise<R>;

/**
 * A device model: the mmu_notifier_ops of one secondary MMU with a translation cache. Write a
 * subclass, implement the callbacks with `this.cache` (and your device's own latency), and
 * hand an instance to runDevice(). The counters, the envelope, resends, the lease, the fence,
 * the fault path and the traces are the SDK's.
 *
 * The rule every callback must keep: return (ack) only when the device no longer uses a
 * translation of the range — its cache zapped AND its flush done. Returning earlier is the bug
 * the checker catches (teardown-before-free, no-stale-access).
 */
export abstract class Device {
  private bound?: DeviceCache;

  /** The device's translation cache (set when the device is hosted). */
  get cache(): DeviceCache {
    if (!this.bound) throw new Error('the device is not hosted yet (runDevice / DeviceHost)');
    return this.bound;
  }

  /** (DeviceHost) give the device its cache. */
  bind(cache: DeviceCache): void {
    this.bound = cache;
  }

  abstract invalidateRangeStart: DevHandler<'invalidateRangeStart'>;
  abstract invalidateRangeEnd: DevHandler<'invalidateRangeEnd'>;
  abstract invalidatePage: DevHandler<'invalidatePage'>;
  abstract release: DevHandler<'release'>;
  /** optional (v3.7 sends it under the PT lock: do not sleep) */
  changePte?: DevHandler<'changePte'>;
  clearFlushYoung?: DevHandler<'clearFlushYoung', boolean>;
  testYoung?: DevHandler<'testYoung', boolean>;
}

/** What DeviceHost needs: the subscriber core's deps and mm over NATS. */
export interface DeviceDeps extends SubscriberDeps {
  readonly rpc: Pick<RpcClient, 'call'>;
  /** how long one fault may keep colliding with invalidations (EAGAIN after) */
  readonly faultTimeoutMs: number;
}

/** Per attached pid: the counters of the fault recheck, and whether release came. */
interface DevMm {
  readonly seq: NotifierSeq;
  attached: boolean;
  released: boolean;
}

/** Faults one access may take before it gives up (EAGAIN). */
export const MAX_FAULTS_PER_ACCESS = 8;
/** The longest one wait for the end of an invalidation (then the fault looks again). */
const COMPLETION_WAIT_MS = 1000;

/**
 * One hosted device. State, and what holds of it:
 *   mms       pid → DevMm. attached ⇔ mm registered this device on pid (attach answered, no
 *             detach since); released is set by release and never cleared (a new attach
 *             replaces the entry). seq's count is raised in the tick a start, invalidate_page or
 *             release arrives (before the device's handler), and lowered after the end or the
 *             page's handler; a translation is installed only in the tick of a recheck that
 *             said install (faultIn).
 *   inflight  every access is registered in the tick of its cache lookup; every invalidation
 *             waits for those of its range before its ack.
 *   cache     the device's translations (DeviceCache): changed by the fault path and by the
 *             device's handlers only, every change traced.
 */
export class DeviceHost {
  readonly notifier: NotifierSubscriber;
  readonly cache: DeviceCache;
  private readonly mms = new Map<number, DevMm>();
  private readonly inflight = new InflightAccesses<{ pid: number; vpn: number }>();

  constructor(
    private readonly deps: DeviceDeps,
    readonly device: Device,
  ) {
    this.cache = new DeviceCache(deps.name, (e) => deps.tracer.emit(e as never));
    device.bind(this.cache);
    this.notifier = new NotifierSubscriber(deps, this.ops());
  }

  get name(): string {
    return this.deps.name;
  }

  private mmOf(pid: number): DevMm {
    let mm = this.mms.get(pid);
    if (!mm) this.mms.set(pid, (mm = { seq: new NotifierSeq(), attached: false, released: false }));
    return mm;
  }

  /** The device's handlers inside the bookkeeping (counters first, stall, handler, drain). */
  private ops(): NotifierOps {
    const d = this.device;
    const ops: NotifierOps = {
      invalidateRangeStart: async (req, { op, stall }) => {
        this.mmOf(req.pid).seq.startAccount();
        await stall();
        await d.invalidateRangeStart(req, { op });
        await this.inflight.drain(req.pid, req.start, req.end);
      },
      invalidateRangeEnd: async (req, { op, stall }) => {
        await stall();
        try {
          await d.invalidateRangeEnd(req, { op });
        } finally {
          this.mmOf(req.pid).seq.endAccount();
        }
      },
      invalidatePage: async (req, { op, stall }) => {
        const mm = this.mmOf(req.pid);
        mm.seq.startAccount();
        try {
          await stall();
          await d.invalidatePage(req, { op });
          await this.inflight.drain(req.pid, req.addr, req.addr + PAGE_SIZE);
        } finally {
          mm.seq.endAccount();
        }
      },
      release: async (req, { op, stall }) => {
        const mm = this.mmOf(req.pid);
        mm.released = true;
        mm.seq.startAccount();
        mm.seq.completeAll();
        await stall();
        await d.release(req, { op });
        await this.inflight.drain(req.pid, 0, TASK_SIZE);
      },
    };
    const changePte = d.changePte;
    if (changePte)
      ops.changePte = async (req, { op }) => {
        this.mmOf(req.pid).seq.bump();
        await changePte(req, { op });
      };
    const cfy = d.clearFlushYoung;
    if (cfy) ops.clearFlushYoung = (req, { op }) => cfy(req, { op });
    const ty = d.testYoung;
    if (ty) ops.testYoung = (req, { op }) => ty(req, { op });
    return ops;
  }

  /** Power on: the liveness lease (and a previous incarnation's fence lifted). */
  start(): Promise<void> {
    return this.notifier.start();
  }

  /** mmu_notifier_register on pid (as this device, through mm). */
  async attach(pid: number): Promise<{ attached: boolean }> {
    const mm = this.mms.get(pid); // a refused registration leaves nothing behind
    if (mm?.attached && !mm.released) return { attached: false };
    await this.deps.rpc.call('notifierRegister', {
      pid,
      subscriber: this.name,
      ops: this.notifier.callbacks,
    });
    this.mms.set(pid, { seq: new NotifierSeq(), attached: true, released: false });
    return { attached: true };
  }

  /** Drop pid's translations (after the accesses through them), then unregister. */
  async detach(pid: number): Promise<{ detached: boolean }> {
    const mm = this.mms.get(pid);
    if (!mm?.attached) return { detached: false };
    mm.attached = false;
    this.cache.zap(pid, 0, TASK_SIZE, this.deps.ids.next('detach'));
    await this.inflight.drain(pid, 0, TASK_SIZE);
    await this.deps.rpc.call('notifierUnregister', { pid, subscriber: this.name });
    this.mms.delete(pid);
    return { detached: true };
  }

  /** Every attached pid detached (a clean shutdown); failures logged. */
  async detachAll(): Promise<void> {
    for (const pid of [...this.mms.keys()])
      await this.detach(pid).catch((e: unknown) =>
        this.deps.log.warn(`${this.name}: detach from pid ${pid} failed: ${String(e)}`),
      );
  }

  /**
   * The fault helper: fault addr of pid in through mm and install it, retrying while an
   * invalidation collides. Models: hmm_range_fault() between mmu_interval_read_begin() and
   * mmu_interval_read_retry() (today's name for v3.7 KVM's mmu_notifier_seq / _retry).
   */
  async faultIn(pid: number, addr: number, write: boolean, op?: string): Promise<void> {
    const mm = this.mmOf(pid);
    const deadline = Date.now() + this.deps.faultTimeoutMs;
    for (let tries = 0; ; tries++) {
      if (mm.released) throw new MmlabError('EFAULT', `pid ${pid} was released`);
      const snap = mm.seq.snapshot(); // read_begin
      const r = await this.deps.rpc.call('gup', {
        pid,
        addr,
        pages: 1,
        write,
        pin: false,
        agent: this.name,
      });
      if (!mm.attached || mm.released)
        throw new MmlabError('EFAULT', `pid ${pid} was released or detached during the fault`);
      const rc = mmuNotifierRecheck(mm.seq, snap.seq); // read_retry, same tick as the install
      if (rc === 'install') {
        for (const p of r.pages) this.cache.set(pid, p, op);
        return;
      }
      const left = deadline - Date.now();
      if (left <= 0)
        throw new MmlabError(
          'EAGAIN',
          `${this.name}: fault at ${hex(addr)} of pid ${pid} still colliding with invalidations after ${tries + 1} tries`,
        );
      if (rc === 'wait') await mm.seq.waitForCompletion(Math.min(left, COMPLETION_WAIT_MS));
    }
  }

  /** A device load or store through the cache (devAccess). */
  async access(req: ReqParsed<'devAccess'>): Promise<{
    value: number;
    pfn: number;
    gen: number;
    faults: number;
    hit: boolean;
    stale: boolean;
  }> {
    const { pid, addr } = req;
    const mm = this.mms.get(pid);
    if (!mm?.attached) throw new MmlabError('EINVAL', `${this.name} is not attached to pid ${pid}`);
    if (addr % PAGE_SIZE !== 0)
      throw new MmlabError('EINVAL', `${hex(addr)} is not page aligned (a device accesses pages)`);
    if (req.op === 'write' && req.value === undefined)
      throw new MmlabError('EINVAL', 'a write needs a value');
    const op = this.deps.ids.next(req.op === 'read' ? 'dev_read' : 'dev_write');
    for (let faults = 0; ; faults++) {
      if (mm.released) throw new MmlabError('EFAULT', `pid ${pid} was released`);
      const e = this.cache.get(pid, addr);
      if (e && (req.op === 'read' || e.writable)) {
        const finish = this.inflight.begin({ pid, vpn: vpnOf(addr) }); // same tick as the lookup
        try {
          e.young = true;
          const r = await this.notifier.access({ op, pid, addr }, e, req.op, req.value);
          return { ...r, faults, hit: faults === 0 };
        } finally {
          finish();
        }
      }
      if (faults >= MAX_FAULTS_PER_ACCESS)
        throw new MmlabError('EAGAIN', `${faults} faults at ${hex(addr)} of pid ${pid}`);
      await this.faultIn(pid, addr, req.op === 'write', op);
    }
  }

  /** The callbacks the device implements (its mmu_notifier_ops). */
  get callbacks(): MnCallback[] {
    return this.notifier.callbacks;
  }
}
