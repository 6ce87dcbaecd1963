export { checkInvariants, implementedInvariants } from './check';
export { RULES } from './registry';
export { sortByTs } from './events';
export {
  INVARIANT_NAMES,
  isInvariantName,
  type CheckOptions,
  type InvariantName,
  type InvariantVerdict,
  type Rule,
  type RuleRegistry,
  type RuleResult,
  type Violation,
} from './types';
