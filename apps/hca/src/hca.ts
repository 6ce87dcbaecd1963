/**
 * Models: struct mlx5_ib_dev (3.19) — one RDMA HCA with on-demand paging: its memory regions (the
 * mkey table), its per-mm notifier state, the verbs a local process calls (ibv_reg_mr,
 * ibv_dereg_mr, ibv_advise_mr) and the RDMA READ/WRITE operations remote peers execute on its
 * MRs, which go through the MTT straight to the frames in Redis, as DMA does (mm is not on the
 * access path; a miss raises a network page fault, mlx5_ib_mr_wqe_pfault_handler).
 *
 * State (one HCA process):
 *   mrs      MR number → MemoryRegion; numbers are never reused by one device incarnation
 *   mms      pid → PerMm (registration, ODP MRs, invalidation state); created on first use
 *   inflight (ctx) RDMA operations using an MTT entry, drained by invalidations and dereg
 *   notifier the subscriber core (libs/subscriber) with this device's handlers (UmemNotifier):
 *            the callback envelope, the liveness lease, the fence, the callback faults
 */
import {
  type Access,
  MmlabError,
  PAGE_SIZE,
  type ReqParsed,
  TASK_SIZE,
  hex,
  isPageAligned,
  vpnOf,
} from '@mmlab/protocol';
import { type CallbackFaults } from '@mmlab/runtime';
import { NotifierSubscriber, subscriberDepsOf } from '@mmlab/subscriber';
import type { HcaContext, HcaEnv } from './context';
import { PerMm } from './ib_ucontext_per_mm';
import { MemoryRegion } from './mr';
import type { MttEntry } from './mtt';
import { pagefaultSingleDataSegment } from './pagefault';
import { mlx5IbAdviseMrPrefetch } from './prefetch';
import { UmemNotifier } from './umem_notifier';

/** Network page faults one RDMA operation may take before it gives up (EAGAIN). */
export const MAX_NPF_PER_ACCESS = 16;

/** What one page of a pinned registration may take to fault in, on a loaded machine. */
export const GUP_MS_PER_PAGE = 25;
/**
 * The deadline of a pinned registration's gup: one fault's deadline and one RPC's, plus
 * GUP_MS_PER_PAGE for every page (16,384 pages: about 7 minutes).
 */
export const gupDeadlineMs = (
  env: Pick<HcaEnv, 'MMLAB_FAULT_DEADLINE_MS' | 'MMLAB_RPC_TIMEOUT_MS'>,
  pages: number,
): number => env.MMLAB_FAULT_DEADLINE_MS + env.MMLAB_RPC_TIMEOUT_MS + pages * GUP_MS_PER_PAGE;

export interface DmaResult {
  value: number;
  pfn: number;
  gen: number;
  npf: number;
  stale: boolean;
}

export class Hca {
  readonly notifier: NotifierSubscriber;
  private readonly mrs = new Map<number, MemoryRegion>();
  private readonly mms = new Map<number, PerMm>();
  private nextMr = 1;

  constructor(
    readonly ctx: HcaContext,
    /** crash (a callback fault): default SIGKILL to this process */
    kill?: () => void,
  ) {
    this.notifier = new NotifierSubscriber(
      subscriberDepsOf(ctx, 'ib_umem_notifier_', kill),
      new UmemNotifier(ctx, (pid) => this.mmOf(pid)),
    );
  }

  get name(): string {
    return this.ctx.name;
  }

  /** the callback-level faults the lab's nemesis set (subChaos); [] when healthy */
  get faults(): CallbackFaults {
    return this.notifier.faults;
  }

  /** Power on: take the liveness lease and lift any fence of a previous incarnation. */
  start(): Promise<void> {
    return this.notifier.start();
  }

  stop(): void {
    this.notifier.stop();
  }

  /**
   * A clean shutdown of the device, once its clients' requests are drained (its callbacks still
   * answered): every MR deregistered — the ODP ones' notifiers unregistered (mm sends release,
   * answered here), the pinned ones' pages unpinned — then every invalidation it acked a start
   * of waited for until its end; all of it within ms, and the liveness lease dropped last by drop().
   * Models: ib_uverbs_close() → ib_uverbs_cleanup_ucontext() (3.19): the device file closed,
   * every MR of the context goes (mlx5_ib_dereg_mr).
   */
  async teardown(ms: number): Promise<{ mrs: number; failed: number; quiet: boolean }> {
    const ids = [...this.mrs.keys()].sort((a, b) => a - b);
    const t = await this.notifier.teardown(
      ids,
      (id) => this.deregMr(id),
      ms,
      (id, e) =>
        this.ctx.log.warn(`${this.name}: MR ${id} not deregistered at shutdown: ${String(e)}`),
    );
    return { mrs: ids.length, ...t };
  }

  /** The shutdown's last step: the liveness lease dropped (NotifierSubscriber.drop). */
  drop(): Promise<void> {
    return this.notifier.drop();
  }

  /** subChaos: the callback-level faults (a heal never lifts a fence: only a restart does). */
  subChaos(req: ReqParsed<'subChaos'>): { active: ReqParsed<'subChaos'>['faults'] } {
    return this.notifier.subChaos(req);
  }

  mmOf(pid: number): PerMm {
    let mm = this.mms.get(pid);
    if (!mm) this.mms.set(pid, (mm = new PerMm(pid)));
    return mm;
  }

  /** An MR by number (tests and diagnostics). */
  mr(id: number): MemoryRegion | undefined {
    return this.mrs.get(id);
  }

  /** ibv_reg_mr(): ib_umem_odp_get() for ODP, ib_umem_get() (pin everything now) otherwise. */
  async regMr(req: ReqParsed<'hcaRegMr'>): Promise<{ mr: number }> {
    if (!isPageAligned(req.addr))
      throw new MmlabError('EINVAL', `MR address ${hex(req.addr)} is not page aligned`);
    if (req.addr + req.pages * PAGE_SIZE > TASK_SIZE)
      throw new MmlabError(
        'EINVAL',
        `MR [${hex(req.addr)}, +${req.pages} pages) ends past TASK_SIZE`,
      );
    const access = new Set<Access>(req.access);
    return req.odp
      ? this.ibUmemOdpGet(req.pid, req.addr, req.pages, access)
      : this.ibUmemGet(req.pid, req.addr, req.pages, access);
  }

  /**
   * ib_umem_odp_get(): nothing pinned, nothing mapped; the first ODP MR of an mm registers the
   * device as its notifier subscriber (before the MR exists, so no fault can precede it).
   * Models: ib_umem_odp_get() (drivers/infiniband/core/umem_odp.c, 3.19).
   */
  private async ibUmemOdpGet(
    pid: number,
    addr: number,
    pages: number,
    access: Set<Access>,
  ): Promise<{ mr: number }> {
    const mm = this.mmOf(pid);
    return mm.regLock.runExclusive(async () => {
      if (mm.registered && mm.released)
        throw new MmlabError('ESRCH', `pid ${pid} has exited (release received)`);
      if (!mm.registered) {
        // ib_umem_notifiers (drivers/infiniband/core/umem_odp.c, 3.19): no change_pte, no young.
        await this.ctx.rpc.call('notifierRegister', {
          pid,
          subscriber: this.name,
          ops: ['release', 'invalidate_page', 'invalidate_range_start', 'invalidate_range_end'],
        });
        mm.registered = true;
      }
      const mr = new MemoryRegion(this.nextMr++, pid, addr, pages, true, access);
      mm.addUmem(mr);
      this.mrs.set(mr.id, mr);
      return { mr: mr.id };
    });
  }

  /**
   * ib_umem_get(): pin the whole range now and program the MTT at once, registering no
   * notifier: the pre-ODP way. mm checks the pages against the process's RLIMIT_MEMLOCK
   * (pinned_vm) before it touches one (ENOMEM), and faults them for write ALWAYS (write=1,
   * force=!writable): a pinned registration breaks COW even for a read-only MR.
   * Models: ib_umem_get() (drivers/infiniband/core/umem.c, 3.19).
   */
  private async ibUmemGet(
    pid: number,
    addr: number,
    pages: number,
    access: Set<Access>,
  ): Promise<{ mr: number }> {
    const op = this.ctx.ids.next('reg_mr');
    // ib_umem_get() waits for get_user_pages however long the range takes; the RPC's deadline
    // grows with the range, so a big registration on a loaded machine is not given up while
    // mm is still faulting it in (it would go on pinning pages nobody unpins).
    const r = await this.ctx.rpc.call(
      'gup',
      { pid, addr, pages, write: true, force: !access.has('write'), pin: true, agent: this.name },
      { timeoutMs: gupDeadlineMs(this.ctx.env, pages) },
    );
    const mr = new MemoryRegion(this.nextMr++, pid, addr, pages, false, access);
    mr.pinned = r.pages;
    for (const p of r.pages) mr.install(this.ctx, p, op);
    this.mrs.set(mr.id, mr);
    return { mr: mr.id };
  }

  /**
   * ibv_dereg_mr(): the MR stops answering, its MTT is cleared under umem_mutex, the RDMA
   * operations through it drain, and only then are its pins dropped (pinned) or, for the last
   * ODP MR of the mm, the notifier unregistered. An unknown MR: {dereg: false}.
   * Models: mlx5_ib_dereg_mr() → ib_umem_release() / ib_umem_odp_release() (3.19).
   */
  async deregMr(id: number): Promise<{ dereg: boolean }> {
    const mr = this.mrs.get(id);
    if (!mr) return { dereg: false };
    this.mrs.delete(id);
    const op = this.ctx.ids.next('dereg_mr');
    const unlock = await mr.umemMutex.acquire();
    try {
      mr.dead = true;
      mr.zap(this.ctx, mr.addr, mr.end, op);
    } finally {
      unlock();
    }
    await this.ctx.inflight.drainWhere((o) => o.mr === id);
    if (mr.odp) {
      const mm = this.mmOf(mr.pid);
      await mm.regLock.runExclusive(async () => {
        mm.removeUmem(mr);
        if (mm.odpMrs.size > 0 || !mm.registered) return;
        mm.registered = false;
        try {
          // mm sends release first (the mm is live): it finds nothing of ours left to zap.
          await this.ctx.rpc.call('notifierUnregister', { pid: mr.pid, subscriber: this.name });
        } catch (e) {
          // Still registered at worst: later callbacks for pid find no MR and are acked.
          this.ctx.log.warn(`${this.name}: unregister from pid ${mr.pid} failed: ${String(e)}`);
        }
      });
    } else if (mr.pinned.length > 0) {
      await this.ctx.rpc.call('unpin', {
        pid: mr.pid,
        pages: mr.pinned.map((p) => ({ pfn: p.pfn, gen: p.gen })),
        agent: this.name,
      });
    }
    return { dereg: true };
  }

  /**
   * An RDMA READ or WRITE on one page of an MR: MTT lookup; a miss (or a write through a
   * read-only entry) raises a network page fault and the lookup is retried; then the DMA.
   * Models: mlx5_ib_mr_wqe_pfault_handler() → pagefault_single_data_segment() (odp.c, 3.19).
   */
  async rdma(mrId: number, addr: number, op: Access, value?: number): Promise<DmaResult> {
    const opId = this.ctx.ids.next(op === 'read' ? 'rdma_read' : 'rdma_write');
    for (let npf = 0; ; npf++) {
      const mr = this.mrs.get(mrId);
      if (!mr) throw new MmlabError('EINVAL', `${this.name} has no MR ${mrId}`);
      if (!isPageAligned(addr) || !mr.contains(addr))
        throw new MmlabError(
          'EINVAL',
          `${hex(addr)} is not a page of MR ${mrId} [${hex(mr.addr)}, ${hex(mr.end)})`,
        );
      if (!mr.access.has(op))
        throw new MmlabError('EPERM', `MR ${mrId} does not allow remote ${op}s`);
      if (mr.odp && mr.dying)
        throw new MmlabError('EFAULT', `pid ${mr.pid} of MR ${mrId} was released`);
      const vpn = vpnOf(addr);
      const e = mr.mtt.get(vpn);
      if (e && (op === 'read' || e.writable))
        return this.dma(mr, vpn, e, addr, op, value, npf, opId);
      if (!mr.odp)
        throw new MmlabError('EFAULT', `pinned MR ${mrId} has no translation for ${hex(addr)}`);
      if (npf >= MAX_NPF_PER_ACCESS)
        throw new MmlabError('EAGAIN', `${npf} page faults at ${hex(addr)} of MR ${mrId}`);
      // Every network fault of a writable MR asks for write access, reads included (3.19
      // pagefault_single_data_segment: access_mask |= ODP_WRITE_ALLOWED_BIT when the umem is
      // writable; the read-only downgrade is for prefetch only, v5.0): a read breaks COW like a
      // write, and fails (EFAULT) on a page the mapping makes read-only. A read-only MR faults
      // for read.
      await pagefaultSingleDataSegment(this.ctx, mr, addr, 1, mr.writable, opId);
    }
  }

  /**
   * The DMA through entry e: registered in flight in the tick of the lookup (invalidations
   * wait for it), straight to the frame; a stale translation is reported and still lands; a
   * fenced device is refused (ENODEV).
   */
  private async dma(
    mr: MemoryRegion,
    vpn: number,
    e: MttEntry,
    addr: number,
    op: Access,
    value: number | undefined,
    npf: number,
    opId: string,
  ): Promise<DmaResult> {
    const finish = this.ctx.inflight.begin({ pid: mr.pid, vpn, mr: mr.id, odp: mr.odp });
    try {
      // A fenced device's DMA is refused (ENODEV).
      const r = await this.notifier.access({ op: opId, pid: mr.pid, addr }, e, op, value);
      return { ...r, npf };
    } finally {
      finish();
    }
  }

  /**
   * ibv_advise_mr(PREFETCH[_WRITE], FLUSH) over [addr, addr + pages) of an MR.
   * Models: mlx5_ib_advise_mr() (v5.0: later than 3.19, the lab's one addition to its ODP).
   */
  async prefetch(req: ReqParsed<'hcaPrefetch'>): Promise<{ mapped: number }> {
    const mr = this.mrs.get(req.mr);
    if (!mr) throw new MmlabError('EINVAL', `${this.name} has no MR ${req.mr}`);
    if (!isPageAligned(req.addr) || !mr.contains(req.addr, req.pages))
      throw new MmlabError(
        'EINVAL',
        `[${hex(req.addr)}, +${req.pages} pages) is not inside MR ${req.mr} [${hex(mr.addr)}, ${hex(mr.end)})`,
      );
    if (req.write && !mr.writable)
      throw new MmlabError('EPERM', `MR ${req.mr} does not allow writes`);
    if (mr.odp && mr.dying)
      throw new MmlabError('EFAULT', `pid ${mr.pid} of MR ${req.mr} was released`);
    const op = this.ctx.ids.next('prefetch');
    return {
      mapped: await mlx5IbAdviseMrPrefetch(this.ctx, mr, req.addr, req.pages, req.write, op),
    };
  }
}
