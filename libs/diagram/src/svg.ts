/**
 * The sequence diagram as one standalone SVG document (no script, no external style): for run
 * reports and anything else that wants a picture of a trace. Same geometry and colours as the
 * live dashboard (layout.ts).
 */
import { describeEvent } from './describe';
import {
  BAR_COLORS,
  BAR_WIDTH,
  DEFAULT_LAYOUT,
  GROUP_COLORS,
  type Layout,
  MARKER_COLORS,
  MESSAGE_COLORS,
  barDepths,
  columnX,
  columnsOf,
  diagramWidth,
  groupSpan,
  HORIZONTAL_LIFT,
  LABEL_ROOM,
  isReply,
  rowY,
  windowOf,
} from './layout';
import type { DiagramModel } from './types';

export interface SvgOptions {
  layout?: Partial<Layout>;
  /** a heading above the lifelines */
  title?: string;
  /** rows drawn: at most this many, from the first (default 5000; the rest is summarized) */
  maxRows?: number;
  /** highlight this invalidation group */
  selectedInv?: string;
  /** event labels beside each row's dot (default true) */
  labels?: boolean;
  /** times in the gutter are relative to this ts (default: the first row's) */
  timeOrigin?: number;
}

const esc = (s: string): string =>
  s.replace(/[<>&"']/g, (c) =>
    c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '&' ? '&amp;' : c === '"' ? '&quot;' : '&#39;',
  );
const n = (x: number): string => String(Math.round(x * 10) / 10);

/** Shorten text to about `max` characters. */
export function clip(s: string, max: number): string {
  return s.length <= max ? s : s.slice(0, Math.max(1, max - 1)) + '…';
}

export function renderSequenceSvg(model: DiagramModel, opts: SvgOptions = {}): string {
  const L: Layout = { ...DEFAULT_LAYOUT, ...opts.layout };
  const maxRows = opts.maxRows ?? 5000;
  const labels = opts.labels ?? true;
  const titleH = opts.title ? 28 : 0;
  const headH = 30;
  const top = titleH + headH;
  const shown = Math.min(model.rows.length, maxRows);
  const first = model.firstRow;
  const lastDrawn = first + shown - 1;
  const omitted = model.rows.length - shown;
  const width = diagramWidth(model, L) + (labels ? LABEL_ROOM : 0);
  const height = top + shown * L.rowHeight + (omitted > 0 ? 24 : 8);
  const cols = columnsOf(model);
  const origin = opts.timeOrigin ?? model.rows[0]?.event.ts ?? 0;
  const y = (row: number) => top + rowY(row, first, L);
  const x = (lifeline: string): number | null => {
    const c = cols.get(lifeline);
    return c === undefined ? null : columnX(c, L);
  };
  const w = windowOf(model, first, lastDrawn);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${n(width)}" height="${n(height)}" viewBox="0 0 ${n(width)} ${n(height)}" font-family="ui-sans-serif, system-ui, sans-serif" font-size="11">`,
    '<defs>',
    ...Object.entries(MESSAGE_COLORS).map(
      ([k, c]) =>
        `<marker id="arrow-${k}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="${c}"/></marker>`,
    ),
    '</defs>',
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
  );
  if (opts.title)
    out.push(
      `<text x="8" y="19" font-size="15" font-weight="600" fill="#0f172a">${esc(opts.title)}</text>`,
    );

  // lifelines and their heads
  model.lifelines.forEach((l, i) => {
    const cx = columnX(i, L);
    out.push(
      `<g class="lifeline" data-instance="${esc(l.id)}">`,
      `<line x1="${n(cx)}" y1="${n(top)}" x2="${n(cx)}" y2="${n(height - 4)}" stroke="#cbd5e1" stroke-dasharray="4 3"/>`,
      `<rect x="${n(cx - L.columnWidth / 2 + 6)}" y="${n(titleH + 3)}" width="${n(L.columnWidth - 12)}" height="${headH - 8}" rx="4" fill="#f1f5f9" stroke="#94a3b8"/>`,
      `<text x="${n(cx)}" y="${n(titleH + 3 + (headH - 8) / 2 + 4)}" text-anchor="middle" font-weight="600" fill="#0f172a">${esc(l.id)}</text>`,
      '</g>',
    );
  });

  // invalidation groups, behind everything else
  for (const g of w.groups) {
    const span = groupSpan(g, cols, L);
    if (!span) continue;
    const y0 = y(Math.max(g.startRow, first)) - L.rowHeight / 2;
    const y1 = y(Math.min(g.endRow, lastDrawn)) + L.rowHeight / 2;
    const c = GROUP_COLORS[g.kind];
    const sel = g.inv === opts.selectedInv;
    out.push(
      `<g class="inv-group" data-inv="${esc(g.inv)}" data-kind="${g.kind}">`,
      `<title>${esc(`${g.kind} invalidation ${g.inv} pid ${g.pid}${g.reason ? ' ' + g.reason : ''}`)}</title>`,
      `<rect x="${n(span.x)}" y="${n(y0)}" width="${n(span.width)}" height="${n(y1 - y0)}" rx="6" fill="${c}" fill-opacity="${sel ? 0.16 : 0.07}" stroke="${g.flagged ? MARKER_COLORS.violation : c}" stroke-width="${sel || g.flagged ? 2 : 1}" stroke-opacity="0.8"/>`,
      `<text x="${n(span.x + span.width - 10)}" y="${n(y0 + 3.5)}" text-anchor="end" font-size="9" font-weight="600" fill="${c}" paint-order="stroke" stroke="#ffffff" stroke-width="4">${esc(g.inv)}</text>`,
      '</g>',
    );
  }

  // bars
  const depths = barDepths(w.bars, lastDrawn);
  for (const b of w.bars) {
    const cx = x(b.lifeline);
    if (cx === null) continue;
    const d = depths.get(b) ?? 0;
    const y0 = y(Math.max(b.startRow, first)) - 4;
    const y1 = y(Math.min(b.endRow ?? lastDrawn, lastDrawn)) + 4;
    out.push(
      `<rect class="bar bar-${b.kind}" x="${n(cx - BAR_WIDTH / 2 + d * 4)}" y="${n(y0)}" width="${BAR_WIDTH}" height="${n(Math.max(8, y1 - y0))}" fill="${BAR_COLORS[b.kind]}" fill-opacity="0.55" stroke="${BAR_COLORS[b.kind]}"><title>${esc(`${b.kind}: ${b.label}`)}</title></rect>`,
    );
  }

  // messages
  for (const m of w.messages) {
    const x0 = x(m.from);
    const x1 = x(m.to);
    if (x0 === null || x1 === null || x0 === x1) continue;
    const lift = m.fromRow === m.toRow ? HORIZONTAL_LIFT : 0;
    const y0 = y(Math.max(m.fromRow, first)) - lift;
    const y1 = y(Math.min(m.toRow, lastDrawn)) - lift;
    const c = m.underLock ? MARKER_COLORS.violation : MESSAGE_COLORS[m.kind];
    const dir = x1 > x0 ? 1 : -1;
    out.push(
      `<line class="msg msg-${m.kind}" x1="${n(x0 + dir * 5)}" y1="${n(y0)}" x2="${n(x1 - dir * 5)}" y2="${n(y1)}" stroke="${c}" stroke-width="1.4"${isReply(m.kind) ? ' stroke-dasharray="5 3"' : ''} marker-end="url(#arrow-${m.kind})"><title>${esc(`${m.kind} ${m.from} → ${m.to}: ${m.label}`)}</title></line>`,
    );
  }

  // rows: time, dot, label
  for (const r of w.rows) {
    const cy = y(r.row);
    out.push(
      `<text x="${n(L.gutter - 8)}" y="${n(cy + 4)}" text-anchor="end" font-size="9" fill="#64748b">+${(r.event.ts - origin).toFixed(1)}</text>`,
    );
    const cx = x(r.lifeline);
    if (cx === null) continue;
    out.push(
      `<circle cx="${n(cx)}" cy="${n(cy)}" r="3" fill="#334155"><title>${esc(`${r.event.instance} ${r.event.kind} ${describeEvent(r.event)}`)}</title></circle>`,
    );
    if (labels)
      out.push(
        `<text x="${n(cx + 9)}" y="${n(cy + 3.5)}" font-size="9.5" fill="#1e293b">${esc(clip(r.event.kind + ' ' + describeEvent(r.event), Math.floor(L.columnWidth / 5.6)))}</text>`,
      );
  }

  // markers
  for (const m of w.markers) {
    const cx = x(m.lifeline);
    if (cx === null) continue;
    const cy = y(m.row);
    const c = MARKER_COLORS[m.kind];
    out.push(
      `<g class="marker marker-${m.kind}"><title>${esc(`${m.title}: ${m.message}`)}</title><circle cx="${n(cx)}" cy="${n(cy)}" r="7" fill="none" stroke="${c}" stroke-width="2"/><text x="${n(cx - 11)}" y="${n(cy + 4)}" text-anchor="end" font-weight="700" fill="${c}">!</text></g>`,
    );
  }

  if (omitted > 0)
    out.push(
      `<text x="${n(L.gutter)}" y="${n(height - 8)}" fill="#64748b">… ${omitted} more events not drawn</text>`,
    );
  out.push('</svg>');
  return out.join('\n');
}
