/**
 * coherent-reads — a read that does not overlap a write returns the last value written to
 * that virtual page, whichever agent reads or wrote.
 *
 * Models: cache/TLB coherence as user space sees it (a linearizable register per virtual
 * page): whatever CPUs, vCPUs and the HCA did to their translations, a load sees the last
 * store to the page. Lost writes (a write landing on a frame the page no longer maps, a COW
 * copy taken before a device's last DMA) show up here.
 *
 * Each (pid, vpn) is a register. An access with rw=write writes its value over
 * [tStart, tEnd]; a read R is checked only when no write to the page overlaps
 * [R.tStart, R.tEnd]. R may return the value of any write W with W.tEnd < R.tStart that no
 * other such write W2 supersedes (W2.tStart > W.tEnd): several writes that overlap each
 * other, all before R, may each have been the last. None: the page reads as zero (fresh
 * anonymous memory). A vma.map or vma.unmap covering the page before R started resets the
 * register (a new mapping starts zeroed); one that happens while R is in flight makes zero
 * acceptable besides the old values.
 *
 *   cpu0                       cpu1
 *   write 5  [1, 2]
 *   write 6  [3, 5]            read [4, 6]  -> overlaps write 6: not checked
 *                              read [7, 8]  -> must return 6
 */
import { type EventOf, PAGE_SIZE, addrOf, hex, vpnOf } from '@mmlab/protocol';
import { lowerBound } from './events';
import type { Rule, Violation } from './types';

type Access = EventOf<'access'>;
type Reset = EventOf<'vma.map'> | EventOf<'vma.unmap'>;

/** One virtual page's history: its reads, and its writes sorted by tEnd. */
interface PageHistory {
  pid: number;
  vpn: number;
  reads: Access[];
  writes: Access[];
}

const covers = (r: Reset, vpn: number): boolean =>
  r.start < addrOf(vpn) + PAGE_SIZE && r.end > addrOf(vpn);

export const coherentReads: Rule<'coherent-reads'> = {
  name: 'coherent-reads',
  models:
    'memory coherence: a load sees the last store to the virtual page (linearizable register)',
  check(events) {
    const pages = new Map<string, PageHistory>();
    const resetsOf = new Map<number, Reset[]>();
    for (const e of events) {
      if (e.kind === 'access') {
        const vpn = vpnOf(e.addr);
        const key = `${e.pid}|${vpn}`;
        let p = pages.get(key);
        if (!p) pages.set(key, (p = { pid: e.pid, vpn, reads: [], writes: [] }));
        (e.rw === 'write' ? p.writes : p.reads).push(e);
      } else if (e.kind === 'vma.map' || e.kind === 'vma.unmap') {
        const l = resetsOf.get(e.pid);
        if (l) l.push(e);
        else resetsOf.set(e.pid, [e]);
      }
    }

    const violations: Violation[] = [];
    let checked = 0;
    for (const p of pages.values()) {
      if (p.reads.length === 0) continue;
      const writes = [...p.writes].sort((a, b) => a.tEnd - b.tEnd);
      const ends = writes.map((w) => w.tEnd);
      // minStartFrom[i]: the earliest tStart among writes[i..]; writes[i..] are those that end
      // at or after a read's start, so one of them overlaps the read iff this is <= its tEnd.
      const minStartFrom = new Array<number>(writes.length + 1).fill(Infinity);
      for (let i = writes.length - 1; i >= 0; i--)
        minStartFrom[i] = Math.min(writes[i].tStart, minStartFrom[i + 1]);
      const resets = (resetsOf.get(p.pid) ?? []).filter((r) => covers(r, p.vpn)); // ts order
      const resetTs = resets.map((r) => r.ts);

      for (const r of p.reads) {
        const hi = lowerBound(ends, r.tStart); // writes[0 .. hi) ended before r started
        if (minStartFrom[hi] <= r.tEnd) continue; // a write overlaps r: any value goes
        checked++;
        const ri = lowerBound(resetTs, r.tStart) - 1; // last reset before r started
        const reset = ri >= 0 ? resets[ri] : undefined;
        const during = resets[ri + 1] !== undefined && resets[ri + 1].ts <= r.tEnd;
        const lo = reset ? lowerBound(ends, reset.ts) : 0; // writes ended before it are gone

        // The candidates, walked from the latest end backwards: W is superseded iff a write
        // ending later started after W ended. Once one is, so is every earlier-ending one.
        const last: Access[] = [];
        let maxStart = -Infinity;
        for (let i = hi - 1; i >= lo; i--) {
          if (writes[i].tEnd < maxStart) break;
          last.push(writes[i]);
          maxStart = Math.max(maxStart, writes[i].tStart);
        }
        const acceptable = new Set(last.map((w) => w.value));
        if (last.length === 0 || during) acceptable.add(0);
        if (acceptable.has(r.value)) continue;

        last.sort((a, b) => a.ts - b.ts);
        const why =
          last.length > 0
            ? `last written by ${[...new Set(last.map((w) => w.agent))].join(', ')}`
            : reset
              ? `zeroed by ${reset.kind} at ${reset.ts}`
              : 'never written';
        violations.push({
          message:
            `pid ${p.pid} page ${hex(addrOf(p.vpn))}: ${r.agent} read ${r.value}, ` +
            `acceptable: ${[...acceptable].sort((a, b) => a - b).join(' | ')} (${why})`,
          events: last.length > 0 ? [r, ...last] : reset ? [r, reset] : [r],
        });
      }
    }
    return { checked, violations };
  },
};
