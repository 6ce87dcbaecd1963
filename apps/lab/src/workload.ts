/**
 * Workloads to run under the nemesis: CPU traffic (`workload`, will-it-scale's page_fault
 * loops on a private anonymous range), RDMA traffic through one memory region
 * (`hca.workload`) and guest traffic in a VM (`kvm.workload`), each checking every read
 * against what it knows was written.
 *
 * What a read may return (Jepsen's register model, per page): the workload keeps the set of
 * values the page can hold. A store acknowledged → {v}; a store that failed indefinitely
 * (ETIMEDOUT, ESTALE: it may still land) → the set plus v; a definite failure changes nothing;
 * an acknowledged madvise(MADV_DONTNEED) → {0} (a private anonymous page refaults as zeroes);
 * a load → must be in the set, which then becomes {that value}. Before the workload's first
 * access a page may hold anything (`unknown`).
 *
 *   cpu1                    mm                      nemesis
 *   store 7 ─────────────→  (NATS restarting)       restart nats
 *   ← ETIMEDOUT (maybe 7)   store lands or not
 *   load → 7 or the old value: both allowed; anything else is a lost or invented write
 *
 * Pages are split between the CPUs (each its own slice) so that only one agent writes a page:
 * the model stays a register per page, without concurrent writers to linearize.
 *
 * Failures: a definite one whose code is transient (EAGAIN: contention, ENOHANDLER: the service
 * is restarting) or an indefinite one is expected under faults and counted; any other code
 * (SIGSEGV, EFAULT on a mapping that exists...) is an error of the lab and fails the step, as
 * does any impossible read.
 */
import { MmlabError, PAGE_SIZE } from '@mmlab/protocol';
import { type RpcClient, now } from '@mmlab/runtime';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { percentile } from './metrics';

/** Codes a workload tolerates under faults besides indefinite ones; extra per workload kind. */
const TRANSIENT = new Set(['EAGAIN', 'ENOHANDLER']);

export interface WorkloadResult {
  name: string;
  kind: 'cpu' | 'hca' | 'kvm';
  /** accesses attempted (zaps not included) */
  ops: number;
  reads: number;
  writes: number;
  /** madvise(MADV_DONTNEED) of a slice (cpu) */
  zaps: number;
  /** page faults taken: cpuAccess `faults` (cpu), network page faults (hca), guest faults (kvm) */
  faults: number;
  failed: { definite: number; indefinite: number; byCode: Record<string, number> };
  /** failures with a code a workload does not tolerate (they fail the step) */
  unexpected: number;
  /** reads that returned a value the page could not hold (the first 20 are listed) */
  impossibleReads: number;
  impossible: Array<{ agent: string; page: number; got: number; allowed: number[] }>;
  /** epoch ms */
  startedAt: number;
  /** until the last operation completed */
  durationMs: number;
  /**
   * The measuring window: durationMs when the workload ran for a time (operations still in
   * flight at its end are not counted in it), else the whole run.
   */
  window: { ms: number; ops: number; faults: number };
  opsPerSec: number;
  faultsPerSec: number;
  latencyMs: { p50: number | null; p99: number | null; max: number | null };
}

export interface CpuWorkload {
  name: string;
  cpus: number[];
  pid: number;
  addr: number;
  pages: number;
  ops?: number;
  durationMs?: number;
  writeRatio: number;
  pattern: 'random' | 'sequential';
  zapEvery?: number;
  seed: number;
}

export interface HcaWorkload {
  name: string;
  hca: string;
  mr: number;
  addr: number;
  pages: number;
  ops?: number;
  durationMs?: number;
  writeRatio: number;
  seed: number;
}

export interface KvmWorkload {
  name: string;
  /** the KVM instance holding the VM */
  kvm: string;
  vm: number;
  vcpus: number;
  gfn: number;
  pages: number;
  ops?: number;
  durationMs?: number;
  writeRatio: number;
  seed: number;
}

/** The register-per-page model and the counters of one workload run (pure: no I/O of its own). */
export class Tally {
  private readonly allowed = new Map<number, Set<number>>();
  private readonly latencies: number[] = [];
  private readonly t0 = now();
  private opsLeft: number;
  private readonly deadline: number;
  private nextValue: number;
  readonly r: WorkloadResult;

  constructor(
    name: string,
    kind: 'cpu' | 'hca' | 'kvm',
    private readonly spec: { ops?: number; durationMs?: number; seed: number },
    private readonly tolerated: ReadonlySet<string>,
  ) {
    this.opsLeft = spec.ops ?? Infinity;
    this.deadline = spec.durationMs !== undefined ? this.t0 + spec.durationMs : Infinity;
    // values unique to this run, in the int32 range, never 0 (0 is what a zapped page reads)
    this.nextValue = ((spec.seed & 0x3fff) << 16) + 1;
    this.r = {
      name,
      kind,
      ops: 0,
      reads: 0,
      writes: 0,
      zaps: 0,
      faults: 0,
      failed: { definite: 0, indefinite: 0, byCode: {} },
      unexpected: 0,
      impossibleReads: 0,
      impossible: [],
      startedAt: Date.now(),
      durationMs: 0,
      window: { ms: 0, ops: 0, faults: 0 },
      opsPerSec: 0,
      faultsPerSec: 0,
      latencyMs: { p50: null, p99: null, max: null },
    };
  }

  /** Take one operation if the workload is not over. */
  take(): boolean {
    if (this.opsLeft <= 0 || now() >= this.deadline) return false;
    this.opsLeft--;
    return true;
  }

  value(): number {
    return this.nextValue++;
  }

  /** One access, timed and classified; `fn` returns the value read (reads) and faults taken. */
  async access(
    agent: string,
    page: number,
    write: number | undefined,
    fn: () => Promise<{ value: number; faults: number }>,
  ): Promise<void> {
    const t = now();
    this.r.ops++;
    if (write === undefined) this.r.reads++;
    else this.r.writes++;
    try {
      const { value, faults } = await fn();
      const end = now();
      this.latencies.push(end - t);
      this.r.faults += faults;
      if (end <= this.deadline) {
        this.r.window.ops++;
        this.r.window.faults += faults;
      }
      if (write !== undefined) this.allowed.set(page, new Set([write]));
      else {
        const allowed = this.allowed.get(page);
        if (allowed && !allowed.has(value)) {
          this.r.impossibleReads++;
          if (this.r.impossible.length < 20)
            this.r.impossible.push({ agent, page, got: value, allowed: [...allowed] });
        }
        this.allowed.set(page, new Set([value]));
      }
    } catch (e) {
      const err = MmlabError.wrap(e);
      this.fail(err);
      if (!err.definite && write !== undefined) this.allowed.get(page)?.add(write);
    }
  }

  /** A zap of pages (madvise DONTNEED): acknowledged → they read 0; maybe → 0 is allowed too. */
  async zap(pages: number[], fn: () => Promise<unknown>): Promise<void> {
    this.r.zaps++;
    try {
      await fn();
      for (const p of pages) this.allowed.set(p, new Set([0]));
    } catch (e) {
      const err = MmlabError.wrap(e);
      this.fail(err);
      if (!err.definite) for (const p of pages) this.allowed.get(p)?.add(0);
    }
  }

  private fail(err: MmlabError): void {
    if (err.definite) this.r.failed.definite++;
    else this.r.failed.indefinite++;
    this.r.failed.byCode[err.code] = (this.r.failed.byCode[err.code] ?? 0) + 1;
    if (err.definite && !this.tolerated.has(err.code)) this.r.unexpected++;
  }

  finish(): WorkloadResult {
    const r = this.r;
    r.durationMs = now() - this.t0;
    r.window.ms = this.spec.durationMs ?? r.durationMs;
    if (this.spec.durationMs === undefined) {
      r.window.ops = r.ops - r.failed.definite - r.failed.indefinite;
      r.window.faults = r.faults;
    }
    const secs = Math.max(r.window.ms, 1) / 1000;
    r.opsPerSec = Math.round((r.window.ops / secs) * 10) / 10;
    r.faultsPerSec = Math.round((r.window.faults / secs) * 10) / 10;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const round = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);
    r.latencyMs = {
      p50: round(percentile(sorted, 50)),
      p99: round(percentile(sorted, 99)),
      max: round(percentile(sorted, 100)),
    };
    return r;
  }
}

/** Is the workload result acceptable: no impossible read, no failure a fault cannot explain, something done. */
export function workloadProblem(r: WorkloadResult): string | undefined {
  if (r.impossibleReads > 0)
    return `${r.impossibleReads} read(s) returned a value no write explains (first: ${JSON.stringify(r.impossible[0])})`;
  if (r.unexpected > 0)
    return `${r.unexpected} operation(s) failed with a code faults do not explain: ${JSON.stringify(r.failed.byCode)}`;
  if (r.ops > 0 && r.failed.definite + r.failed.indefinite === r.ops)
    return `every one of its ${r.ops} operations failed: ${JSON.stringify(r.failed.byCode)}`;
  return undefined;
}

/** `workload`: each CPU its own slice of the range, loads and stores until the end. */
export async function runCpuWorkload(
  rpc: RpcClient,
  w: CpuWorkload,
  timeoutMs: number,
): Promise<WorkloadResult> {
  const tally = new Tally(w.name, 'cpu', w, TRANSIENT);
  const per = Math.floor(w.pages / w.cpus.length);
  if (per < 1)
    throw new MmlabError(
      'EINVAL',
      `${w.pages} page(s) cannot be split between ${w.cpus.length} CPUs`,
    );
  await Promise.all(
    w.cpus.map(async (cpu, i) => {
      const rng = xoroshiro128plus((w.seed * 31 + i) | 0);
      const first = i * per;
      const slice = Array.from({ length: per }, (_, k) => first + k);
      let sinceZap = 0;
      let next = 0;
      while (tally.take()) {
        if (w.zapEvery !== undefined && sinceZap >= w.zapEvery) {
          sinceZap = 0;
          const req = {
            pid: w.pid,
            addr: w.addr + first * PAGE_SIZE,
            pages: per,
            advice: 'dontneed' as const,
          };
          await tally.zap(slice, () => rpc.call('madvise', req, { timeoutMs }));
        }
        sinceZap++;
        const page =
          w.pattern === 'sequential' ? slice[next++ % per] : slice[uniformInt(rng, 0, per - 1)];
        const write = uniformFloat64(rng) < w.writeRatio ? tally.value() : undefined;
        const req = {
          pid: w.pid,
          addr: w.addr + page * PAGE_SIZE,
          op: write === undefined ? ('read' as const) : ('write' as const),
          ...(write !== undefined && { value: write }),
        };
        await tally.access(`cpu${cpu}`, page, write, async () => {
          const r = await rpc.call('cpuAccess', req, { id: cpu, timeoutMs });
          return { value: r.value, faults: r.faults };
        });
      }
    }),
  );
  return tally.finish();
}

/** `hca.workload`: RDMA READs and WRITEs of random pages of one MR, one queue pair at a time. */
export async function runHcaWorkload(
  rpc: RpcClient,
  w: HcaWorkload,
  timeoutMs: number,
): Promise<WorkloadResult> {
  // ENODEV: the device was fenced (its liveness lease expired); EFAULT is not tolerated: the
  // MR's range stays mapped for the whole workload.
  const tally = new Tally(w.name, 'hca', w, new Set([...TRANSIENT, 'ENODEV']));
  const rng = xoroshiro128plus(w.seed | 0);
  while (tally.take()) {
    const page = uniformInt(rng, 0, w.pages - 1);
    const addr = w.addr + page * PAGE_SIZE;
    const write = uniformFloat64(rng) < w.writeRatio ? tally.value() : undefined;
    await tally.access(w.hca, page, write, async () => {
      if (write !== undefined) {
        const r = await rpc.call(
          'hcaRdmaWrite',
          { mr: w.mr, addr, value: write },
          { id: w.hca, timeoutMs },
        );
        return { value: write, faults: r.npf };
      }
      const r = await rpc.call('hcaRdmaRead', { mr: w.mr, addr }, { id: w.hca, timeoutMs });
      return { value: r.value, faults: r.npf };
    });
  }
  return tally.finish();
}

/**
 * `kvm.workload`: vCPUs 0..vcpus-1 of one VM, each on its own slice of the guest frames (one
 * writer per frame: the register model holds), load or store a random frame of it until the
 * end; a miss is a guest fault (tdp_page_fault, through mm). EFAULT is not tolerated: the
 * memslot's host range stays mapped for the whole workload. ENODEV: the instance was fenced.
 */
export async function runKvmWorkload(
  rpc: RpcClient,
  w: KvmWorkload,
  timeoutMs: number,
): Promise<WorkloadResult> {
  const tally = new Tally(w.name, 'kvm', w, new Set([...TRANSIENT, 'ENODEV']));
  const per = Math.floor(w.pages / w.vcpus);
  if (per < 1)
    throw new MmlabError('EINVAL', `${w.pages} page(s) cannot be split between ${w.vcpus} vCPUs`);
  await Promise.all(
    Array.from({ length: w.vcpus }, async (_x, vcpu) => {
      const rng = xoroshiro128plus((w.seed * 31 + vcpu) | 0);
      const first = vcpu * per;
      while (tally.take()) {
        const page = first + uniformInt(rng, 0, per - 1);
        const gfn = w.gfn + page;
        const write = uniformFloat64(rng) < w.writeRatio ? tally.value() : undefined;
        await tally.access(`${w.kvm}/vm${w.vm}/vcpu${vcpu}`, page, write, async () => {
          if (write !== undefined) {
            const r = await rpc.call(
              'kvmGuestWrite',
              { vm: w.vm, vcpu, gfn, value: write },
              { id: w.kvm, timeoutMs },
            );
            return { value: write, faults: r.faults };
          }
          const r = await rpc.call(
            'kvmGuestRead',
            { vm: w.vm, vcpu, gfn },
            { id: w.kvm, timeoutMs },
          );
          return { value: r.value, faults: r.faults };
        });
      }
    }),
  );
  return tally.finish();
}
