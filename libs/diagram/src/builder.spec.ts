import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { DiagramBuilder, buildDiagram } from './builder';
import { loadTrace, loadViolations } from './fixtures/load';
import { syntheticTrace } from './synthetic';
import type { DiagramModel, Message } from './types';

const rowOf = (m: DiagramModel, id: string): number => {
  const r = m.rows.find((x) => x.event.id === id);
  if (!r) throw new Error(`no row for ${id}`);
  return r.row;
};
const idsOfGroup = (m: DiagramModel, inv: string): string[] => {
  const g = m.groups.find((x) => x.inv === inv);
  if (!g) throw new Error(`no group ${inv}`);
  return g.rows.map((r) => m.rows[r - m.firstRow].event.id);
};
/** A model without its version, for comparing two builds. */
const shape = (m: DiagramModel) => ({
  lifelines: m.lifelines,
  rows: m.rows.map((r) => [r.row, r.event.id, r.lifeline, r.inv]),
  messages: m.messages,
  bars: m.bars,
  openBars: m.openBars,
  groups: m.groups,
  markers: m.markers,
});

describe('KVM in examples/kvm/guest-write-host-read.yaml (a real trace)', () => {
  const m = buildDiagram(loadTrace('kvm-guest-write-host-read'));
  const INV = 'mm-1/munmap#3~25bf6090.1';

  it('has a subscriber lifeline for kvm0, after the mm replicas and the CPU', () => {
    expect(m.lifelines.filter((l) => l.kind !== 'other').map((l) => [l.id, l.kind])).toEqual([
      ['mm-0', 'mm'],
      ['mm-1', 'mm'],
      ['cpu0', 'cpu'],
      ['kvm0', 'subscriber'],
    ]);
  });

  it('draws each guest fault as a bar on kvm0, with its gup arrows to mm and back', () => {
    const guest = m.bars.filter((b) => b.kind === 'npf' && b.lifeline === 'kvm0');
    expect(guest.map((b) => [b.label, b.events])).toEqual([
      ['guest fault ok', ['kvm0:1', 'kvm0:4']],
      ['guest fault ok', ['kvm0:6', 'kvm0:9']],
      ['guest fault ok', ['kvm0:11', 'kvm0:14']],
      // after the munmap: mm answers SIGSEGV, the guest access fails with EFAULT
      ['guest fault EFAULT', ['kvm0:24', 'kvm0:25']],
    ]);
    const arrows = m.messages
      .filter((x) => x.kind === 'npf' || x.kind === 'npf-reply')
      .map((x) => [x.kind, x.from, x.to, x.label]);
    expect(arrows.slice(0, 2)).toEqual([
      ['npf', 'kvm0', 'mm-0', 'guest fault write'],
      ['npf-reply', 'mm-0', 'kvm0', 'ok'],
    ]);
    expect(arrows.at(-1)).toEqual(['npf-reply', 'mm-1', 'kvm0', 'EFAULT']);
  });

  it("groups the munmap with kvm0's zap under mmu_lock, and the unregister's release", () => {
    expect(m.groups.map((g) => [g.inv, g.kind, g.subscribers, g.complete])).toEqual([
      [INV, 'range', ['kvm0'], true],
      ['mm-0/mn_unregister#6~2778964c.1', 'release', ['kvm0'], true],
    ]);
    const ids = idsOfGroup(m, INV);
    // the three sPTE zaps and the mmu_lock hold of kvm0's invalidate_range_start
    for (const id of ['kvm0:16', 'kvm0:17', 'kvm0:18', 'kvm0:19', 'kvm0:20', 'kvm0:21'])
      expect(ids).toContain(id);
    // the guest faults before and after are not in it
    for (const id of ['kvm0:14', 'kvm0:24']) expect(ids).not.toContain(id);
  });
});

describe('the munmap of examples/odp-munmap.yaml (a real trace)', () => {
  const events = loadTrace('odp-munmap');
  const m = buildDiagram(events);
  const INV = 'mm-1/munmap#4~1';

  it('has a lifeline per instance: mm replicas, CPUs (cpu1 only as a faulting agent), the HCA', () => {
    expect(m.lifelines.map((l) => [l.id, l.kind])).toEqual([
      ['mm-0', 'mm'],
      ['mm-1', 'mm'],
      ['cpu0', 'cpu'],
      ['cpu1', 'cpu'],
      ['hca0', 'subscriber'],
    ]);
    expect(m.rows).toHaveLength(events.length);
    expect(
      m.rows.every((r, i) => r.row === i && (i === 0 || r.event.ts >= m.rows[i - 1].event.ts)),
    ).toBe(true);
  });

  it('groups the invalidation across mm-1, hca0 and cpu0, from range_start to the last ack', () => {
    const g = m.groups.find((x) => x.inv === INV)!;
    expect(g).toMatchObject({
      kind: 'range',
      reason: 'unmap',
      pid: 1,
      mm: 'mm-1',
      start: 0x10000000,
      end: 0x10008000,
      subscribers: ['hca0'],
      complete: true,
      outstanding: 0,
      flagged: false,
    });
    expect([...g.lifelines].sort()).toEqual(['cpu0', 'hca0', 'mm-1']);
    const ids = idsOfGroup(m, INV);
    // the notifier events, the op's PT lock, PTE clears, the CPU's flush and the frees inside
    // the range, and the device's own events of its callback
    for (const id of ['mm-1:11', 'mm-1:12', 'hca0:9', 'hca0:10', 'hca0:11', 'hca0:12', 'mm-1:13'])
      expect(ids).toContain(id);
    for (const id of ['mm-1:14', 'mm-1:15', 'cpu0:3', 'mm-1:17', 'mm-1:18', 'mm-1:20', 'mm-1:22'])
      expect(ids).toContain(id);
    // the op's events before range_start and after range_end are not in it
    for (const id of ['mm-1:9', 'mm-1:10', 'mm-1:23']) expect(ids).not.toContain(id);
    expect(g.startRow).toBe(rowOf(m, 'mm-1:11'));
    expect(g.endRow).toBe(rowOf(m, 'mm-1:22'));
    expect(m.rows[rowOf(m, 'cpu0:3')].inv).toBe(INV);
  });

  it('draws the callbacks, the shootdown and the faults as arrows', () => {
    const msg = (kind: Message['kind'], from: string, to: string) =>
      m.messages.filter((x) => x.kind === kind && x.from === from && x.to === to);
    expect(msg('mn-call', 'mm-1', 'hca0').map((x) => [x.label, x.fromRow, x.toRow])).toEqual([
      ['invalidate_range_start', rowOf(m, 'mm-1:12'), rowOf(m, 'hca0:9')],
      ['invalidate_range_end', rowOf(m, 'mm-1:21'), rowOf(m, 'hca0:13')],
    ]);
    expect(msg('mn-ack', 'hca0', 'mm-1').map((x) => [x.fromRow, x.toRow])).toEqual([
      [rowOf(m, 'hca0:12'), rowOf(m, 'mm-1:13')],
      [rowOf(m, 'hca0:14'), rowOf(m, 'mm-1:22')],
    ]);
    // flush_tlb leaves mm-1 while it holds the PT lock (its last row before the flush: a PTE clear)
    expect(msg('shootdown', 'mm-1', 'cpu0')).toEqual([
      expect.objectContaining({
        fromRow: rowOf(m, 'mm-1:16'),
        toRow: rowOf(m, 'cpu0:3'),
        inv: INV,
      }),
    ]);
    // the HCA's network page fault: npf.begin → mm's fault.begin, mm's fault.end → npf.end
    expect(msg('npf', 'hca0', 'mm-0')[0]).toMatchObject({
      fromRow: rowOf(m, 'hca0:1'),
      toRow: rowOf(m, 'mm-0:2'),
    });
    expect(msg('npf-reply', 'mm-0', 'hca0')[0]).toMatchObject({
      fromRow: rowOf(m, 'mm-0:5'),
      toRow: rowOf(m, 'hca0:3'),
    });
    expect(msg('npf-reply', 'mm-1', 'hca0').map((x) => x.label)).toEqual(['ok', 'EFAULT']);
    // cpu1 traps to mm-1 after the munmap: SIGSEGV
    expect(msg('fault', 'cpu1', 'mm-1')).toHaveLength(1);
    expect(msg('fault-reply', 'mm-1', 'cpu1')[0].label).toBe('SIGSEGV');
    expect(m.messages.every((x) => x.fromRow <= x.toRow)).toBe(true);
  });

  it('draws the PT lock hold on mm-1 and the device sleeping in its callbacks', () => {
    const bars = (kind: string) => m.bars.filter((b) => b.kind === kind);
    expect(bars('ptl')).toEqual([
      expect.objectContaining({
        lifeline: 'mm-1',
        startRow: rowOf(m, 'mm-1:14'),
        endRow: rowOf(m, 'mm-1:17'),
        label: 'ptl:128',
        inv: INV,
      }),
    ]);
    expect(bars('sleep').map((b) => [b.lifeline, b.label, b.startRow, b.endRow])).toEqual([
      ['hca0', 'invalidate_range_start', rowOf(m, 'hca0:9'), rowOf(m, 'hca0:12')],
      ['hca0', 'invalidate_range_end', rowOf(m, 'hca0:13'), rowOf(m, 'hca0:14')],
      ['hca0', 'release', rowOf(m, 'hca0:17'), rowOf(m, 'hca0:18')],
    ]);
    expect(bars('npf')).toHaveLength(3);
    expect(m.bars.every((b) => b.endRow !== null)).toBe(true);
  });

  it('makes a release group of the unregister callback', () => {
    expect(m.groups.map((g) => [g.inv, g.kind, g.complete])).toEqual([
      [INV, 'range', true],
      ['mm-0/mn_unregister#3~1', 'release', true],
    ]);
  });
});

describe('the trace of examples/seed/do_wp_page.yaml (recorded as odp-fork-cow)', () => {
  const m = buildDiagram(loadTrace('odp-fork-cow'));

  it('makes a one-callback group of invalidate_page, without the fault around it', () => {
    const g = m.groups.find((x) => x.inv === 'mm-0/fault#4~2')!;
    expect(g).toMatchObject({
      kind: 'page',
      pid: 1,
      start: 0x10000000,
      end: 0x10001000,
      complete: true,
    });
    expect([...g.lifelines].sort()).toEqual(['hca0', 'mm-0']);
    expect(idsOfGroup(m, 'mm-0/fault#4~2')).toEqual([
      'mm-0:25',
      'mm-0:26',
      'hca0:10',
      'hca0:11',
      'mm-0:27',
    ]);
  });

  it("puts the fork's child PTE and the shootdown inside the fork's range", () => {
    const ids = idsOfGroup(m, 'mm-0/fork#3~1');
    expect(ids).toEqual(expect.arrayContaining(['mm-0:10', 'cpu0:3', 'mm-0:11', 'mm-0:12']));
    expect(ids).not.toContain('mm-0:16'); // process.fork, after range_end
  });

  it("filters by process: the child's events and the fork that made it", () => {
    const f = buildDiagram(loadTrace('odp-fork-cow'), { filter: { pids: [2] } });
    expect(f.rows.length).toBeGreaterThan(0);
    expect(f.rows.length).toBeLessThan(m.rows.length);
    for (const r of f.rows) {
      const e = r.event;
      const pids = 'pid' in e ? [e.pid, ...(e.kind === 'process.fork' ? [e.child] : [])] : [];
      if (pids.length > 0) expect(pids).toContain(2);
      else expect(e.op).toMatch(/fork|fault|exit|create/);
    }
    expect(f.rows.some((r) => r.event.id === 'mm-0:11')).toBe(true); // pte.set pid 2 in the fork
    expect(f.rows.some((r) => r.event.id === 'mm-0:25')).toBe(false); // pid 1's COW
  });
});

describe('filters', () => {
  const events = loadTrace('odp-munmap');

  it('by address range: what touched page 5, and the operations and invalidations that did', () => {
    const page5 = 0x10000000 + 5 * 4096;
    const m = buildDiagram(events, { filter: { addr: { start: page5, end: page5 + 4096 } } });
    const ids = m.rows.map((r) => r.event.id);
    expect(ids).toContain('mm-1:11'); // range_start over [0x10000000, 0x10008000)
    expect(ids).toContain('mm-1:12'); // its mn.send (no address, but its inv touched page 5)
    expect(ids).toContain('mm-1:16'); // pte.clear of page 5
    expect(ids).not.toContain('mm-1:15'); // pte.clear of page 0
    expect(ids).not.toContain('hca0:1'); // npf of page 0
    expect(ids).toContain('hca0:5'); // npf of page 5
  });

  it("by subscriber: other subscribers' lifelines and callbacks are hidden", () => {
    const m = buildDiagram(events, { filter: { subscribers: ['hca9'] } });
    expect(m.lifelines.map((l) => l.id)).not.toContain('hca0');
    expect(m.rows.some((r) => 'subscriber' in r.event || r.lifeline === 'hca0')).toBe(false);
    expect(m.rows.some((r) => r.event.kind === 'mn.range_start')).toBe(true); // mm's own
    expect(m.rows.some((r) => r.event.kind === 'tlb.flush')).toBe(true);
    const kept = buildDiagram(events, { filter: { subscribers: ['hca0'] } });
    expect(kept.rows).toHaveLength(events.length);
  });

  it('by invalidation: only the events of matching groups', () => {
    const m = buildDiagram(events, { filter: { inv: 'munmap' } });
    expect(m.groups.map((g) => g.inv)).toEqual(['mm-1/munmap#4~1']);
    expect(m.rows.every((r) => r.inv === 'mm-1/munmap#4~1')).toBe(true);
    expect(m.lifelines.map((l) => l.id)).toEqual(['mm-1', 'cpu0', 'hca0']);
  });

  it('setFilter rebuilds; clearing it gives the unfiltered model back', () => {
    const b = new DiagramBuilder();
    b.push(events);
    const all = shape(b.model());
    b.setFilter({ pids: [7] });
    expect(b.model().rows).toHaveLength(0);
    b.setFilter({});
    expect(shape(b.model())).toEqual(all);
  });
});

describe('markers', () => {
  it("places the checker's violations on their events", () => {
    const m = buildDiagram(loadTrace('free-before-invalidate-page'), {
      violations: loadViolations('free-before-invalidate-page'),
    });
    const v = m.markers.filter((x) => x.kind === 'violation');
    expect(v.map((x) => [x.eventId, x.lifeline, x.title])).toEqual([
      ['hca0:6', 'hca0', 'teardown-before-free'],
      ['mm-0:40', 'mm-0', 'teardown-before-free'],
    ]);
    expect(v.every((x) => x.row === rowOf(m, x.eventId))).toBe(true);
  });

  it('marks the legacy callback under the PT lock: guards, a red arrow, a flagged group', () => {
    const b = new DiagramBuilder();
    b.push(loadTrace('legacy-cow'));
    let m = b.model();
    expect(m.markers.filter((x) => x.kind === 'guard').map((x) => [x.title, x.lifeline])).toEqual([
      ['might_sleep', 'mm-1'],
      ['mn.ptl_held', 'hca0'],
    ]);
    expect(m.messages.filter((x) => x.underLock).map((x) => [x.kind, x.label, x.inv])).toEqual([
      ['mn-call', 'invalidate_page', 'mm-1/fault#6~2'],
    ]);
    expect(m.groups.find((g) => g.inv === 'mm-1/fault#6~2')?.flagged).toBe(true);
    b.setViolations(loadViolations('legacy-cow'));
    m = b.model();
    expect(m.markers.filter((x) => x.kind === 'violation')).toHaveLength(4);
    expect(new Set(m.markers.filter((x) => x.kind === 'violation').map((x) => x.title))).toEqual(
      new Set(['no-sleep-under-ptlock']),
    );
  });

  it('draws an expected violation as expected, not as a violation', () => {
    const events = loadTrace('free-before-invalidate-page');
    const violations = loadViolations('free-before-invalidate-page');
    const b = new DiagramBuilder();
    b.push(events);
    b.setViolations(violations.map((v) => ({ ...v, expected: true })));
    const m = b.model();
    expect(m.markers.filter((x) => x.kind === 'violation')).toHaveLength(0);
    expect(m.markers.filter((x) => x.kind === 'expected')).toHaveLength(2);
  });

  it('places a violation whose events arrive after it', () => {
    const events = loadTrace('free-before-invalidate-page');
    const b = new DiagramBuilder({ violations: loadViolations('free-before-invalidate-page') });
    const cut = events.findIndex((e) => e.id === 'hca0:6') + 1;
    b.push(events.slice(0, cut));
    expect(b.model().markers.filter((x) => x.kind === 'violation')).toHaveLength(1); // hca0:6
    b.push(events.slice(cut));
    expect(b.model().markers.filter((x) => x.kind === 'violation')).toHaveLength(2);
  });
});

describe('streaming', () => {
  const events = loadTrace('odp-munmap');
  const whole = shape(buildDiagram(events));

  it('one event at a time gives the same model as all at once', () => {
    const b = new DiagramBuilder();
    const sorted = [...events].sort((a, b) => a.ts - b.ts);
    for (const e of sorted) b.push([e]);
    expect(shape(b.model())).toEqual(whole);
  });

  it('late events (out of ts order) rebuild to the same model; duplicates are ignored', () => {
    const b = new DiagramBuilder();
    const chunks: TraceEvent[][] = [];
    for (let i = 0; i < events.length; i += 7) chunks.push(events.slice(i, i + 7));
    for (const c of chunks.reverse()) b.push(c);
    b.push(events.slice(3, 20));
    expect(shape(b.model())).toEqual(whole);
    expect(b.model().counts).toEqual({ buffered: events.length, shown: events.length, evicted: 0 });
  });

  it('the model object changes only when something changed', () => {
    const b = new DiagramBuilder();
    b.push(events);
    const m = b.model();
    expect(b.model()).toBe(m);
    b.push(events.slice(0, 5));
    expect(b.model()).toBe(m);
  });

  it('a bounded buffer drops the oldest events and what is drawn only from them', () => {
    const b = new DiagramBuilder({ cap: 20 });
    const sorted = [...events].sort((a, b) => a.ts - b.ts);
    for (let i = 0; i < sorted.length; i += 5) b.push(sorted.slice(i, i + 5));
    const m = b.model();
    expect(m.counts.buffered).toBeLessThanOrEqual(20);
    expect(m.counts.evicted).toBe(events.length - m.counts.buffered);
    expect(m.firstRow).toBe(m.counts.evicted);
    expect(m.rows.every((r, i) => r.row === m.firstRow + i)).toBe(true);
    expect(m.rows[m.rows.length - 1].event.id).toBe(sorted[sorted.length - 1].id);
    expect(m.messages.every((x) => Math.max(x.fromRow, x.toRow) >= m.firstRow)).toBe(true);
    expect(
      m.groups.every((g) => g.endRow >= m.firstRow && g.rows.every((r) => r >= m.firstRow)),
    ).toBe(true);
  });

  it('an open PT lock or callback is a bar to the last row', () => {
    const b = new DiagramBuilder();
    const sorted = [...events].sort((a, b) => a.ts - b.ts);
    const upTo = sorted.findIndex((e) => e.id === 'mm-1:16'); // inside the PT lock, device done
    b.push(sorted.slice(0, upTo + 1));
    const open = b.model().openBars;
    expect(open.map((x) => [x.kind, x.lifeline])).toEqual([['ptl', 'mm-1']]);
    const g = b.group('mm-1/munmap#4~1')!;
    expect(g.complete).toBe(false);
  });

  it('clear() forgets everything', () => {
    const b = new DiagramBuilder();
    b.push(events);
    b.clear();
    expect(b.model().rows).toHaveLength(0);
    expect(b.model().lifelines).toHaveLength(0);
    b.push(events);
    expect(shape(b.model())).toEqual(whole);
  });
});

describe('a synthetic 10,000-event trace', () => {
  const events = syntheticTrace(10_000, { seed: 7, cpus: 4, subscribers: ['hca0', 'hca1'] });
  const m = buildDiagram(events);

  it('pairs every request with its answer and closes every group and bar', () => {
    expect(m.rows).toHaveLength(10_000);
    expect(m.lifelines.map((l) => l.id)).toEqual([
      'mm-0',
      'mm-1',
      'cpu0',
      'cpu1',
      'cpu2',
      'cpu3',
      'hca0',
      'hca1',
    ]);
    const ranges = m.groups.filter((g) => g.kind === 'range');
    expect(ranges.length).toBeGreaterThan(50);
    // the last group may be cut by the 10,000th event
    for (const g of ranges.slice(0, -1)) {
      expect(g.complete).toBe(true);
      expect(g.lifelines).toEqual(expect.arrayContaining(['hca0', 'hca1', 'cpu0', 'cpu3']));
    }
    const calls = m.messages.filter((x) => x.kind === 'mn-call').length;
    const acks = m.messages.filter((x) => x.kind === 'mn-ack').length;
    expect(Math.abs(calls - acks)).toBeLessThanOrEqual(2);
    expect(m.bars.filter((b) => b.endRow === null).length).toBeLessThanOrEqual(2);
  });
});
