/**
 * paired-range — every invalidate_range_start gets exactly one invalidate_range_end with the
 * same (mm, start, end), on every path.
 *
 * Models: the mmun_start/mmun_end convention of the 2012 patch (the values given to
 * mmu_notifier_invalidate_range_start() are saved and passed unchanged to _end, on error
 * paths too) and KVM's WARN_ON(kvm->mmu_invalidate_in_progress < 0): a subscriber counts
 * starts and ends per range, so an end for another range, a missing end or a second end
 * leaves it blocking (or re-enabling) faults on the wrong addresses forever.
 *
 *   __split_huge_page_splitting (patch v1)     subscriber
 *   range_start(mm, haddr, haddr + HPAGE)      count++, zap [haddr, haddr + 2M)
 *   ...
 *   range_end(mm, address, address + HPAGE)    count-- for a range never started ← the haddr bug
 *
 * Pairing is by `inv` (one invalidation), not by position in the trace, so nesting and clock
 * skew between events do not matter. Per inv:
 *   - the first end must carry the start's (pid, start, end): else [start, end];
 *   - a start with no end by the end of the trace: [start];
 *   - an end with no start in the trace: [end] (each such end);
 *   - every end after the first: [start, first end, extra end];
 *   - every start after the first for the same inv: [first start, extra start] (an inv names
 *     one invalidation; two starts make its ends ambiguous).
 * The `event` field is not compared. `checked` counts the invalidations (distinct inv).
 */
import { type EventOf, hex } from '@mmlab/protocol';
import type { Rule, Violation } from './types';

type Start = EventOf<'mn.range_start'>;
type End = EventOf<'mn.range_end'>;

const range = (e: Start | End) => `[${hex(e.start)}, ${hex(e.end)}) of pid ${e.pid}`;

export const pairedRange: Rule<'paired-range'> = {
  name: 'paired-range',
  models: 'the mmun_start/mmun_end convention: range_end gets exactly the range given to start',
  check(events) {
    const invs = new Map<string, { starts: Start[]; ends: End[] }>();
    const of = (inv: string) => {
      let p = invs.get(inv);
      if (!p) invs.set(inv, (p = { starts: [], ends: [] }));
      return p;
    };
    for (const e of events) {
      if (e.kind === 'mn.range_start') of(e.inv).starts.push(e);
      else if (e.kind === 'mn.range_end') of(e.inv).ends.push(e);
    }

    const violations: Violation[] = [];
    for (const [inv, { starts, ends }] of invs) {
      if (starts.length === 0) {
        for (const end of ends)
          violations.push({
            message: `invalidate_range_end of ${range(end)} (inv ${inv}) has no invalidate_range_start`,
            events: [end],
          });
        continue;
      }
      const [start, ...extraStarts] = starts;
      for (const s of extraStarts)
        violations.push({
          message: `invalidate_range_start of ${range(s)} reuses inv ${inv}, already started for ${range(start)}`,
          events: [start, s],
        });
      if (ends.length === 0) {
        violations.push({
          message: `invalidate_range_start of ${range(start)} (inv ${inv}) never got its invalidate_range_end`,
          events: [start],
        });
        continue;
      }
      const [end, ...extraEnds] = ends;
      if (end.pid !== start.pid || end.start !== start.start || end.end !== start.end)
        violations.push({
          message: `invalidate_range_end of inv ${inv} carries ${range(end)}, but its start was ${range(start)}`,
          events: [start, end],
        });
      for (const x of extraEnds)
        violations.push({
          message: `invalidate_range_end of ${range(x)} is a second end for inv ${inv}`,
          events: [start, end, x],
        });
    }
    return { checked: invs.size, violations };
  },
};
