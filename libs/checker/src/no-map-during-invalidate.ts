/**
 * no-map-during-invalidate — no secondary mapping is installed inside a range whose
 * invalidation is between start and end.
 *
 * Models: mmu_notifier_retry() (KVM's mmu_invalidate_in_progress + range, the interval
 * notifier's odd sequence): a secondary-MMU fault that resolved its pfn before or during an
 * invalidation must not install it until the invalidation's end, or the device keeps a
 * translation to a page the mm is about to free. The skip-seq-recheck injection breaks it:
 *
 *   hca0 fault path                           hca0 notifier                 mm
 *   seq = read_begin; gup(addr) → pfn 12
 *                                             recv range_start [a, b)       clear PTEs
 *   (no re-check of seq)
 *   smap.set addr → pfn 12       ← violation: inside [a, b) while its invalidation is open
 *                                             recv range_end                free pfn 12
 *
 * Per agent, each invalidation it received is a window: from its mn.recv of
 * invalidate_range_start (inv, pid, [start, end)) to its mn.recv of invalidate_range_end of
 * the same inv (or the end of the trace); for invalidate_page, from its mn.recv
 * (inv, pid, start = the page address) to its mn.done of that inv, over that one 4096-byte
 * page. An smap.set by the same agent, for that pid, with addr in [start, end), strictly
 * inside the window (after the recv that opens it, before the event that closes it) is a
 * violation: [the smap.set, the recv that opened each window it fell into]. A retransmitted
 * callback (a second recv of the same inv) neither reopens nor moves a window; a recv
 * without its range (start/end absent) opens none. `checked` counts the smap.set events.
 */
import { type EventOf, PAGE_SIZE, type TraceEvent, hex } from '@mmlab/protocol';
import type { Rule, Violation } from './types';

type Recv = EventOf<'mn.recv'>;

interface Window {
  recv: Recv;
  start: number;
  end: number;
}

/** Order within one ts: closes (0), installs (1), opens (2); -1: not ours. */
function phase(e: TraceEvent): number {
  if (e.kind === 'smap.set') return 1;
  if (e.kind === 'mn.done') return e.callback === 'invalidate_page' ? 0 : -1;
  if (e.kind !== 'mn.recv') return -1;
  if (e.callback === 'invalidate_range_end') return 0;
  if (e.callback === 'invalidate_range_start' || e.callback === 'invalidate_page') return 2;
  return -1;
}

export const noMapDuringInvalidate: Rule<'no-map-during-invalidate'> = {
  name: 'no-map-during-invalidate',
  models: 'mmu_notifier_retry(): no secondary PTE installed while its range is being invalidated',
  check(events) {
    /** open windows per agent, by `${kind}|${inv}` */
    const open = new Map<string, Map<string, Window>>();
    /** windows once opened (open or closed), `${agent}|${kind}|${inv}`: never reopened */
    const seen = new Set<string>();
    const violations: Violation[] = [];
    let checked = 0;

    const apply = (e: TraceEvent) => {
      if (e.kind === 'mn.recv' || e.kind === 'mn.done') {
        const kind =
          e.callback === 'invalidate_page'
            ? 'page'
            : e.callback === 'invalidate_range_start' || e.callback === 'invalidate_range_end'
              ? 'range'
              : null;
        if (kind === null) return;
        const key = `${kind}|${e.inv}`;
        const closes =
          e.kind === 'mn.done' ? kind === 'page' : e.callback === 'invalidate_range_end';
        if (closes) {
          open.get(e.agent)?.delete(key);
          seen.add(`${e.agent}|${key}`);
          return;
        }
        if (e.kind !== 'mn.recv' || e.start === undefined || seen.has(`${e.agent}|${key}`)) return;
        const end = kind === 'page' ? e.start + PAGE_SIZE : e.end;
        if (end === undefined) return;
        seen.add(`${e.agent}|${key}`);
        let windows = open.get(e.agent);
        if (!windows) open.set(e.agent, (windows = new Map<string, Window>()));
        windows.set(key, { recv: e, start: e.start, end });
      } else if (e.kind === 'smap.set') {
        checked++;
        const inside = [...(open.get(e.agent)?.values() ?? [])].filter(
          (w) => w.recv.pid === e.pid && e.addr >= w.start && e.addr < w.end,
        );
        if (inside.length === 0) return;
        const w = inside[0];
        violations.push({
          message:
            `${e.agent} installed pid ${e.pid} ${hex(e.addr)} → pfn ${e.pfn} gen ${e.gen} while its ` +
            `${w.recv.callback} of [${hex(w.start)}, ${hex(w.end)}) (inv ${w.recv.inv}) was in progress` +
            (inside.length > 1 ? ` (and ${inside.length - 1} more)` : ''),
          events: [e, ...inside.map((x) => x.recv)],
        });
      }
    };

    // Sweep in ts order; within one ts: closes, then installs, then opens ("strictly inside").
    for (let i = 0; i < events.length;) {
      let j = i;
      while (j < events.length && events[j].ts === events[i].ts) j++;
      const group = events.slice(i, j).filter((e) => phase(e) >= 0);
      for (let p = 0; p <= 2; p++) for (const e of group) if (phase(e) === p) apply(e);
      i = j;
    }
    return { checked, violations };
  },
};
