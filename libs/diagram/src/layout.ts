/**
 * Geometry and colours of the sequence diagram, shared by the live dashboard (React) and
 * renderSequenceSvg (a string), so both draw the same picture. Time flows down: one row per
 * shown event; lifelines are columns.
 */
import type {
  Bar,
  BarKind,
  DiagramModel,
  GroupKind,
  InvGroup,
  MarkerKind,
  Marker,
  Message,
  MessageKind,
  DiagramRow,
} from './types';

export interface Layout {
  /** px per row */
  rowHeight: number;
  /** px per lifeline */
  columnWidth: number;
  /** px left of the first lifeline: the time gutter */
  gutter: number;
}

export const DEFAULT_LAYOUT: Layout = { rowHeight: 18, columnWidth: 168, gutter: 84 };

export const MESSAGE_COLORS: Record<MessageKind, string> = {
  fault: '#2563eb',
  'fault-reply': '#2563eb',
  npf: '#0d9488',
  'npf-reply': '#0d9488',
  shootdown: '#d97706',
  'mn-call': '#7c3aed',
  'mn-ack': '#7c3aed',
};

/** replies are drawn dashed */
export const isReply = (k: MessageKind): boolean =>
  k === 'fault-reply' || k === 'npf-reply' || k === 'mn-ack';

export const BAR_COLORS: Record<BarKind, string> = {
  ptl: '#ea580c',
  sleep: '#8b5cf6',
  npf: '#14b8a6',
};

export const GROUP_COLORS: Record<GroupKind, string> = {
  range: '#3b82f6',
  page: '#a855f7',
  release: '#64748b',
  callback: '#64748b',
};

export const MARKER_COLORS: Record<MarkerKind, string> = {
  violation: '#dc2626',
  expected: '#64748b',
  guard: '#f97316',
  warning: '#ca8a04',
};

/** Column of every lifeline of the model. */
export function columnsOf(model: Pick<DiagramModel, 'lifelines'>): Map<string, number> {
  return new Map(model.lifelines.map((l, i) => [l.id, i]));
}

/** x of a lifeline's centre line. */
export const columnX = (col: number, l: Layout = DEFAULT_LAYOUT): number =>
  l.gutter + col * l.columnWidth + l.columnWidth / 2;

/** y of a row's centre, rows counted from `first` at y = 0. */
export const rowY = (row: number, first: number, l: Layout = DEFAULT_LAYOUT): number =>
  (row - first) * l.rowHeight + l.rowHeight / 2;

export const diagramWidth = (
  model: Pick<DiagramModel, 'lifelines'>,
  l: Layout = DEFAULT_LAYOUT,
): number => l.gutter + Math.max(1, model.lifelines.length) * l.columnWidth;

/** px right of the last lifeline, for its events' labels */
export const LABEL_ROOM = 130;

/** width of one character of a row label (10 px sans-serif, a little generous) */
export const LABEL_CHAR_PX = 5.6;

/**
 * How many characters a row's label, drawn right of its dot at cx, may take in a diagram
 * `width` px wide: up to the right edge. A row holds one event, so its label crosses the
 * lifelines to its right without meeting another label.
 */
export function labelChars(cx: number, width: number): number {
  return Math.max(12, Math.floor((width - cx - 9 - 6) / LABEL_CHAR_PX));
}

/** a message within one row is drawn this far above the row, clear of the row's label */
export const HORIZONTAL_LIFT = 6;

/** Bar widths: nested or overlapping bars on one lifeline are offset by their depth. */
export const BAR_WIDTH = 8;

/** The horizontal extent of a group: from its leftmost to its rightmost lifeline. */
export function groupSpan(
  g: InvGroup,
  cols: Map<string, number>,
  l: Layout = DEFAULT_LAYOUT,
): { x: number; width: number } | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const id of g.lifelines) {
    const c = cols.get(id);
    if (c === undefined) continue;
    lo = Math.min(lo, c);
    hi = Math.max(hi, c);
  }
  if (lo === Infinity) return null;
  const pad = l.columnWidth * 0.42;
  return { x: columnX(lo, l) - pad, width: columnX(hi, l) - columnX(lo, l) + 2 * pad };
}

export interface DiagramWindow {
  rows: DiagramRow[];
  messages: Message[];
  bars: Bar[];
  groups: InvGroup[];
  markers: Marker[];
}

/** First index whose key is >= x, in an array sorted by key. */
function lowerBound<T>(xs: readonly T[], key: (t: T) => number, x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(xs[mid]) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Items of an array sorted by end row that cross [lo, hi]: from the first ending at or after
 * lo, while they may still start at or before hi. Messages and closed bars are appended when
 * their last event is placed, so they are sorted by end row.
 */
function crossing<T>(
  xs: readonly T[],
  start: (t: T) => number,
  end: (t: T) => number,
  lo: number,
  hi: number,
  maxSpan: number,
): T[] {
  const out: T[] = [];
  for (let i = lowerBound(xs, end, lo); i < xs.length; i++) {
    const t = xs[i];
    // ends this far below the window: it (and every later one) starts below it too
    if (end(t) > hi + maxSpan) break;
    if (start(t) <= hi) out.push(t);
  }
  return out;
}

/**
 * What is drawn between rows `top` and `bottom` (inclusive, absolute row numbers): the
 * dashboard's virtualized view draws only this.
 */
export function windowOf(model: DiagramModel, top: number, bottom: number): DiagramWindow {
  const last = model.firstRow + model.rows.length - 1;
  const lo = Math.max(top, model.firstRow);
  const hi = Math.min(bottom, last);
  if (hi < lo) return { rows: [], messages: [], bars: [], groups: [], markers: [] };
  const msgEnd = (m: Message) => Math.max(m.fromRow, m.toRow);
  const msgStart = (m: Message) => Math.min(m.fromRow, m.toRow);
  const bars = crossing(
    model.bars,
    (b) => b.startRow,
    (b) => b.endRow ?? last,
    lo,
    hi,
    model.maxSpan,
  );
  for (const b of model.openBars) if (b.startRow <= hi) bars.push(b);
  const m0 = lowerBound(model.markers, (m) => m.row, lo);
  const m1 = lowerBound(model.markers, (m) => m.row, hi + 1);
  return {
    rows: model.rows.slice(lo - model.firstRow, hi - model.firstRow + 1),
    messages: crossing(model.messages, msgStart, msgEnd, lo, hi, model.maxSpan),
    bars,
    // groups: by start row; few enough to scan
    groups: model.groups.filter((g) => g.startRow <= hi && g.endRow >= lo),
    markers: model.markers.slice(m0, m1),
  };
}

/** Depth of each bar among the bars of its lifeline that overlap it (for the x offset). */
export function barDepths(bars: readonly Bar[], lastRow: number): Map<Bar, number> {
  const out = new Map<Bar, number>();
  const byLifeline = new Map<string, Bar[]>();
  for (const b of bars) {
    const l = byLifeline.get(b.lifeline);
    if (l) l.push(b);
    else byLifeline.set(b.lifeline, [b]);
  }
  for (const list of byLifeline.values()) {
    const sorted = [...list].sort((a, b) => a.startRow - b.startRow);
    const ends: number[] = [];
    for (const b of sorted) {
      let d = ends.findIndex((e) => e < b.startRow);
      if (d < 0) d = ends.length;
      ends[d] = b.endRow ?? lastRow;
      out.set(b, d);
    }
  }
  return out;
}
