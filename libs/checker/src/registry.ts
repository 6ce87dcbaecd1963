/**
 * The rule registry: one rule per invariant of INVARIANT_NAMES (DESIGN.md §4), each in a file
 * named after it. Adding an invariant is one name there, one file and one line here.
 */
import { boundedPtlockHold } from './bounded-ptlock-hold';
import { coherentReads } from './coherent-reads';
import { fencedWrites } from './fenced-writes';
import { noMapDuringInvalidate } from './no-map-during-invalidate';
import { noSleepUnderPtlock } from './no-sleep-under-ptlock';
import { noStaleAccess } from './no-stale-access';
import { pairedRange } from './paired-range';
import { teardownBeforeFree } from './teardown-before-free';
import type { RuleRegistry } from './types';

export const RULES: RuleRegistry = {
  'no-sleep-under-ptlock': noSleepUnderPtlock,
  'paired-range': pairedRange,
  'teardown-before-free': teardownBeforeFree,
  'no-stale-access': noStaleAccess,
  'no-map-during-invalidate': noMapDuringInvalidate,
  'coherent-reads': coherentReads,
  'fenced-writes': fencedWrites,
  'bounded-ptlock-hold': boundedPtlockHold,
};
