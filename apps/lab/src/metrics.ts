/**
 * The numbers of one run, from its trace: fault latency (fault.end durMs), PT-lock hold times
 * (ptl.release heldMs), event counts, and the change_pte KVM got with no sPTE left to update. Comparing patched with legacy starts here.
 */
import type { TraceEvent } from '@mmlab/protocol';
import type { RunMetrics } from '@mmlab/scenario';

/** Nearest-rank percentile of an ascending array; null when empty. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

const ascending = (xs: number[]): number[] => xs.sort((a, b) => a - b);

export function computeMetrics(events: readonly TraceEvent[]): RunMetrics {
  const faultMs: number[] = [];
  const holdMs: number[] = [];
  const byKind: Record<string, number> = {};
  const changePte = { count: 0, noSpte: 0 };
  for (const e of events) {
    byKind[e.kind] = (byKind[e.kind] ?? 0) + 1;
    if (e.kind === 'kvm.change_pte') {
      changePte.count++;
      if (!e.found) changePte.noSpte++;
    }
    if (e.kind === 'fault.end') faultMs.push(e.durMs);
    else if (e.kind === 'ptl.release') holdMs.push(e.heldMs);
  }
  const faults = ascending(faultMs);
  const holds = ascending(holdMs);
  return {
    faults: {
      count: faults.length,
      p50Ms: percentile(faults, 50),
      p90Ms: percentile(faults, 90),
      p99Ms: percentile(faults, 99),
      maxMs: percentile(faults, 100),
    },
    ptlHold: {
      count: holds.length,
      p50Ms: percentile(holds, 50),
      p99Ms: percentile(holds, 99),
      maxMs: percentile(holds, 100),
    },
    events: { total: events.length, byKind },
    ...(changePte.count > 0 && { changePte }),
  };
}
