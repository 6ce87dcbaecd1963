/**
 * ScenarioRunner: runs one parsed scenario against a lab and judges it. Independent of the
 * command line, so that tests and later tools (comparisons, sweeps) can drive it.
 *
 * A run is: the steps in order, each recorded with its outcome; a barrier (every instance
 * flushes its trace events to NATS, then the observer confirms it stored everything it had
 * received); the run's events from the observer; the invariant checker over them; a verdict.
 *
 * Outcomes, as results.json records them:
 *   step ok       its expectError matched the error code, or (no expectError) it succeeded
 *                 and, for cpu.read / hca.rdma_read with `expect`, read that value; a
 *                 parallel step is ok iff every step of its branches is (each is recorded
 *                 under it, with its own line);
 *   valid         every step ok, and the violated invariants are exactly expect.violations;
 *   invalid       otherwise;
 *   unknown       the run could not complete: the barrier or the observer failed, the run was
 *                 interrupted, or the runner itself threw. A step's own error (even ETIMEDOUT
 *                 or ENOHANDLER) is that step's outcome, not an unknown run.
 */
import { checkInvariants, type InvariantVerdict } from '@mmlab/checker';
import { MmlabError, PAGE_SIZE, TraceEvent } from '@mmlab/protocol';
import { now, sleep } from '@mmlab/runtime';
import type {
  AddrRef,
  InvariantName,
  LocatedStep,
  Scenario,
  StepResult,
  Verdict,
} from '@mmlab/scenario';
import { z } from 'zod';
import type { LabConnection } from './lab-connection';
import { type LockLeft, waitForLocks } from './chaos-results';
import { type FaultWindow, Nemesis } from './nemesis';
import { type ScheduleOutcome, planSchedule, runSchedule } from './schedule';
import { type WorkloadResult, runCpuWorkload, runHcaWorkload, workloadProblem } from './workload';

/** Default soft-lockup threshold of the checker, as MMLAB_SOFTLOCKUP_MS defaults. */
export const DEFAULT_SOFTLOCKUP_MS = 1000;
/**
 * Deadline of one workload access: longer than a fault's own deadline (MMLAB_FAULT_DEADLINE_MS,
 * 10 s), short enough that a request lost with a restarting nats-server fails soon (ETIMEDOUT,
 * indefinite) and the workload goes on.
 */
const WORKLOAD_OP_TIMEOUT_MS = 12_000;
const EVENTS_PAGE = 100_000;

export interface RunnerOptions {
  /** deadline of one step's request (a fault under contention may take seconds) */
  stepTimeoutMs?: number;
  /** deadline of the flush barrier and the observer sync */
  barrierTimeoutMs?: number;
  /** aborts the run between steps and while waiting (SIGINT) */
  signal?: AbortSignal;
  /** progress and warnings, one line each */
  log?: (line: string) => void;
}

export interface RunOutcome {
  verdict: Verdict;
  /** why the verdict is unknown */
  error?: string;
  steps: StepResult[];
  /** every event of the run as the observer returned it (for trace.jsonl) */
  rawEvents: unknown[];
  /** the events that parse as TraceEvent (the checker's and the metrics' input) */
  events: TraceEvent[];
  invariants: InvariantVerdict[];
  /** the nemesis's fault windows, the schedules it ran, the workloads' outcomes */
  faults?: FaultWindow[];
  schedules?: ScheduleOutcome[];
  workloads?: WorkloadResult[];
  /** PT-lock and mmap_sem leases still held one lease TTL after the run (must be none) */
  locksLeft?: LockLeft[];
  /** epoch ms the steps started */
  startedAtTs?: number;
}

/**
 * The step is not ok for a reason of its own, not a service's error: it read a binding whose
 * defining step failed (nothing was sent), or a workload saw an impossible read.
 */
class NotOk extends Error {
  constructor(
    message: string,
    readonly value?: unknown,
  ) {
    super(message);
  }
}

/** A memory region bound by hca.reg_mr: which HCA, its number, and the range's pid and start. */
export interface MrBinding {
  hca: string;
  mr: number;
  pid: number;
  addr: number;
}

/** What a name is bound to: a pid or an address (a number), or a memory region. */
type BoundValue = number | MrBinding;

/** What a step produced: its value, the binding it defines (`as`), a parallel step's branches. */
interface Executed {
  value: unknown;
  bind?: { name: string; value: BoundValue };
  branches?: StepResult[][];
}

const bindAs = (as: string | undefined, value: BoundValue): Executed['bind'] =>
  as === undefined ? undefined : { name: as, value };

const EventsPage = z.object({
  total: z.number().int().nonnegative(),
  offset: z.number().int().nonnegative(),
  events: z.array(z.unknown()),
});

/** Reject with an 'interrupted' error as soon as `signal` aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new Error('interrupted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error('interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** valid iff every step ok and the violated invariants are exactly the expected ones. */
export function judge(
  steps: readonly StepResult[],
  invariants: readonly InvariantVerdict[],
  expected: readonly InvariantName[],
  locksLeft: readonly unknown[] = [],
): Verdict {
  const violated = new Set(invariants.filter((i) => !i.ok).map((i) => i.name));
  const want = new Set(expected);
  const sameSet = violated.size === want.size && [...want].every((n) => violated.has(n));
  return steps.every((s) => s.ok) && sameSet && locksLeft.length === 0 ? 'valid' : 'invalid';
}

export class ScenarioRunner {
  /** name → pid (process.create, fork), address (mmap, mremap) or memory region (hca.reg_mr) */
  private readonly bindings = new Map<string, BoundValue>();
  private readonly steps: StepResult[] = [];
  private readonly log: (line: string) => void;
  private readonly nemesis: Nemesis;
  private readonly schedules: ScheduleOutcome[] = [];
  private readonly workloads: WorkloadResult[] = [];

  constructor(
    readonly scenario: Scenario,
    private readonly lab: LabConnection,
    private readonly opts: RunnerOptions = {},
  ) {
    this.log = opts.log ?? (() => {});
    this.nemesis = new Nemesis(lab.local, lab.rpc, { log: this.log });
  }

  /** Run everything; never throws: a failure to complete is the `unknown` verdict. */
  async run(): Promise<RunOutcome> {
    const from = now();
    let rawEvents: unknown[] = [];
    let events: TraceEvent[] = [];
    const chaos = () => ({
      faults: this.nemesis.windows(),
      schedules: this.schedules,
      workloads: this.workloads,
      startedAtTs: from,
    });
    try {
      await this.runSteps();
      // the final heal phase: nothing stays paused or dead for the last checks
      await this.nemesis.heal();
      await this.nemesis.flush();
      await this.barrier();
      // A lease of a process killed while holding it lasts until its TTL: wait that long.
      const locksLeft = await waitForLocks(
        this.lab.rpc,
        (this.scenario.config.leaseTtlMs ?? 2000) + 1000,
        this.opts.signal,
      );
      rawEvents = await this.fetchEvents(from);
      events = this.parseEvents(rawEvents);
      const invariants = checkInvariants(events, {
        softlockupMs: this.scenario.config.softlockupMs ?? DEFAULT_SOFTLOCKUP_MS,
      });
      const verdict = judge(this.steps, invariants, this.scenario.expect.violations, locksLeft);
      if (locksLeft.length > 0)
        this.log(
          `  ${locksLeft.length} lock(s) still held after the run: ${JSON.stringify(locksLeft)}`,
        );
      return { verdict, steps: this.steps, rawEvents, events, invariants, locksLeft, ...chaos() };
    } catch (e) {
      await this.nemesis.heal().catch(() => 0);
      const error = e instanceof Error ? e.message : String(e);
      return {
        verdict: 'unknown',
        error,
        steps: this.steps,
        rawEvents,
        events,
        invariants: [],
        ...chaos(),
      };
    }
  }

  /** The steps in order. Each is recorded whatever its outcome; a later step still runs. */
  async runSteps(): Promise<StepResult[]> {
    for (const [index, step] of this.scenario.steps.entries()) {
      if (this.opts.signal?.aborted) throw new Error('interrupted');
      this.steps.push(await this.runStep(step, index, `steps[${index}]`));
    }
    return this.steps;
  }

  /** One step list in order (a branch of a parallel step). */
  private async runList(steps: readonly LocatedStep[], base: string): Promise<StepResult[]> {
    const out: StepResult[] = [];
    for (const [index, step] of steps.entries()) {
      if (this.opts.signal?.aborted) throw new Error('interrupted');
      out.push(await this.runStep(step, index, `${base}[${index}]`));
    }
    return out;
  }

  private async runStep(step: LocatedStep, index: number, path: string): Promise<StepResult> {
    const r = await this.judgeStep(step, index, path);
    this.log(
      `  ${path} line ${step.line} ${step.op}: ${r.ok ? 'ok' : 'NOT OK'}` +
        (r.error ? ` (${r.error.code})` : '') +
        (r.reason ? ` — ${r.reason}` : ''),
    );
    return r;
  }

  private async judgeStep(step: LocatedStep, index: number, path: string): Promise<StepResult> {
    const base = { index, path, line: step.line, op: step.op };
    const t0 = now();
    let done: Executed | undefined;
    let err: MmlabError | undefined;
    try {
      done = await untilAborted(this.execute(step, path), this.opts.signal);
    } catch (e) {
      if (e instanceof NotOk)
        return {
          ...base,
          ok: false,
          reason: e.message,
          durationMs: now() - t0,
          ...(e.value !== undefined && { value: e.value }),
        };
      // Anything but a typed error is the runner's own failure (or an interrupt): unknown.
      if (!(e instanceof MmlabError)) throw e;
      err = e;
    }
    const durationMs = now() - t0;
    if (done?.bind) this.bindings.set(done.bind.name, done.bind.value);
    const error = err && { code: err.code, message: err.toWire().message };
    const out: StepResult = {
      ...base,
      ok: true,
      durationMs,
      ...(done && done.value !== undefined && { value: done.value }),
      ...(error && { error }),
      ...(done?.branches && { branches: done.branches }),
    };
    if (step.expectError !== undefined) {
      if (err?.code !== step.expectError)
        return {
          ...out,
          ok: false,
          reason: `expected ${step.expectError}, got ${err ? err.code : 'success'}`,
        };
      return out;
    }
    if (err) return { ...out, ok: false, reason: `failed with ${err.code}` };
    if (done?.branches) {
      const bad = done.branches.flat().filter((s) => !s.ok);
      if (bad.length > 0)
        return {
          ...out,
          ok: false,
          reason: `${bad.length} step(s) of its branches not ok: ${bad.map((s) => `${s.path ?? s.index} (line ${s.line})`).join(', ')}`,
        };
    }
    const expected =
      step.op === 'cpu.read' || step.op === 'hca.rdma_read' ? step.expect : undefined;
    if (expected !== undefined && done?.value !== expected)
      return { ...out, ok: false, reason: `read ${String(done?.value)}, expected ${expected}` };
    return out;
  }

  /** The step executor: one case per step kind, each the RPC of the wire contract it is. */
  private async execute(step: LocatedStep, path: string): Promise<Executed> {
    const rpc = this.lab.rpc;
    const timeoutMs = this.opts.stepTimeoutMs ?? 30_000;
    switch (step.op) {
      case 'process.create': {
        const { pid } = await rpc.call('processCreate', {}, { timeoutMs });
        return { value: pid, bind: bindAs(step.as, pid) };
      }
      case 'mmap': {
        const req = {
          pid: this.bound(step.process),
          pages: step.pages,
          prot: step.prot,
          flags: step.flags,
        };
        const { addr } = await rpc.call('mmap', req, { timeoutMs });
        return { value: addr, bind: bindAs(step.as, addr) };
      }
      case 'munmap': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          pages: step.pages,
        };
        return { value: await rpc.call('munmap', req, { timeoutMs }) };
      }
      case 'cpu.read': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          op: 'read' as const,
        };
        const r = await rpc.call('cpuAccess', req, { id: step.cpu, timeoutMs });
        return { value: r.value };
      }
      case 'cpu.write': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          op: 'write' as const,
          value: step.value,
        };
        const r = await rpc.call('cpuAccess', req, { id: step.cpu, timeoutMs });
        return { value: r.value };
      }
      case 'fork': {
        const { pid } = await rpc.call('fork', { pid: this.bound(step.process) }, { timeoutMs });
        return { value: pid, bind: bindAs(step.as, pid) };
      }
      case 'mprotect': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          pages: step.pages,
          prot: step.prot,
        };
        return { value: await rpc.call('mprotect', req, { timeoutMs }) };
      }
      case 'mremap': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          pages: step.pages,
          ...(step.newPages !== undefined && { newPages: step.newPages }),
        };
        const r = await rpc.call('mremap', req, { timeoutMs });
        return { value: r, bind: bindAs(step.as, r.addr) };
      }
      case 'madvise': {
        const req = {
          pid: this.bound(step.process),
          addr: this.addr(step.addr, step.page),
          pages: step.pages,
          advice: step.advice,
        };
        return { value: await rpc.call('madvise', req, { timeoutMs }) };
      }
      case 'exit':
        return { value: await rpc.call('exit', { pid: this.bound(step.process) }, { timeoutMs }) };
      case 'hca.reg_mr': {
        const pid = this.bound(step.process);
        const addr = this.addr(step.addr, step.page);
        const req = { pid, addr, pages: step.pages, odp: step.odp, access: step.access };
        const { mr } = await rpc.call('hcaRegMr', req, { id: step.hca, timeoutMs });
        return { value: mr, bind: bindAs(step.as, { hca: step.hca, mr, pid, addr }) };
      }
      case 'hca.dereg_mr': {
        const m = this.boundMr(step.mr);
        return { value: await rpc.call('hcaDeregMr', { mr: m.mr }, { id: m.hca, timeoutMs }) };
      }
      case 'hca.rdma_write': {
        const m = this.boundMr(step.mr);
        const req = { mr: m.mr, addr: this.mrAddr(m, step.addr, step.page), value: step.value };
        return { value: await rpc.call('hcaRdmaWrite', req, { id: m.hca, timeoutMs }) };
      }
      case 'hca.rdma_read': {
        const m = this.boundMr(step.mr);
        const req = { mr: m.mr, addr: this.mrAddr(m, step.addr, step.page) };
        const r = await rpc.call('hcaRdmaRead', req, { id: m.hca, timeoutMs });
        return { value: r.value };
      }
      case 'hca.prefetch': {
        const m = this.boundMr(step.mr);
        const req = {
          mr: m.mr,
          addr: this.mrAddr(m, step.addr, step.page),
          pages: step.pages,
          write: step.write,
        };
        return { value: await rpc.call('hcaPrefetch', req, { id: m.hca, timeoutMs }) };
      }
      case 'parallel': {
        // Every branch in order, all branches at once; the bindings map is shared, which is
        // safe because check.ts forbids a branch to read or rebind another's names.
        const branches = await Promise.all(
          step.branches.map((b, bi) => this.runList(b, `${path}.branches[${bi}]`)),
        );
        return { value: undefined, branches };
      }
      case 'sleep':
        await sleep(step.ms);
        return { value: undefined };
      case 'chaos': {
        const { op: _op, expectError: _e, line: _l, ...spec } = step;
        const w = await this.nemesis.inject(spec);
        return { value: { window: w.id, instance: w.instance, label: w.label } };
      }
      case 'heal':
        return { value: await this.nemesis.heal(step.target) };
      case 'chaos.schedule': {
        const seed = step.seed ?? this.scenario.seed ?? 0;
        const plan = planSchedule(seed, step.intervalMs, step.durationMs, step.faults);
        const out = await runSchedule(this.nemesis, seed, plan, step.durationMs, this.opts.signal);
        this.schedules.push(out);
        return {
          value: {
            seed,
            plan: out.plan.map((p) => ({
              atMs: p.atMs,
              target: p.spec.target,
              fault: p.spec.fault,
              ms: p.spec.ms,
            })),
            errors: out.errors,
          },
        };
      }
      case 'workload': {
        const r = await runCpuWorkload(
          rpc,
          {
            name: step.name ?? `workload@${step.line}`,
            cpus: step.cpus,
            pid: this.bound(step.process),
            addr: this.addr(step.addr, step.page),
            pages: step.pages,
            ops: step.ops,
            durationMs: step.durationMs,
            writeRatio: step.writeRatio,
            pattern: step.pattern,
            zapEvery: step.zapEvery,
            seed: step.seed ?? this.scenario.seed ?? 0,
          },
          Math.min(timeoutMs, WORKLOAD_OP_TIMEOUT_MS),
        );
        return this.workloadDone(r);
      }
      case 'hca.workload': {
        const m = this.boundMr(step.mr);
        const r = await runHcaWorkload(
          rpc,
          {
            name: step.name ?? `hca.workload@${step.line}`,
            hca: m.hca,
            mr: m.mr,
            addr: m.addr,
            pages: step.pages,
            ops: step.ops,
            durationMs: step.durationMs,
            writeRatio: step.writeRatio,
            seed: step.seed ?? this.scenario.seed ?? 0,
          },
          Math.min(timeoutMs, WORKLOAD_OP_TIMEOUT_MS),
        );
        return this.workloadDone(r);
      }
      case 'mm.stall': {
        const mms = this.lab.instances.filter((i) => /^mm-\d+$/.test(i));
        await Promise.all(
          mms.map((id) => rpc.call('mmDebug', { stallUnderPtlMs: step.ms }, { id, timeoutMs })),
        );
        return { value: undefined };
      }
    }
  }

  /** A workload's outcome is its step's value; an impossible read or unexplained failure fails the step. */
  private workloadDone(r: WorkloadResult): Executed {
    this.workloads.push(r);
    const problem = workloadProblem(r);
    if (problem) throw new NotOk(`workload ${r.name}: ${problem}`, r);
    return { value: r };
  }

  /** The value of a binding (names were checked at parse time; the defining step may have failed). */
  private bound(name: string): number {
    const value = this.bindings.get(name);
    if (value === undefined)
      throw new NotOk(`"${name}" is unbound: the step that binds it did not succeed`);
    if (typeof value !== 'number')
      throw new NotOk(`"${name}" is a memory region, expected a pid or an address`);
    return value;
  }

  private boundMr(name: string): MrBinding {
    const value = this.bindings.get(name);
    if (value === undefined)
      throw new NotOk(`"${name}" is unbound: the step that binds it did not succeed`);
    if (typeof value === 'number')
      throw new NotOk(`"${name}" is a pid or an address, expected a memory region`);
    return value;
  }

  /** An address in a memory region: addr (default the MR's start) + page * 4 KiB. */
  private mrAddr(m: MrBinding, addr: AddrRef | undefined, page: number): number {
    return addr === undefined ? m.addr + page * PAGE_SIZE : this.addr(addr, page);
  }

  /** addr (a number or an address binding) + page * 4 KiB */
  private addr(addr: AddrRef, page: number): number {
    return (typeof addr === 'number' ? addr : this.bound(addr)) + page * PAGE_SIZE;
  }

  /**
   * Every instance publishes its buffered trace events and says so (flush), then the observer
   * says it stored everything delivered before (observerSync): after this, the observer holds
   * every event the steps caused. A missing instance makes the trace incomplete: unknown.
   */
  async barrier(): Promise<void> {
    const expect = this.lab.instances.length;
    const timeoutMs = this.opts.barrierTimeoutMs ?? 5000;
    const replies = await untilAborted(
      this.lab.rpc.gather('flush', {}, { expect, timeoutMs }),
      this.opts.signal,
    );
    if (replies.length < expect) {
      const seen = new Set(replies.map((r) => r.instance));
      const missing = this.lab.instances.filter((i) => !seen.has(i));
      throw new Error(
        `flush barrier: ${replies.length} of ${expect} instances answered within ${timeoutMs} ms (missing: ${missing.join(', ')})`,
      );
    }
    await untilAborted(this.lab.rpc.call('observerSync', {}, { timeoutMs }), this.opts.signal);
  }

  /** Every event with ts >= from, paging through the observer's GET /events. */
  async fetchEvents(from: number): Promise<unknown[]> {
    const out: unknown[] = [];
    for (;;) {
      const url = new URL('/events', this.lab.observerUrl);
      url.search = new URLSearchParams({
        from: String(from),
        limit: String(EVENTS_PAGE),
        offset: String(out.length),
      }).toString();
      const res = await fetch(url, { signal: this.opts.signal });
      if (!res.ok) throw new Error(`GET ${url.href}: HTTP ${res.status}`);
      const page = EventsPage.safeParse(await res.json());
      if (!page.success)
        throw new Error(`GET ${url.href}: unexpected reply: ${page.error.message}`);
      out.push(...page.data.events);
      if (page.data.events.length === 0 || out.length >= page.data.total) return out;
    }
  }

  /** Events as TraceEvents; one that does not parse is left out of the checker, with a warning. */
  private parseEvents(raw: readonly unknown[]): TraceEvent[] {
    const events: TraceEvent[] = [];
    let bad = 0;
    for (const r of raw) {
      const e = TraceEvent.safeParse(r);
      if (e.success) events.push(e.data);
      else bad++;
    }
    if (bad > 0)
      this.log(
        `warning: ${bad} event(s) from the observer do not parse as TraceEvent; not checked`,
      );
    return events;
  }
}
