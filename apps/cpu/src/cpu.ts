/**
 * One CPU: a TLB, a hardware page walker that reads the page tables in Redis, and loads and
 * stores that go straight to frames (as hardware does: mm is not on the access path). A TLB
 * miss walks; a not-present or read-only PTE traps to mm (handle_mm_fault over NATS) and the
 * access retries. mm shoots entries down with flush_tlb requests while it holds a PT lock.
 *
 * State (one CPU process):
 *   tlb        (pid, vpn) → {pfn, gen, writable}: may be stale only until the shootdown that
 *              follows any PTE change reaches this CPU; a shootdown removes entries before acking.
 *   flushGen   bumped by every shootdown; a walk or fault reply is only filled into the TLB if
 *              flushGen is unchanged since before the walk started (see the race below).
 *   inflight   accesses currently using a TLB entry; a shootdown acks only after those in its
 *              range are done (an IPI is taken at an instruction boundary, never mid-store).
 *   lease      this CPU's liveness lease ({sub}:live:cpu<N>, LivenessLease): while it lives, mm
 *              waits for this CPU's shootdown acks however long they take; once it expired, mm
 *              may fence this CPU and take it out of mm_cpumask without its ack. So: no TLB
 *              entry is used while the lease may have lapsed or while memory says we are
 *              fenced, until the whole TLB was flushed and the lease taken again (lease.ensure()).
 */
import { type Access, MmlabError, PAGE_SIZE, TASK_SIZE } from '@mmlab/protocol';
import { LivenessLease, type Pte, type Store } from '@mmlab/model';
import { type RpcClient, type Span, type Tracer, inSpan, now } from '@mmlab/runtime';

interface TlbEntry extends Pte {
  pid: number;
  vpn: number;
}

interface Inflight {
  pid: number;
  vpn: number;
  done: Promise<void>;
}

export interface AccessResult {
  value: number;
  pfn: number;
  gen: number;
  faults: number;
  tlbHit: boolean;
  stale: boolean;
}

const MAX_FAULTS = 32;

export class Cpu {
  private readonly tlb = new Map<string, TlbEntry>();
  private flushGen = 0;
  private readonly inflight = new Set<Inflight>();
  readonly agent: string;
  private readonly lease: LivenessLease;

  constructor(
    readonly id: number,
    private readonly store: Store,
    private readonly rpc: RpcClient,
    private readonly tracer: Tracer,
    leaseTtlMs = 2000,
    log: { warn(msg: string): void } = { warn: (m) => console.warn(m) },
  ) {
    this.agent = `cpu${id}`;
    this.lease = new LivenessLease(store, this.agent, leaseTtlMs, log, {
      onLapsed: () => void this.flushTlbAll('lease-lost'),
    });
  }

  /** Bring the CPU online: take the liveness lease, lift a fence a previous incarnation earned. */
  async start(): Promise<void> {
    await this.lease.start();
  }

  /** Go offline cleanly: drop the TLB and the lease, so mm need not wait out its TTL. */
  async stop(): Promise<void> {
    this.lease.stop();
    this.flushTlbAll('offline');
    await this.store.livenessDrop(this.agent);
  }

  get tlbSize(): number {
    return this.tlb.size;
  }

  /**
   * A user-mode load or store at addr of pid. With telemetry on, a `cpu.access` span: the
   * faults it takes (requests to mm) are its children.
   */
  access(pid: number, addr: number, op: Access, value = 0): Promise<AccessResult> {
    return inSpan(
      'cpu.access',
      () => ({
        attributes: {
          'mmlab.agent': this.agent,
          'mmlab.pid': pid,
          'mmlab.addr': `0x${addr.toString(16)}`,
          'mmlab.access': op,
        },
      }),
      (span) => this.doAccess(pid, addr, op, value, span),
    );
  }

  private async doAccess(
    pid: number,
    addr: number,
    op: Access,
    value: number,
    span: Span | undefined,
  ): Promise<AccessResult> {
    const vpn = Math.floor(addr / PAGE_SIZE);
    const key = `${pid}:${vpn}`;
    let faults = 0;
    let fenced = 0;
    let hitFirst = true;
    for (;;) {
      // Never use the TLB while mm may have given up on us (lease lapsed): recover first.
      await this.lease.ensure();
      const e = this.tlb.get(key);
      if (e && (op === 'read' || e.writable)) {
        span?.setAttributes({ 'mmlab.faults': faults, 'mmlab.tlb_hit': hitFirst });
        const r = await this.touch(e, addr, op, value, faults, hitFirst);
        if (r !== 'FENCED') return r;
        // mm took this CPU offline (its lease expired while we were away) and memory refused
        // the access: flush everything, take the lease again, then retry from a TLB miss.
        if (++fenced > 3)
          throw new MmlabError('EAGAIN', `${this.agent}: fenced off at 0x${addr.toString(16)}`);
        await this.lease.ensure(true);
        hitFirst = false;
        continue;
      }
      hitFirst = false;
      // TLB miss (or a write through a read-only entry): walk.
      //
      //   CPU (this)                               mm
      //   gen = flushGen; walk → PTE P
      //                                            clear PTE P, flush_tlb → CPU: flushGen++
      //   walk reply arrives
      //   fill only if flushGen == gen   ← else P may already be gone: walk again
      const gen = this.flushGen;
      const pte = await this.store.walk(pid, vpn, this.agent);
      if (pte && !pte.protnone && (op === 'read' || pte.writable)) {
        if (gen === this.flushGen) this.fill(pid, vpn, pte);
        continue;
      }
      if (++faults > MAX_FAULTS)
        throw new MmlabError('EAGAIN', `${this.agent}: ${faults} faults at 0x${addr.toString(16)}`);
      // Trap to mm. The reply carries the PTE it installed: fill from it, under the same rule.
      const fgen = this.flushGen;
      const r = await this.rpc.call('fault', { pid, addr, access: op, agent: this.agent });
      if (fgen === this.flushGen && (op === 'read' || r.writable)) this.fill(pid, vpn, r);
    }
  }

  private fill(pid: number, vpn: number, pte: Pte): void {
    this.tlb.set(`${pid}:${vpn}`, { pid, vpn, pfn: pte.pfn, gen: pte.gen, writable: pte.writable });
    this.tracer.emit({
      kind: 'tlb.fill',
      agent: this.agent,
      pid,
      addr: vpn * PAGE_SIZE,
      pfn: pte.pfn,
      gen: pte.gen,
      writable: pte.writable,
    });
  }

  /** The memory access itself, through entry e; reports a use-after-free and still lands. */
  private async touch(
    e: TlbEntry,
    addr: number,
    op: Access,
    value: number,
    faults: number,
    tlbHit: boolean,
  ): Promise<AccessResult | 'FENCED'> {
    let finish!: () => void;
    const me: Inflight = { pid: e.pid, vpn: e.vpn, done: new Promise<void>((r) => (finish = r)) };
    this.inflight.add(me);
    const tStart = now();
    try {
      const f = await this.store.frameAccess(e.pfn, op, value, this.agent);
      if (f === 'FENCED') return 'FENCED';
      if (!f) throw new MmlabError('EFAULT', `${this.agent}: no frame ${e.pfn}`);
      const tEnd = now();
      const stale = f.gen !== e.gen || f.state === 'free';
      this.tracer.emit({
        kind: 'access',
        agent: this.agent,
        pid: e.pid,
        addr,
        rw: op,
        value: f.value,
        pfn: e.pfn,
        gen: e.gen,
        frameGen: f.gen,
        frameFree: f.state === 'free',
        tStart,
        tEnd,
      });
      return { value: f.value, pfn: e.pfn, gen: e.gen, faults, tlbHit, stale };
    } finally {
      this.inflight.delete(me);
      finish();
    }
  }

  /**
   * flush_tlb_all() on this CPU (local_flush_tlb): drop every entry, of every pid, and make any
   * walk in flight refill nothing. Traced as one tlb.flush of the whole user range per pid.
   */
  flushTlbAll(reason: string): number {
    this.flushGen++;
    const perPid = new Map<number, number>();
    for (const v of this.tlb.values()) perPid.set(v.pid, (perPid.get(v.pid) ?? 0) + 1);
    this.tlb.clear();
    for (const [pid, entries] of perPid)
      this.tracer.emit({
        kind: 'tlb.flush',
        op: `${this.agent}:${reason}`,
        agent: this.agent,
        pid,
        start: 0,
        end: TASK_SIZE,
        entries,
      });
    return [...perPid.values()].reduce((a, b) => a + b, 0);
  }

  /** flush_tlb_func(): drop entries of pid in [start, end), wait for accesses through them. */
  async flushTlb(pid: number, start: number, end: number, op?: string): Promise<number> {
    this.flushGen++;
    const s = Math.floor(start / PAGE_SIZE);
    const e = Math.ceil(end / PAGE_SIZE);
    let n = 0;
    for (const [k, v] of this.tlb)
      if (v.pid === pid && v.vpn >= s && v.vpn < e) {
        this.tlb.delete(k);
        n++;
      }
    const busy = [...this.inflight].filter((i) => i.pid === pid && i.vpn >= s && i.vpn < e);
    await Promise.all(busy.map((i) => i.done));
    this.tracer.emit({ kind: 'tlb.flush', op, agent: this.agent, pid, start, end, entries: n });
    return n;
  }
}
