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
 *                 and, for cpu.read / hca.rdma_read / kvm.guest_read with `expect`, read that value; a
 *                 parallel step is ok iff every step of its branches is (each is recorded
 *                 under it, with its own line);
 *   valid         every step ok, and the violated invariants are exactly expect.violations;
 *   invalid       otherwise;
 *   unknown       the run could not complete: the barrier or the observer failed, the run was
 *                 interrupted, or the runner itself threw. A step's own error (even ETIMEDOUT
 *                 or ENOHANDLER) is that step's outcome, not an unknown run.
 */
import { checkInvariants, type InvariantVerdict } from '@mmlab/checker';
import { MmlabError, TRACE_REPLAY_SUBJECT, TraceEvent } from '@mmlab/protocol';
import { Tracer, now, sleep } from '@mmlab/runtime';
import {
  type InvariantName,
  type LocatedStep,
  type Scenario,
  type StepResult,
  type Verdict,
  stepExpect,
} from '@mmlab/scenario';
import { z } from 'zod';
import type { LabConnection } from './lab-connection';
import { type LockLeft, waitForLocks } from './locks-left';
import { type FaultWindow, Nemesis } from './nemesis';
import type { ScheduleOutcome } from './schedule';
import { describeHoles, traceHoles } from './trace-holes';
import { Bindings, type Executed, NotOk, type StepContext, executeStep } from './steps';
import type { WorkloadResult } from './workload';

/** Default soft-lockup threshold of the checker, as MMLAB_SOFTLOCKUP_MS defaults. */
export const DEFAULT_SOFTLOCKUP_MS = 1000;
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
  /** windows opened on the lab before the run (`mmlab chaos`) and still open when it began */
  openBefore?: PriorWindow[];
  schedules?: ScheduleOutcome[];
  workloads?: WorkloadResult[];
  /** PT-lock and mmap_sem leases still held one lease TTL after the run (must be none) */
  locksLeft?: LockLeft[];
  /** epoch ms the steps started */
  startedAtTs?: number;
}

const EventsPage = z.object({
  total: z.number().int().nonnegative(),
  offset: z.number().int().nonnegative(),
  events: z.array(z.unknown()),
});

/** A fault window the run did not open: opened on the lab before it, open when it began. */
export interface PriorWindow {
  /** who opened it (the lab API's instance) */
  by: string;
  target: string;
  fault: string;
  label: string;
  /** epoch ms */
  startedAt: number;
  /** epoch ms it healed during the run; null if still open when the run ended */
  endedAt: number | null;
}

type ChaosEvent = Extract<TraceEvent, { kind: 'chaos.start' | 'chaos.end' }>;

/**
 * The windows still open at `at`, from every chaos.start/chaos.end before it (a start is
 * closed by the first later end of the same emitter, target and fault), each with the end
 * `during` holds for it, if any.
 */
export function windowsOpenAt(
  before: readonly ChaosEvent[],
  during: readonly ChaosEvent[],
): PriorWindow[] {
  const key = (e: ChaosEvent) => `${e.instance}|${e.target}|${e.fault}`;
  const open = new Map<string, PriorWindow[]>();
  for (const e of [...before].sort((a, b) => a.ts - b.ts)) {
    const list = open.get(key(e)) ?? [];
    if (e.kind === 'chaos.start')
      list.push({
        by: e.instance,
        target: e.target,
        fault: e.fault,
        label: e.label,
        startedAt: e.ts,
        endedAt: null,
      });
    else list.shift();
    open.set(key(e), list);
  }
  for (const e of [...during].sort((a, b) => a.ts - b.ts)) {
    if (e.kind !== 'chaos.end') continue;
    const w = open.get(key(e))?.find((x) => x.endedAt === null);
    if (w) w.endedAt = e.ts;
  }
  return [...open.values()].flat();
}

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
  private readonly bindings = new Bindings();
  private readonly steps: StepResult[] = [];
  private readonly log: (line: string) => void;
  private readonly nemesis: Nemesis;
  private readonly schedules: ScheduleOutcome[] = [];
  private readonly workloads: WorkloadResult[] = [];
  /** epoch ms the run began (trace.wait counts the events since) */
  private startedAt = now();

  constructor(
    readonly scenario: Scenario,
    private readonly lab: LabConnection,
    private readonly opts: RunnerOptions = {},
  ) {
    this.log = opts.log ?? (() => {});
    this.nemesis = new Nemesis(lab.local, lab.rpc, { log: this.log });
  }

  /** What the step handlers see of this run. */
  private context(): StepContext {
    return {
      rpc: this.lab.rpc,
      instances: this.lab.instances,
      scenario: this.scenario,
      bindings: this.bindings,
      nemesis: this.nemesis,
      timeoutMs: this.opts.stepTimeoutMs ?? 30_000,
      ...(this.opts.signal && { signal: this.opts.signal }),
      runList: (steps, base) => this.runList(steps, base),
      traceCount: async (event, instance) =>
        (await this.fetchEvents(this.startedAt, undefined, event, instance)).length,
      recordSchedule: (s) => this.schedules.push(s),
      recordWorkload: (r) => this.workloads.push(r),
    };
  }

  /** Run everything; never throws: a failure to complete is the `unknown` verdict. */
  async run(): Promise<RunOutcome> {
    const from = now();
    this.startedAt = from;
    let rawEvents: unknown[] = [];
    let events: TraceEvent[] = [];
    let openBefore: PriorWindow[] = [];
    let chaosBefore: ChaosEvent[] = [];
    try {
      chaosBefore = (await this.fetchEvents(0, from, 'chaos.start,chaos.end'))
        .map((r) => TraceEvent.safeParse(r))
        .flatMap((r) =>
          r.success && (r.data.kind === 'chaos.start' || r.data.kind === 'chaos.end')
            ? [r.data]
            : [],
        );
    } catch (e) {
      this.log(
        `warning: the fault windows open before the run could not be read: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    openBefore = windowsOpenAt(chaosBefore, []);
    if (openBefore.length > 0)
      this.log(`  open before the run: ${openBefore.map((w) => w.label).join('; ')}`);
    const chaos = () => ({
      faults: this.nemesis.windows(),
      openBefore,
      schedules: this.schedules,
      workloads: this.workloads,
      startedAtTs: from,
    });
    try {
      const atStart = await this.publishedCounts();
      await this.announce();
      await this.runSteps();
      // the final heal phase: nothing stays paused or dead for the last checks
      await this.nemesis.heal();
      await this.nemesis.flush();
      let flushed = await this.barrier();
      // A lease of a process killed while holding it lasts until its TTL: wait that long.
      const locksLeft = await waitForLocks(
        this.lab.rpc,
        (this.scenario.config.leaseTtlMs ?? 2000) + 1000,
        this.opts.signal,
      );
      rawEvents = await this.fetchEvents(from);
      events = this.parseEvents(rawEvents);
      let holes = traceHoles(events, flushed, atStart);
      for (let ask = 1; holes.length > 0; ask++) {
        if (ask > 3) throw new Error(`trace incomplete: missing ${describeHoles(holes)}`);
        this.log(`  trace: missing ${describeHoles(holes)}; asking for a replay`);
        this.lab.rpc.nc.publish(TRACE_REPLAY_SUBJECT);
        await sleep(250 * ask);
        flushed = await this.barrier();
        rawEvents = await this.fetchEvents(from);
        events = this.parseEvents(rawEvents);
        holes = traceHoles(events, flushed, atStart);
      }
      openBefore = windowsOpenAt(
        chaosBefore,
        events.filter((e): e is ChaosEvent => e.kind === 'chaos.start' || e.kind === 'chaos.end'),
      );
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

  /**
   * run.start on the trace, before the first step: the scenario and the invariants it expects
   * to break, so that a live view (the dashboard) can show those violations as expected. A
   * lab that does not take it still runs the scenario.
   */
  private async announce(): Promise<void> {
    let tracer: Tracer | undefined;
    try {
      tracer = new Tracer(this.lab.rpc.nc, 'lab', 'runner');
      tracer.emit({
        kind: 'run.start',
        scenario: this.scenario.name,
        expectViolations: [...this.scenario.expect.violations],
      });
      await tracer.flush();
    } catch (e) {
      this.log(`warning: run.start not published: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      tracer?.close();
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
      done = await untilAborted(executeStep(step, this.context(), path), this.opts.signal);
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
    const expected = stepExpect(step);
    if (expected !== undefined && done?.value !== expected)
      return { ...out, ok: false, reason: `read ${String(done?.value)}, expected ${expected}` };
    return out;
  }

  /**
   * Every instance publishes its buffered trace events and says so (flush), then the observer
   * says it stored everything delivered before (observerSync): after this, the observer holds
   * every event the steps caused. A missing instance makes the trace incomplete: unknown.
   */
  async barrier(): Promise<Array<{ instance: string; published: number }>> {
    const replies = await this.flushAll();
    const expect = this.lab.instances.length;
    if (replies.length < expect) {
      const seen = new Set(replies.map((r) => r.instance));
      const missing = this.lab.instances.filter((i) => !seen.has(i));
      throw new Error(
        `flush barrier: ${replies.length} of ${expect} instances answered within ${this.barrierMs} ms (missing: ${missing.join(', ')})`,
      );
    }
    await untilAborted(
      this.lab.rpc.call('observerSync', {}, { timeoutMs: this.barrierMs }),
      this.opts.signal,
    );
    return replies;
  }

  private get barrierMs(): number {
    return this.opts.barrierTimeoutMs ?? 5000;
  }

  /** Every instance flushes its trace and says how many events it published (those that answer in time). */
  private flushAll(): Promise<Array<{ instance: string; published: number }>> {
    return untilAborted(
      this.lab.rpc.gather(
        'flush',
        {},
        { expect: this.lab.instances.length, timeoutMs: this.barrierMs },
      ),
      this.opts.signal,
    );
  }

  /**
   * How many trace events each instance had published before the run (a flush gather), so
   * that traceHoles holds each to its events of the run only. Best effort: an instance that
   * does not answer now is held from its seq 1.
   */
  private async publishedCounts(): Promise<Map<string, number>> {
    try {
      return new Map((await this.flushAll()).map((r) => [r.instance, r.published]));
    } catch {
      return new Map();
    }
  }

  /**
   * Every event with from <= ts (< to), of `kind` (comma-separated), from `instance` (else any),
   * paging through the observer's GET /events.
   */
  async fetchEvents(
    from: number,
    to?: number,
    kind?: string,
    instance?: string,
  ): Promise<unknown[]> {
    const out: unknown[] = [];
    for (;;) {
      const url = new URL('/events', this.lab.observerUrl);
      url.search = new URLSearchParams({
        from: String(from),
        limit: String(EVENTS_PAGE),
        offset: String(out.length),
        ...(to !== undefined && { to: String(to) }),
        ...(kind !== undefined && { kind }),
        ...(instance !== undefined && { instance }),
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
