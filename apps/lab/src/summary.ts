/** The few lines `mmlab run` prints when it is done: verdict, what failed, where to look. */
import type { RunResults, StepResult } from '@mmlab/scenario';

/** The steps of a result tree that are not ok, depth first: a parallel step, then its culprits. */
export function notOkSteps(steps: readonly StepResult[]): StepResult[] {
  return steps.flatMap((s) => (s.ok ? [] : [s, ...notOkSteps((s.branches ?? []).flat())]));
}

/** `3` for a top-level step, its path for one inside a parallel step. */
const stepLabel = (s: StepResult): string =>
  s.path?.includes('.branches') ? s.path : String(s.index);

/**
 * "2 of 8 invariants violated", and whether the scenario expected them: a fault-injection run
 * must break its invariant, and saying only "violated" makes a valid run read like a broken one.
 */
export function violationsText(r: RunResults): string {
  const violated = r.invariants.filter((i) => !i.ok).map((i) => i.name);
  const expected = new Set(r.expectedViolations ?? []);
  const head = `${violated.length} of ${r.invariants.length} invariants violated`;
  if (violated.length === 0) return head;
  const asExpected = violated.filter((n) => expected.has(n)).length;
  if (asExpected === violated.length && asExpected === expected.size)
    return `${head}, as the scenario expects`;
  if (asExpected === 0) return head;
  return `${head} (${asExpected} of them expected)`;
}

export function formatSummary(r: RunResults, resultsPath: string): string {
  const ok = r.steps.filter((s) => s.ok).length;
  const violated = r.invariants.filter((i) => !i.ok);
  const expected = new Set(r.expectedViolations ?? []);
  const lines = [
    `${r.name}: ${r.verdict.toUpperCase()} — ${ok}/${r.steps.length} steps ok, ` +
      `${violationsText(r)}, ${(r.durationMs / 1000).toFixed(1)} s`,
  ];
  if (r.error) lines.push(`  run did not complete: ${r.error}`);
  for (const s of notOkSteps(r.steps))
    lines.push(
      `  step ${stepLabel(s)} (line ${s.line}) ${s.op}: ${s.reason ?? 'not ok'}` +
        (s.error ? ` [${s.error.code}: ${s.error.message}]` : ''),
    );
  for (const i of violated) {
    lines.push(
      `  invariant ${i.name}${expected.has(i.name) ? ' (expected)' : ''}: ${i.violations.length} violation(s), first: ${i.violations[0]?.message ?? '?'}`,
    );
    // an unexpected one: its events, so a log alone (CI) shows what the checker saw
    if (!expected.has(i.name))
      for (const e of i.violations[0]?.events.slice(0, 8) ?? []) lines.push(`    ${eventLine(e)}`);
  }
  for (const name of expected)
    if (!violated.some((i) => i.name === name))
      lines.push(`  invariant ${name}: expected to be violated, but held`);
  for (const w of r.workloads ?? [])
    lines.push(
      `  workload ${w.name}: ${w.window.ops} ops, ${w.faultsPerSec} faults/s, ` +
        `failed ${w.failed.definite} definitely and ${w.failed.indefinite} indefinitely` +
        (w.impossibleReads ? `, ${w.impossibleReads} IMPOSSIBLE READ(S)` : ''),
    );
  const c = r.chaos;
  if (c && c.faults.length > 0)
    lines.push(
      `  faults: ${c.faults.map((f) => f.label + (f.openedBefore ? ' (opened before the run)' : '')).join('; ')}` +
        (c.longestPtlHold ? ` — longest PT-lock hold ${c.longestPtlHold.ms.toFixed(1)} ms` : ''),
    );
  if (c && c.locksLeft.length > 0)
    lines.push(
      `  LOCKS LEFT HELD: ${c.locksLeft.map((l) => `${l.lock} of pid ${l.pid} by ${l.owner}`).join(', ')}`,
    );
  if (r.fsck?.error) lines.push(`  fsck could not read the state: ${r.fsck.error}`);
  else if (r.fsck && !r.fsck.ok) {
    const known = new Set(r.expectedFsck ?? []);
    const asExpected = r.fsck.findings.every((f) => known.has(f.code));
    lines.push(
      `  ${asExpected ? 'fsck (as the scenario expects: a recovery not built yet)' : 'FSCK'}: ${r.fsck.findings.length} finding(s), first: ${r.fsck.findings[0].code} ${r.fsck.findings[0].key}: ${r.fsck.findings[0].message}`,
    );
  }
  lines.push(`  results: ${resultsPath}`);
  if (r.report) lines.push(`  report:  ${r.report.html}`);
  return lines.join('\n');
}

/** One trace event (as results.json keeps it) on one line: its id, kind, ts and other fields. */
export function eventLine(e: unknown): string {
  if (typeof e !== 'object' || e === null) return String(e);
  const {
    id,
    ts,
    service: _service,
    instance: _instance,
    kind,
    ...rest
  } = e as Record<string, unknown>;
  const at = typeof ts === 'number' ? ts.toFixed(3) : String(ts);
  return `${String(id)} ${String(kind)} ts=${at} ${JSON.stringify(rest)}`.slice(0, 400);
}
