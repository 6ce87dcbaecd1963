/**
 * The invariant checker: every implemented rule of the registry over one trace.
 * Pure: no I/O, no clock; the same events give the same verdicts.
 */
import type { TraceEvent } from '@mmlab/protocol';
import { sortByTs } from './events';
import { RULES } from './registry';
import {
  type CheckOptions,
  INVARIANT_NAMES,
  type InvariantVerdict,
  type RuleRegistry,
} from './types';

/** The names that have a rule, in INVARIANT_NAMES order. */
export function implementedInvariants(rules: RuleRegistry = RULES): InvariantVerdict['name'][] {
  return INVARIANT_NAMES.filter((n) => rules[n] !== undefined);
}

/**
 * Check a trace. Events may come in any order (they arrive interleaved from many services);
 * they are sorted by ts, stably, first. One verdict per implemented rule, in INVARIANT_NAMES
 * order; each rule's violations are ordered by the ts of their first (offending) event.
 */
export function checkInvariants(
  events: readonly TraceEvent[],
  opts: CheckOptions,
  rules: RuleRegistry = RULES,
): InvariantVerdict[] {
  if (!Number.isFinite(opts.softlockupMs) || opts.softlockupMs < 0)
    throw new RangeError(`softlockupMs must be a non-negative number, got ${opts.softlockupMs}`);
  const sorted = sortByTs(events);
  return implementedInvariants(rules).map((name) => {
    const { checked, violations } = rules[name]!.check(sorted, opts);
    const ordered = [...violations].sort((a, b) => a.events[0].ts - b.events[0].ts);
    return { name, ok: ordered.length === 0, checked, violations: ordered };
  });
}
