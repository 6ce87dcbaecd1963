/**
 * The sequence diagram, virtualized: the scroll area is as tall as every row, but only the
 * rows in view (and a margin) are drawn, with the messages, bars, groups and markers that
 * cross them (windowOf). Following, the view sticks to the newest row; scrolling up pauses.
 */
import {
  type KeyboardEvent,
  type UIEvent,
  memo,
  useCallback,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from 'react';
import {
  BAR_COLORS,
  BAR_WIDTH,
  DEFAULT_LAYOUT,
  type DiagramModel,
  GROUP_COLORS,
  HORIZONTAL_LIFT,
  type InvGroup,
  LABEL_ROOM,
  type Layout,
  MARKER_COLORS,
  MESSAGE_COLORS,
  type MessageKind,
  barDepths,
  clip,
  columnX,
  columnsOf,
  describeEvent,
  diagramWidth,
  groupSpan,
  isReply,
  labelChars,
  windowOf,
} from '@mmlab/diagram';

export interface RenderInfo {
  rows: number;
  version: number;
  committedAt: number;
  paintedAt?: number;
}
type RenderWindow = Window & { __mmlabRender?: RenderInfo };

const ROW = DEFAULT_LAYOUT.rowHeight;
/** columns share the width in view, within these bounds */
const MIN_COLUMN = 124;
const MAX_COLUMN = 220;
const SVG_STEP = 16_384;
const HEAD = 34;
const OVERSCAN = 30;

export interface DiagramProps {
  model: DiagramModel;
  follow: boolean;
  selectedInv: string | null;
  selectedEvent: string | null;
  /** a row to bring into view (and the request's serial, to repeat one) */
  reveal: { row: number; serial: number } | null;
  onSelectGroup: (inv: string) => void;
  onSelectEvent: (id: string) => void;
  /** the person scrolled away from the newest rows */
  onScrolledAway: () => void;
}

const clock = (ts: number): string => {
  const d = new Date(ts);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
};

function Arrowheads() {
  return (
    <defs>
      {(Object.keys(MESSAGE_COLORS) as MessageKind[]).map((k) => (
        <marker
          key={k}
          id={`head-${k}`}
          viewBox="0 0 10 10"
          refX="9"
          refY="5"
          markerWidth="7"
          markerHeight="7"
          orient="auto-start-reverse"
        >
          <path d="M0,0L10,5L0,10z" fill={MESSAGE_COLORS[k]} />
        </marker>
      ))}
      <marker
        id="head-lock"
        viewBox="0 0 10 10"
        refX="9"
        refY="5"
        markerWidth="7"
        markerHeight="7"
        orient="auto-start-reverse"
      >
        <path d="M0,0L10,5L0,10z" fill={MARKER_COLORS.violation} />
      </marker>
    </defs>
  );
}

function groupLabel(g: InvGroup): string {
  const what =
    g.kind === 'range'
      ? `invalidate_range ${g.reason ?? ''}`
      : g.kind === 'page'
        ? 'invalidate_page'
        : g.kind;
  return `${what} · pid ${g.pid} · ${g.inv}${g.complete ? '' : ' · in flight'}`;
}

/** An empty lab: nothing to draw yet, so say how to make something happen. */
function EmptyLab() {
  const observer = window.location.origin;
  return (
    <div className="empty" data-testid="empty-hint">
      <p>
        <b>No events yet.</b> This lab is idle: start a scenario on it, and its events appear here
        as they happen.
      </p>
      <pre>
        {`NATS_URL=nats://127.0.0.1:4222 MMLAB_OBSERVER_URL=${observer} npx mmlab run examples/anon-basic.yaml`}
      </pre>
      <p>
        (the NATS URL <code>mmlab up</code> / <code>./scripts/lab.sh</code> printed; every scenario
        is in <code>examples/</code>). Or break the lab while it runs:{' '}
        <code>npx mmlab chaos targets</code>.
      </p>
    </div>
  );
}

/** One row's label (time, dot, text): memoized, its position is fixed while it is in view. */
const RowLabel = memo(function RowLabel(p: {
  ev: DiagramModel['rows'][number]['event'];
  cy: number;
  cx: number | null;
  gutter: number;
  chars: number;
}) {
  const e = p.ev;
  return (
    <g className="row">
      <text x={p.gutter - 8} y={p.cy + 3.5} className="time">
        {clock(e.ts)}
      </text>
      {p.cx !== null && (
        <>
          <circle cx={p.cx} cy={p.cy} r={3} className="dot" />
          <text x={p.cx + 9} y={p.cy + 3.5} className="label">
            <tspan className="kind">{e.kind}</tspan>{' '}
            {clip(describeEvent(e), p.chars - e.kind.length)}
          </text>
        </>
      )}
    </g>
  );
});

/** A row's click target (under the groups): selects its event. */
const RowHit = memo(function RowHit(p: {
  id: string;
  top: number;
  width: number;
  selected: boolean;
  onSelect: (id: string) => void;
}) {
  return (
    <rect
      className={p.selected ? 'hit selected' : 'hit'}
      x={0}
      y={p.top}
      width={p.width}
      height={ROW}
      onClick={() => p.onSelect(p.id)}
    />
  );
});

export const Diagram = memo(function Diagram(p: DiagramProps) {
  const { model, follow } = p;
  const scroller = useRef<HTMLDivElement>(null);
  /** the scroller's scroll position and size, as last seen (scroll and resize events) */
  const [view, setView] = useState({ top: 0, height: 800, width: 1200 });
  const measure = useCallback((el: HTMLDivElement) => {
    const next = { top: el.scrollTop, height: el.clientHeight, width: el.clientWidth };
    setView((v) =>
      v.top === next.top && v.height === next.height && v.width === next.width ? v : next,
    );
  }, []);
  /** scroll events we caused ourselves (following) */
  const programmatic = useRef(false);
  const cols = useMemo(() => columnsOf(model), [model]);
  const n = Math.max(1, model.lifelines.length);
  const L: Layout = useMemo(() => {
    const fit = Math.floor((view.width - DEFAULT_LAYOUT.gutter - LABEL_ROOM) / n);
    return { ...DEFAULT_LAYOUT, columnWidth: Math.max(MIN_COLUMN, Math.min(MAX_COLUMN, fit)) };
  }, [view.width, n]);
  // as wide as the view at least: a label may run to the right edge (labelChars)
  const width = Math.max(diagramWidth(model, L) + LABEL_ROOM, view.width);
  const total = model.rows.length * ROW + 8;
  const last = model.firstRow + model.rows.length - 1;
  // Following, the view is at the bottom by definition: drawn from there in this very render,
  // so a new batch costs one render and one layout, not a second pass after reading the DOM.
  const top = follow ? Math.max(0, HEAD + total - view.height) : view.top;

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el || !follow) return;
    if (Math.abs(el.scrollTop - top) > 1) {
      programmatic.current = true;
      el.scrollTop = top;
    }
  }, [follow, top]);

  // paused: from now on the view is wherever the scroller is
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && !follow) measure(el);
  }, [follow, measure]);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el || !p.reveal) return;
    const y = HEAD + (p.reveal.row - model.firstRow) * ROW;
    if (y < el.scrollTop + HEAD + 40 || y > el.scrollTop + el.clientHeight - 40) {
      el.scrollTop = Math.max(0, y - el.clientHeight / 3);
      measure(el);
    }
    // reveal once per request (not at every model change): model is left out on purpose
  }, [p.reveal]);

  // for benchmarks and tests: what is drawn, and when (a frame after commit: painted)
  useLayoutEffect(() => {
    const info: RenderInfo = {
      rows: model.rows.length,
      version: model.version,
      committedAt: performance.now(),
    };
    (window as RenderWindow).__mmlabRender = info;
    requestAnimationFrame(() => {
      info.paintedAt = performance.now();
    });
  }, [model]);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => measure(el));
    ro.observe(el);
    return () => ro.disconnect();
  }, [measure]);

  const pending = useRef(0);
  const { onScrolledAway } = p;
  const onScroll = useCallback(
    (ev: UIEvent<HTMLDivElement>) => {
      const el = ev.currentTarget;
      if (programmatic.current) {
        programmatic.current = false;
        return;
      }
      if (follow) {
        if (el.scrollHeight - el.clientHeight - el.scrollTop > ROW * 2) onScrolledAway();
        return;
      }
      if (pending.current !== 0) return;
      pending.current = requestAnimationFrame(() => {
        pending.current = 0;
        measure(el);
      });
    },
    [follow, onScrolledAway, measure],
  );

  // rows in view, plus a margin; every element is placed at its row's fixed y
  const first = model.firstRow + Math.max(0, Math.floor((top - HEAD) / ROW) - OVERSCAN);
  const lastVisible = Math.min(
    last,
    model.firstRow + Math.ceil((top + view.height) / ROW) + OVERSCAN,
  );
  const w = useMemo(() => windowOf(model, first, lastVisible), [model, first, lastVisible]);
  const depths = useMemo(() => barDepths(w.bars, last), [w.bars, last]);
  const y = (row: number) => (row - model.firstRow) * ROW + ROW / 2;
  const x = (id: string): number | null => {
    const c = cols.get(id);
    return c === undefined ? null : columnX(c, L);
  };
  const keySelect = (inv: string) => (ev: KeyboardEvent) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      p.onSelectGroup(inv);
    }
  };
  // The SVG grows in big steps (the canvas clips it): when its size changes, the browser lays
  // out everything in it again, which at every new batch would cost more than the batch.
  const svgHeight = Math.ceil((total + 1) / SVG_STEP) * SVG_STEP;

  return (
    <div
      className="diagram"
      ref={scroller}
      onScroll={onScroll}
      data-testid="diagram"
      data-rows={model.rows.length}
      data-version={model.version}
      role="figure"
      aria-label="Sequence diagram of the trace"
    >
      <div className="heads" style={{ width }}>
        <div className="gutter-head" style={{ width: L.gutter }}>
          time
        </div>
        {model.lifelines.map((l, i) => (
          <div
            key={l.id}
            className={`head head-${l.kind}`}
            data-testid="lifeline"
            data-instance={l.id}
            data-kind={l.kind}
            style={{ left: columnX(i, L) - L.columnWidth / 2 + 6, width: L.columnWidth - 12 }}
            title={`${l.id} (${l.service || l.kind})`}
          >
            {l.id}
          </div>
        ))}
      </div>
      {/* outside the canvas, which is only as tall as its rows (it would clip the hint) */}
      {model.rows.length === 0 && <EmptyLab />}
      <div className="canvas" style={{ height: total, width }}>
        <svg className="rows" width={width} height={svgHeight} role="presentation">
          <Arrowheads />
          {model.lifelines.map((l, i) => (
            <line
              key={l.id}
              className="lifeline-line"
              x1={columnX(i, L)}
              x2={columnX(i, L)}
              y1={0}
              y2={svgHeight}
            />
          ))}
          {w.rows.map((r) => (
            <RowHit
              key={r.event.id}
              id={r.event.id}
              top={y(r.row) - ROW / 2}
              width={width}
              selected={r.event.id === p.selectedEvent}
              onSelect={p.onSelectEvent}
            />
          ))}
          {w.groups.map((g) => {
            const span = groupSpan(g, cols, L);
            if (!span) return null;
            const y0 = y(g.startRow) - ROW / 2 + 1;
            const y1 = y(g.endRow) + ROW / 2 - 1;
            const sel = g.inv === p.selectedInv;
            const c = GROUP_COLORS[g.kind];
            return (
              <g
                key={g.inv}
                className={`inv-group${sel ? ' selected' : ''}`}
                data-testid="inv-group"
                data-inv={g.inv}
                data-kind={g.kind}
                data-complete={g.complete}
                data-lifelines={g.lifelines.join(' ')}
                role="button"
                tabIndex={0}
                aria-pressed={sel}
                aria-label={`Invalidation ${g.inv}: ${g.kind}, pid ${g.pid}, across ${g.lifelines.join(', ')}`}
                onClick={() => p.onSelectGroup(g.inv)}
                onKeyDown={keySelect(g.inv)}
              >
                <rect
                  x={span.x}
                  y={y0}
                  width={span.width}
                  height={Math.max(ROW - 2, y1 - y0)}
                  rx={6}
                  fill={c}
                  fillOpacity={sel ? 0.2 : 0.08}
                  stroke={g.flagged ? MARKER_COLORS.violation : c}
                  strokeWidth={sel || g.flagged ? 2.5 : 1}
                  strokeDasharray={g.complete ? undefined : '6 3'}
                />
                {/* on the top border, at the right end, in the gap between two rows' text */}
                <text x={span.x + span.width - 10} y={y0 + 2.5} className="group-label" fill={c}>
                  {clip(groupLabel(g), Math.floor(span.width / 4.8))}
                </text>
              </g>
            );
          })}
          {w.bars.map((b) => {
            const cx = x(b.lifeline);
            if (cx === null) return null;
            const d = depths.get(b) ?? 0;
            const y0 = y(b.startRow) - 5;
            const y1 = y(b.endRow ?? last) + 5;
            return (
              <rect
                key={`${b.kind}-${b.events[0]}`}
                className={`bar bar-${b.kind}`}
                data-testid={`bar-${b.kind}`}
                x={cx - BAR_WIDTH / 2 + d * 4}
                y={y0}
                width={BAR_WIDTH}
                height={Math.max(8, y1 - y0)}
                fill={BAR_COLORS[b.kind]}
                stroke={BAR_COLORS[b.kind]}
              />
            );
          })}
          {w.messages.map((m) => {
            const x0 = x(m.from);
            const x1 = x(m.to);
            if (x0 === null || x1 === null || x0 === x1) return null;
            const dir = x1 > x0 ? 1 : -1;
            const color = m.underLock ? MARKER_COLORS.violation : MESSAGE_COLORS[m.kind];
            // a message within one row is drawn just above it, clear of the row's label
            const lift = m.fromRow === m.toRow ? HORIZONTAL_LIFT : 0;
            return (
              <line
                key={`${m.kind}-${m.events.join('>')}`}
                className={`msg msg-${m.kind}`}
                data-testid={`msg-${m.kind}`}
                x1={x0 + dir * 5}
                y1={y(m.fromRow) - lift}
                x2={x1 - dir * 5}
                y2={y(m.toRow) - lift}
                stroke={color}
                strokeWidth={m.underLock ? 2 : 1.4}
                strokeDasharray={isReply(m.kind) ? '5 3' : undefined}
                markerEnd={`url(#head-${m.underLock ? 'lock' : m.kind})`}
              />
            );
          })}
          {w.rows.map((r) => (
            <RowLabel
              key={r.event.id}
              ev={r.event}
              cy={y(r.row)}
              cx={x(r.lifeline)}
              gutter={L.gutter}
              chars={(() => {
                const cx = x(r.lifeline);
                return cx === null ? 0 : labelChars(cx, width);
              })()}
            />
          ))}
          {w.markers.map((m, i) => {
            const cx = x(m.lifeline);
            if (cx === null) return null;
            const cy = y(m.row);
            const c = MARKER_COLORS[m.kind];
            return (
              <g
                key={`${m.eventId}-${m.kind}-${i}`}
                className={`marker marker-${m.kind}`}
                data-testid={
                  m.kind === 'violation'
                    ? 'violation-marker'
                    : m.kind === 'expected'
                      ? 'expected-marker'
                      : `marker-${m.kind}`
                }
                data-event-id={m.eventId}
                role="img"
                aria-label={`${m.kind}: ${m.title}: ${m.message}`}
                onClick={() => p.onSelectEvent(m.eventId)}
              >
                <title>{`${m.title}: ${m.message}`}</title>
                <rect className="marker-hit" x={cx - 20} y={cy - ROW / 2} width={29} height={ROW} />
                <circle cx={cx} cy={cy} r={7.5} fill="none" stroke={c} strokeWidth={2.2} />
                <text x={cx - 12} y={cy + 4} className="marker-bang" fill={c}>
                  {m.kind === 'expected' ? '✓' : '!'}
                </text>
              </g>
            );
          })}
        </svg>
      </div>
    </div>
  );
});
