/** The few lines `mmlab run` prints when it is done: verdict, what failed, where to look. */
import type { RunResults } from '@mmlab/scenario';

export function formatSummary(r: RunResults, resultsPath: string): string {
  const ok = r.steps.filter((s) => s.ok).length;
  const violated = r.invariants.filter((i) => !i.ok);
  const lines = [
    `${r.name}: ${r.verdict.toUpperCase()} — ${ok}/${r.steps.length} steps ok, ` +
      `${violated.length} of ${r.invariants.length} invariants violated, ${(r.durationMs / 1000).toFixed(1)} s`,
  ];
  if (r.error) lines.push(`  run did not complete: ${r.error}`);
  for (const s of r.steps.filter((x) => !x.ok))
    lines.push(
      `  step ${s.index} (line ${s.line}) ${s.op}: ${s.reason ?? 'not ok'}` +
        (s.error ? ` [${s.error.code}: ${s.error.message}]` : ''),
    );
  for (const i of violated)
    lines.push(
      `  invariant ${i.name}: ${i.violations.length} violation(s), first: ${i.violations[0]?.message ?? '?'}`,
    );
  lines.push(`  results: ${resultsPath}`);
  return lines.join('\n');
}
