/**
 * The checker's vocabulary: invariant names (part of the lab's interface: scenario files,
 * results.json and the observer's HTTP API use them), verdicts, and the shape of a rule.
 */
import type { TraceEvent } from '@mmlab/protocol';

/** Every invariant of DESIGN.md §4, in the order of its table. */
export const INVARIANT_NAMES = [
  'no-sleep-under-ptlock',
  'paired-range',
  'teardown-before-free',
  'no-stale-access',
  'no-map-during-invalidate',
  'coherent-reads',
  'fenced-writes',
  'bounded-ptlock-hold',
] as const;
export type InvariantName = (typeof INVARIANT_NAMES)[number];

export const isInvariantName = (s: string): s is InvariantName =>
  (INVARIANT_NAMES as readonly string[]).includes(s);

/** One breach of an invariant, with the events that show it (the offender first). */
export interface Violation {
  message: string;
  events: TraceEvent[];
}

/**
 * The verdict of one rule over one trace. `checked` counts the situations the rule examined
 * (accesses, reads, fenced writes, lock holds), so that "ok with nothing checked" is visible.
 */
export interface InvariantVerdict {
  name: InvariantName;
  ok: boolean;
  checked: number;
  violations: Violation[];
}

export interface CheckOptions {
  /** bounded-ptlock-hold: the soft-lockup watchdog threshold (kernel.watchdog_thresh). */
  softlockupMs: number;
}

export interface RuleResult {
  checked: number;
  violations: Violation[];
}

/** One invariant, checked over a whole trace. */
export interface Rule<N extends InvariantName = InvariantName> {
  readonly name: N;
  /** One line: the kernel concept (or debugging facility) this rule stands in for. */
  readonly models: string;
  /**
   * Check the trace. `events` is sorted by ts (stably: equal timestamps keep arrival order);
   * a rule must not modify it, and must not rely on anything but the events and opts.
   */
  check(events: readonly TraceEvent[], opts: CheckOptions): RuleResult;
}

/** The rule registry: an invariant whose rule is not written yet is simply absent. */
export type RuleRegistry = { readonly [N in InvariantName]?: Rule<N> };
