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
 * anonymous memory). A vma.map, vma.unmap or madvise(DONTNEED) (of a private mapping: a shared
 * one keeps its pages) covering the page before R started resets the
 * register (a new mapping starts zeroed); one that happens while R is in flight makes zero
 * acceptable besides the old values.
 *
 * Registers move with their pages. fork (process.fork, parent → child at ts F): each page of
 * the child starts as the parent's page was at F (the parent's writes that started before F
 * and its resets before F), and the vma.map events the fork emits for the child (same op) are
 * not resets; afterwards the two evolve apart (private copy-on-write). Pages of a MAP_SHARED
 * mapping are one register for both processes after the fork: their reads are not checked
 * (a register spanning processes is not modelled). Nor are the pages of a mapping of a file
 * (vma.map with a file): a shared one is the file's page, which write() and every other mapping
 * change, and a private one starts as the file's page — its reads are checked only once the
 * process wrote the page itself (its private copy), nor a window remap_file_pages pointed at
 * other pages of its shared object (vma.remap: a nonlinear one makes every page of the shared
 * mapping it is in an alias of another). mremap (vma.move of [from, from + pages)
 * to `to` at ts M): page `to + i` starts as page `from + i` was at M, and the old range is
 * reset.
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
type Reset =
  | EventOf<'vma.map'>
  | EventOf<'vma.unmap'>
  | EventOf<'vma.move'>
  | EventOf<'madvise'>
  | EventOf<'vma.remap'>;
type Fork = EventOf<'process.fork'>;
type Move = EventOf<'vma.move'>;

/** One virtual page's history: its reads, and its writes sorted by tEnd. */
interface PageHistory {
  pid: number;
  vpn: number;
  reads: Access[];
  writes: Access[];
}

/** The range a reset zeroes: a mapping's, or the old range of an mremap. */
const rangeOf = (r: Reset): [number, number] =>
  r.kind === 'vma.move' ? [r.from, r.from + r.pages * PAGE_SIZE] : [r.start, r.end];

const covers = (r: Reset, vpn: number): boolean => {
  const [start, end] = rangeOf(r);
  return start < addrOf(vpn) + PAGE_SIZE && end > addrOf(vpn);
};

/** Where a page's content came from at ts: a page of the parent or of the old range, or none. */
interface Link {
  ts: number;
  src: { pid: number; vpn: number } | null;
}

export const coherentReads: Rule<'coherent-reads'> = {
  name: 'coherent-reads',
  models:
    'memory coherence: a load sees the last store to the virtual page (linearizable register)',
  check(events) {
    const pages = new Map<string, PageHistory>();
    const resetsOf = new Map<number, Reset[]>();
    const forkOf = new Map<number, Fork>(); // child pid → its fork
    const movesOf = new Map<number, Move[]>();
    /** per pid: [from ts, start, end) of MAP_SHARED ranges shared with another process by fork */
    const sharedOf = new Map<number, Array<{ ts: number; start: number; end: number }>>();
    /** per pid: its MAP_SHARED mappings so far (madvise(DONTNEED) does not zero them) */
    const sharedMapsOf = new Map<number, Array<EventOf<'vma.map'>>>();
    const push = <K, V>(m: Map<K, V[]>, k: K, v: V) => {
      const l = m.get(k);
      if (l) l.push(v);
      else m.set(k, [v]);
    };
    for (const e of events) if (e.kind === 'process.fork') forkOf.set(e.child, e);
    for (const e of events) {
      if (e.kind === 'access') {
        const vpn = vpnOf(e.addr);
        const key = `${e.pid}|${vpn}`;
        let p = pages.get(key);
        if (!p) pages.set(key, (p = { pid: e.pid, vpn, reads: [], writes: [] }));
        (e.rw === 'write' ? p.writes : p.reads).push(e);
      } else if (e.kind === 'vma.map') {
        if (e.flags.includes('shared')) push(sharedMapsOf, e.pid, e);
        const fork = forkOf.get(e.pid);
        if (fork && e.op !== undefined && e.op === fork.op) {
          // the child's copy of a parent mapping: inherited, not a fresh (zeroed) one
          if (e.flags.includes('shared'))
            for (const pid of [fork.pid, fork.child])
              push(sharedOf, pid, { ts: fork.ts, start: e.start, end: e.end });
        } else push(resetsOf, e.pid, e);
      } else if (e.kind === 'madvise') {
        // DONTNEED of a shared mapping drops the PTEs, not the pages: the shmem object or the
        // file keeps them, and the next touch finds them again
        const shared = (sharedMapsOf.get(e.pid) ?? []).some(
          (m) => m.start <= e.start && e.start < m.end,
        );
        if (!shared) push(resetsOf, e.pid, e);
      } else if (e.kind === 'vma.remap') {
        // a nonlinear window aliases pages of the whole shared mapping it is in
        const m = (sharedMapsOf.get(e.pid) ?? []).find(
          (x) => x.start <= e.start && e.start < x.end,
        );
        push(resetsOf, e.pid, m && e.nonlinear ? { ...e, start: m.start, end: m.end } : e);
      } else if (e.kind === 'vma.unmap') push(resetsOf, e.pid, e);
      else if (e.kind === 'vma.move') {
        push(resetsOf, e.pid, e);
        push(movesOf, e.pid, e);
      }
    }

    /** The last link into (pid, vpn) before ts `until`: the child's fork, or an mremap there. */
    const lastLink = (pid: number, vpn: number, until: number): Link | undefined => {
      let link: Link | undefined;
      const fork = forkOf.get(pid);
      if (fork && fork.ts < until) link = { ts: fork.ts, src: { pid: fork.pid, vpn } };
      for (const m of movesOf.get(pid) ?? []) {
        if (m.ts >= until || (link && m.ts < link.ts)) continue;
        const i = vpn - vpnOf(m.to);
        if (i < 0 || i >= m.newPages) continue;
        link = { ts: m.ts, src: i < m.pages ? { pid, vpn: vpnOf(m.from) + i } : null };
      }
      return link;
    };
    /**
     * Everything that shaped (pid, vpn)'s register before `until`: writes that started before
     * it and resets before it, following links back to where the content came from.
     */
    const effective = (
      pid: number,
      vpn: number,
      until: number,
    ): { writes: Access[]; resets: Reset[] } => {
      const own = pages.get(`${pid}|${vpn}`)?.writes ?? [];
      const ownResets = (resetsOf.get(pid) ?? []).filter((r) => covers(r, vpn));
      const link = lastLink(pid, vpn, until);
      const inherited = link?.src
        ? effective(link.src.pid, link.src.vpn, link.ts)
        : { writes: [], resets: [] };
      const after = link?.ts ?? -Infinity;
      return {
        writes: [...inherited.writes, ...own.filter((w) => w.tEnd > after)].filter(
          (w) => w.tStart < until,
        ),
        resets: [...inherited.resets, ...ownResets.filter((r) => r.ts > after)].filter(
          (r) => r.ts < until,
        ),
      };
    };
    const shared = (r: Access): boolean =>
      (sharedOf.get(r.pid) ?? []).some((x) => r.tEnd > x.ts && r.addr >= x.start && r.addr < x.end);

    const violations: Violation[] = [];
    let checked = 0;
    for (const p of pages.values()) {
      if (p.reads.length === 0) continue;
      const history = effective(p.pid, p.vpn, Infinity);
      const writes = history.writes.sort((a, b) => a.tEnd - b.tEnd);
      const ends = writes.map((w) => w.tEnd);
      // minStartFrom[i]: the earliest tStart among writes[i..]; writes[i..] are those that end
      // at or after a read's start, so one of them overlaps the read iff this is <= its tEnd.
      const minStartFrom = new Array<number>(writes.length + 1).fill(Infinity);
      for (let i = writes.length - 1; i >= 0; i--)
        minStartFrom[i] = Math.min(writes[i].tStart, minStartFrom[i + 1]);
      const resets = history.resets.sort((a, b) => a.ts - b.ts);
      const resetTs = resets.map((r) => r.ts);

      for (const r of p.reads) {
        if (shared(r)) continue;
        const hi = lowerBound(ends, r.tStart); // writes[0 .. hi) ended before r started
        if (minStartFrom[hi] <= r.tEnd) continue; // a write overlaps r: any value goes
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
        // A mapping of a file starts with the file's content, and a shared one is the file's
        // page itself (written by write() and every other mapping of it): not this register.
        // A private one is checked once its process wrote the page (its copy), not before.
        const file = reset?.kind === 'vma.map' && reset.file !== undefined;
        if (file && (reset.flags.includes('shared') || last.length === 0 || during)) continue;
        if (reset?.kind === 'vma.remap') continue; // other pages of a shared object: its own
        checked++;
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
          // and the first write that did not end before r started, if any: what a reader of
          // the report compares r's interval with
          events: [
            ...(last.length > 0 ? [r, ...last] : reset ? [r, reset] : [r]),
            ...writes.slice(hi, hi + 1),
          ],
        });
      }
    }
    return { checked, violations };
  },
};
