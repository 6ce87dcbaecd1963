import { describe, expect, it } from 'vitest';
import { buildDiagram } from './builder';
import { loadTrace } from './fixtures/load';
import { syntheticTrace } from './synthetic';
import { DEFAULT_LAYOUT, barDepths, columnX, columnsOf, groupSpan, windowOf } from './layout';

describe('layout', () => {
  const m = buildDiagram(loadTrace('odp-munmap'));

  it('windowOf keeps what crosses the visible rows, and only that', () => {
    const g = m.groups[0];
    const mid = Math.floor((g.startRow + g.endRow) / 2);
    const w = windowOf(m, mid, mid + 1);
    expect(w.rows.map((r) => r.row)).toEqual([mid, mid + 1]);
    expect(w.groups.map((x) => x.inv)).toContain(g.inv);
    const bar = m.bars.find((b) => b.kind === 'sleep')!;
    expect(windowOf(m, bar.startRow + 1, bar.startRow + 1).bars).toContain(bar);
    expect(windowOf(m, 0, -1).rows).toEqual([]);
    const all = windowOf(m, -100, 1e9);
    expect(all.rows).toHaveLength(m.rows.length);
    expect(all.messages).toHaveLength(m.messages.length);
  });

  it('windowOf finds exactly what a full scan finds, on any window of a large trace', () => {
    const big = buildDiagram(syntheticTrace(5000, { seed: 3, cpus: 3 }), { cap: 2000 });
    const last = big.firstRow + big.rows.length - 1;
    const cross = (a: number, b: number, lo: number, hi: number) =>
      Math.min(a, b) <= hi && Math.max(a, b) >= lo;
    for (const [lo, hi] of [
      [big.firstRow, big.firstRow + 40],
      [big.firstRow + 700, big.firstRow + 760],
      [last - 50, last],
      [big.firstRow - 100, last + 100],
    ]) {
      const w = windowOf(big, lo, hi);
      const a = Math.max(lo, big.firstRow);
      const b = Math.min(hi, last);
      expect(w.messages).toEqual(big.messages.filter((m) => cross(m.fromRow, m.toRow, a, b)));
      expect(w.bars).toEqual(
        [...big.bars, ...big.openBars].filter((x) => cross(x.startRow, x.endRow ?? last, a, b)),
      );
      expect(w.markers).toEqual(big.markers.filter((m) => m.row >= a && m.row <= b));
    }
    expect(
      big.messages.every(
        (m, i, ms) =>
          i === 0 || Math.max(m.fromRow, m.toRow) >= Math.max(ms[i - 1].fromRow, ms[i - 1].toRow),
      ),
    ).toBe(true);
  });

  it('a group spans its leftmost to its rightmost lifeline', () => {
    const cols = columnsOf(m);
    const span = groupSpan(m.groups[0], cols)!; // mm-1 (col 1) .. hca0 (col 4)
    expect(span.x).toBeLessThan(columnX(1));
    expect(span.x + span.width).toBeGreaterThan(columnX(4));
    expect(span.x).toBeGreaterThan(columnX(0));
    expect(columnX(1) - columnX(0)).toBe(DEFAULT_LAYOUT.columnWidth);
  });

  it('overlapping bars on one lifeline get increasing depths', () => {
    const bars = [
      { kind: 'ptl' as const, lifeline: 'mm-0', startRow: 0, endRow: 10, label: '', events: [] },
      { kind: 'ptl' as const, lifeline: 'mm-0', startRow: 2, endRow: 4, label: '', events: [] },
      { kind: 'ptl' as const, lifeline: 'mm-0', startRow: 11, endRow: null, label: '', events: [] },
    ];
    const d = barDepths(bars, 20);
    expect(bars.map((b) => d.get(b))).toEqual([0, 1, 0]);
  });
});
