/**
 * The observer's HTTP side from @mmlab/runtime: GET /metrics with the lab's violations (the
 * checker over the stored trace, at scrape time) and the intake's counters, and GET /health
 * (Terminus) on the intake's NATS connection. The observer keeps no Redis client (it never
 * reads the lab's state), so its /health checks NATS only.
 */
import type { DynamicModule } from '@nestjs/common';
import { checkInvariants, implementedInvariants } from '@mmlab/checker';
import {
  type LabMetrics,
  type NatsLinkState,
  ServiceHttpModule,
  processMetrics,
} from '@mmlab/runtime';
import type { ObserverSettings } from './observer.config';
import type { TraceIntake } from './trace-intake';
import type { TraceStore } from './trace-store';

/**
 * Violations per invariant in the stored trace. The checker runs again only when the store
 * changed. Between two resets the counts never go down: when the ring drops old events with
 * their violations, the previous count is kept (a reset, seen as fewer events taken in, starts
 * from what is stored).
 */
export function violationCounter(
  store: TraceStore,
  softlockupMs: number,
): () => Record<string, number> {
  let seen: { key: string; takenIn: number; counts: Record<string, number> } | null = null;
  return () => {
    const takenIn = store.size + store.dropped;
    const key = `${store.size}/${store.dropped}/${JSON.stringify(store.byKind())}`;
    if (seen?.key === key) return seen.counts;
    const counts: Record<string, number> = {};
    const reset = seen === null || takenIn < seen.takenIn;
    for (const v of checkInvariants(store.all(), { softlockupMs }))
      counts[v.name] = reset
        ? v.violations.length
        : Math.max(v.violations.length, seen!.counts[v.name] ?? 0);
    seen = { key, takenIn, counts };
    return counts;
  };
}

export function intakeLink(intake: TraceIntake): NatsLinkState {
  if (intake.healthy) return { up: true, state: 'connected' };
  return { up: false, state: intake.nc.isClosed() ? 'closed' : 'disconnected' };
}

/** ServiceHttpModule for the observer, its metrics fed from store, intake and checker. */
export function observerHttpModule(
  p: { store: TraceStore; intake: TraceIntake; settings: ObserverSettings },
  metrics: LabMetrics = processMetrics(),
): DynamicModule {
  const { store, intake } = p;
  metrics.trackObserver({
    invariants: implementedInvariants(),
    violations: violationCounter(store, p.settings.softlockupMs),
    intake: () => ({
      stored: store.size + store.dropped,
      rejected: intake.rejected,
      dropped: store.dropped,
      inStore: store.size,
    }),
  });
  return ServiceHttpModule.register({ metrics, nats: () => intakeLink(intake) });
}
