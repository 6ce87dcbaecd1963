/** Every benchmark of `npm run bench`, in the order they run and appear in the table. */
import type { Benchmark } from '../lib/harness';
import { dispatchFanout } from './dispatch-fanout';
import { faultFloor } from './fault-floor';
import { faultThroughput } from './fault-throughput';
import { faultsUnderInvalidation } from './faults-under-invalidation';
import { mmuLock } from './mmu-lock';
import { observerIntake } from './observer-intake';
import { odpVsPinned } from './odp-vs-pinned';
import { ptlockVsSleep } from './ptlock-vs-sleep';
import { stateFootprint } from './state-footprint';

export const BENCHMARKS: readonly Benchmark[] = [
  ptlockVsSleep,
  faultsUnderInvalidation,
  dispatchFanout,
  faultFloor,
  faultThroughput,
  odpVsPinned,
  stateFootprint,
  observerIntake,
  mmuLock,
];
