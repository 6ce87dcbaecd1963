/**
 * no-stale-access — no CPU, vCPU or device access uses a translation whose frame `gen` is stale.
 *
 * Models: KASAN's use-after-free report for a page reached through a TLB entry, sPTE or MTT
 * entry that outlived the mapping (the bug invalidate_page/invalidate_range_start prevent).
 *
 * Every translation remembers the gen of the frame it was made for; the access event records
 * the gen the frame had, and whether it was on the free list, when the access landed. Either
 * mismatch means the mm freed (or freed and reallocated) the frame before tearing down every
 * translation to it.
 */
import { hex } from '@mmlab/protocol';
import { isKind } from './events';
import type { Rule, Violation } from './types';

export const noStaleAccess: Rule<'no-stale-access'> = {
  name: 'no-stale-access',
  models: 'KASAN use-after-free through a stale TLB entry, sPTE or MTT entry',
  check(events) {
    const violations: Violation[] = [];
    let checked = 0;
    for (const a of events.filter(isKind('access'))) {
      checked++;
      if (a.gen === a.frameGen && !a.frameFree) continue;
      const frame = a.frameFree
        ? 'the frame is free'
        : `the frame is now gen ${a.frameGen} (reallocated)`;
      violations.push({
        message:
          `${a.agent} ${a.rw} of pid ${a.pid} at ${hex(a.addr)} used a translation to pfn ${a.pfn} ` +
          `gen ${a.gen}, but ${frame}`,
        events: [a],
      });
    }
    return { checked, violations };
  },
};
