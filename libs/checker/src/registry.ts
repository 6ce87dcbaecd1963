/**
 * The rule registry. Adding an invariant's rule is one file named after it plus one line here;
 * INVARIANT_NAMES already lists every name, so the type says which ones are still missing.
 */
import { boundedPtlockHold } from './bounded-ptlock-hold';
import { coherentReads } from './coherent-reads';
import { fencedWrites } from './fenced-writes';
import { noStaleAccess } from './no-stale-access';
import type { RuleRegistry } from './types';

// Not implemented yet: no-sleep-under-ptlock, paired-range, teardown-before-free,
// no-map-during-invalidate.
export const RULES: RuleRegistry = {
  'no-stale-access': noStaleAccess,
  'coherent-reads': coherentReads,
  'fenced-writes': fencedWrites,
  'bounded-ptlock-hold': boundedPtlockHold,
};
