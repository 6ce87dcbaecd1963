/**
 * What results.json says about a run under faults (Jepsen's checker output, for this lab):
 * the fault windows, operations that failed definitely or indefinitely, fault latency inside
 * and outside the windows, the longest PT-lock hold, the workloads, and the leases still held
 * after the run (there must be none).
 */
import { ERRORS, type ErrorCode, type TraceEvent } from '@mmlab/protocol';
import type { ChaosResults, StepResult } from '@mmlab/scenario';
import { percentile } from './metrics';
import type { RunOutcome } from './scenario-runner';

const isCode = (c: string): c is ErrorCode => c in ERRORS;

/** Every step that is an operation on the lab (parallel steps are their branches). */
function leafSteps(steps: readonly StepResult[]): StepResult[] {
  return steps.flatMap((s) => (s.branches ? leafSteps(s.branches.flat()) : [s]));
}

type Lat = ChaosResults['latency']['inFaults'];

function latencyOf(ms: number[]): Lat {
  const sorted = ms.sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: percentile(sorted, 100),
  };
}

export function chaosResults(outcome: RunOutcome, events: readonly TraceEvent[]): ChaosResults {
  const t0 = outcome.startedAtTs ?? 0;
  const before = outcome.openBefore ?? [];
  // the run's own windows, and those opened on the lab before it (they shape its latency too)
  const windows: Array<{ startedAt: number; endedAt: number | null }> = [
    ...(outcome.faults ?? []),
    ...before,
  ];
  const rel = (ts: number) => Math.round((ts - t0) * 10) / 10;

  // operations: the scenario's own steps (not chaos, heal, sleep...) and every workload access
  const byCode: Record<string, number> = {};
  let ok = 0;
  let definite = 0;
  let indefinite = 0;
  const control = new Set([
    'chaos',
    'heal',
    'chaos.schedule',
    'sleep',
    'mm.stall',
    'mm.lose_lease',
    'trace.wait',
    'workload',
    'hca.workload',
    'kvm.workload',
  ]);
  for (const s of leafSteps(outcome.steps)) {
    if (control.has(s.op)) continue;
    if (!s.error) {
      ok++;
      continue;
    }
    byCode[s.error.code] = (byCode[s.error.code] ?? 0) + 1;
    const d = isCode(s.error.code) ? ERRORS[s.error.code].definite : false;
    if (d) definite++;
    else indefinite++;
  }
  for (const w of outcome.workloads ?? []) {
    ok += w.ops - w.failed.definite - w.failed.indefinite;
    definite += w.failed.definite;
    indefinite += w.failed.indefinite;
    for (const [c, n] of Object.entries(w.failed.byCode)) byCode[c] = (byCode[c] ?? 0) + n;
  }

  // fault latency (fault.end: when it ended; it started durMs before) inside and outside windows
  const within = (start: number, end: number) =>
    windows.some((w) => start < (w.endedAt ?? Infinity) && end > w.startedAt);
  const inside: number[] = [];
  const outside: number[] = [];
  let longest: ChaosResults['longestPtlHold'] = null;
  for (const e of events) {
    if (e.kind === 'fault.end') (within(e.ts - e.durMs, e.ts) ? inside : outside).push(e.durMs);
    else if (e.kind === 'ptl.release' && (!longest || e.heldMs > longest.ms))
      longest = { ms: e.heldMs, lock: e.lock, pid: e.pid, owner: e.owner, atMs: rel(e.ts) };
  }

  return {
    faults: [
      ...before.map((w, i) => ({
        id: -(i + 1),
        target: w.target,
        instance: w.target,
        fault: w.fault,
        label: w.label,
        startMs: rel(w.startedAt),
        endMs: w.endedAt === null ? null : rel(w.endedAt),
        openedBefore: true as const,
      })),
      ...(outcome.faults ?? []).map((w) => ({
        id: w.id,
        target: w.target,
        instance: w.instance,
        fault: w.fault,
        label: w.label,
        startMs: rel(w.startedAt),
        endMs: w.endedAt === null ? null : rel(w.endedAt),
        ...(w.healError !== undefined && { healError: w.healError }),
      })),
    ],
    schedules: (outcome.schedules ?? []).map((s) => ({
      seed: s.seed,
      plan: s.plan.map((p) => ({
        atMs: p.atMs,
        target: p.spec.target,
        fault: p.spec.fault,
        ms: p.spec.ms,
      })),
      errors: s.errors,
    })),
    operations: { ok, failedDefinite: definite, failedIndefinite: indefinite, byCode },
    latency: { inFaults: latencyOf(inside), outsideFaults: latencyOf(outside) },
    longestPtlHold: longest,
    locksLeft: outcome.locksLeft ?? [],
  };
}
