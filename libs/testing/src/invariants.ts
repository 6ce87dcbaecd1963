/**
 * The invariants a whole trace breaks, one line each ("name: message; message"), for a test
 * that expects none: the checker (libs/checker) at the lab's soft-lockup threshold.
 */
import type { TraceEvent } from '@mmlab/protocol';
import { checkInvariants } from '@mmlab/checker';

export function violatedInvariants(events: readonly TraceEvent[], softlockupMs = 1000): string[] {
  return checkInvariants(events, { softlockupMs })
    .filter((v) => !v.ok)
    .map((v) => `${v.name}: ${v.violations.map((x) => x.message).join('; ')}`);
}
