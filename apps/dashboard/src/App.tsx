/** The page: toolbar (pause/follow, status, filters, legend), the diagram, the side panel. */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  BAR_COLORS,
  GROUP_COLORS,
  MARKER_COLORS,
  MESSAGE_COLORS,
  parseFilterInputs,
  sameFilter,
} from '@mmlab/diagram';
import { Diagram } from './Diagram';
import { type Live, useLive } from './live';
import { Panel } from './Panel';

const STATUS_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  lagged: 'lagged',
  closed: 'disconnected',
} as const;

function Legend() {
  const item = (color: string, text: string, dashed = false) => (
    <span className="legend-item" key={text}>
      <svg width="22" height="8" aria-hidden="true">
        <line
          x1="1"
          y1="4"
          x2="21"
          y2="4"
          stroke={color}
          strokeWidth="2"
          strokeDasharray={dashed ? '4 2' : undefined}
        />
      </svg>
      {text}
    </span>
  );
  const box = (color: string, text: string) => (
    <span className="legend-item" key={text}>
      <span className="legend-box" style={{ background: color }} />
      {text}
    </span>
  );
  return (
    <div className="legend" aria-label="Legend">
      {item(MESSAGE_COLORS.fault, 'fault')}
      {item(MESSAGE_COLORS.npf, 'device or guest fault')}
      {item(MESSAGE_COLORS.shootdown, 'TLB shootdown')}
      {item(MESSAGE_COLORS['mn-call'], 'notifier call')}
      {item(MESSAGE_COLORS['mn-ack'], 'reply / ack', true)}
      {item(MARKER_COLORS.violation, 'sent under PT lock')}
      {box(BAR_COLORS.ptl, 'PT lock held')}
      {box(BAR_COLORS.sleep, 'subscriber busy')}
      {box(GROUP_COLORS.range, 'invalidation')}
      {box(MARKER_COLORS.violation, 'violation')}
      {box(MARKER_COLORS.expected, 'expected violation')}
    </div>
  );
}

/** The value, updated at most every `ms` (the latest one always arrives). */
function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  const timer = useRef(0);
  const latest = useRef(value);
  latest.current = value;
  useEffect(() => {
    const wait = last.current + ms - performance.now();
    if (wait <= 0) {
      last.current = performance.now();
      setShown(value);
    } else if (timer.current === 0)
      timer.current = window.setTimeout(() => {
        timer.current = 0;
        last.current = performance.now();
        setShown(latest.current);
      }, wait);
  }, [value, ms]);
  useEffect(() => () => window.clearTimeout(timer.current), []);
  return shown;
}

export function App({ live }: { live: Live }) {
  const now = useLive(live);
  const { model } = now;
  // the diagram draws every frame; the panel and the counters need not
  const s = useThrottled(now, 250);
  const [selectedInv, setSelectedInv] = useState<string | null>(null);
  const [selectedEvent, setSelectedEvent] = useState<string | null>(null);
  const [reveal, setReveal] = useState<{ row: number; serial: number } | null>(null);
  const serial = useRef(0);

  // ---- filters ------------------------------------------------------------------------------
  const [pid, setPid] = useState('');
  const [addr, setAddr] = useState('');
  const [inv, setInv] = useState('');
  const [subs, setSubs] = useState<string[]>([]);
  const [knownSubs, setKnownSubs] = useState<string[]>([]);
  useEffect(() => {
    const seen = s.model.lifelines.filter((l) => l.kind === 'subscriber').map((l) => l.id);
    if (seen.some((x) => !knownSubs.includes(x)))
      setKnownSubs((k) => [...new Set([...k, ...seen])].sort());
  }, [s.model.lifelines, knownSubs]);
  const parsed = useMemo(
    () => parseFilterInputs({ pid, addr, inv, subscribers: subs }),
    [pid, addr, inv, subs],
  );
  useEffect(() => {
    const t = window.setTimeout(() => {
      if (!sameFilter(parsed.filter, live.builder.getFilter())) live.setFilter(parsed.filter);
    }, 250);
    return () => window.clearTimeout(t);
  }, [parsed, live]);

  // ---- selection ------------------------------------------------------------------------------
  const show = (row: number | undefined) => {
    if (row !== undefined) setReveal({ row, serial: ++serial.current });
  };
  const selectGroup = useCallback((x: string) => {
    setSelectedInv(x);
    setSelectedEvent(null);
  }, []);
  const selectGroupAndShow = useCallback(
    (x: string) => {
      selectGroup(x);
      live.setPaused(true);
      show(live.builder.group(x)?.startRow);
    },
    [live, selectGroup],
  );
  const selectEvent = useCallback(
    (id: string) => {
      setSelectedEvent(id);
      const row = live.builder.rowOf(id);
      const rowInv =
        row !== undefined
          ? live.builder.model().rows[row - live.builder.model().firstRow]?.inv
          : undefined;
      setSelectedInv((cur) => (cur !== null && cur === rowInv ? cur : null));
    },
    [live],
  );
  const selectEventAndShow = useCallback(
    (id: string) => {
      selectEvent(id);
      live.setPaused(true);
      show(live.builder.rowOf(id));
    },
    [live, selectEvent],
  );
  const clear = useCallback(() => {
    setSelectedInv(null);
    setSelectedEvent(null);
  }, []);
  const pause = useCallback(() => live.setPaused(true), [live]);
  const toggle = () => live.setPaused(!now.paused);

  const invalid = (k: 'pid' | 'addr') => parsed.errors[k];
  const expected = s.violations.filter((v) => v.expected).length;
  const real = s.violations.length - expected;
  return (
    <div className="app">
      <header className="toolbar">
        <h1>
          mmlab <span>live</span>
        </h1>
        <button
          type="button"
          className={`follow ${now.paused ? 'paused' : 'following'}`}
          data-testid="follow-toggle"
          aria-pressed={!now.paused}
          onClick={toggle}
          title={
            now.paused ? 'Resume: place the waiting events and follow the newest' : 'Pause the view'
          }
        >
          {now.paused ? `❚❚ Paused${s.waiting ? ` · ${s.waiting} waiting` : ''}` : '▶ Following'}
        </button>
        <span className={`status status-${s.status}`} data-testid="status" data-status={s.status}>
          <span className="dot" /> {STATUS_TEXT[s.status]} · {s.model.counts.shown.toLocaleString()}{' '}
          shown
          {s.model.counts.buffered !== s.model.counts.shown
            ? ` of ${s.model.counts.buffered.toLocaleString()}`
            : ''}{' '}
          · {s.rate.toLocaleString()}/s
          {real > 0 && (
            <b className="violation-count" data-testid="violation-count">
              {' '}
              · {real} violation{real === 1 ? '' : 's'}
            </b>
          )}
          {expected > 0 && (
            <span className="expected-count" data-testid="expected-count">
              {' '}
              · {expected} expected violation{expected === 1 ? '' : 's'}
            </span>
          )}
        </span>
        <button
          type="button"
          data-testid="clear-trace"
          onClick={() => void live.clearTrace()}
          title="Forget the observer's stored trace (POST /reset, with the lab's token)"
        >
          Clear trace
        </button>
        <form className="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filters">
          <label>
            pid
            <input
              value={pid}
              onChange={(e) => setPid(e.target.value)}
              placeholder="e.g. 1, 3"
              size={6}
              aria-invalid={invalid('pid') !== undefined}
              title={invalid('pid') ?? 'only these processes'}
              data-testid="filter-pid"
            />
          </label>
          <label>
            address
            <input
              value={addr}
              onChange={(e) => setAddr(e.target.value)}
              placeholder="e.g. 0x10000000+8"
              size={20}
              aria-invalid={invalid('addr') !== undefined}
              title={invalid('addr') ?? 'an address, start-end, or start+pages'}
              data-testid="filter-addr"
            />
          </label>
          <fieldset className="subs" data-testid="filter-subscribers">
            <legend>subscribers</legend>
            {knownSubs.length === 0 && <span className="none">none</span>}
            {knownSubs.map((x) => (
              <label key={x}>
                <input
                  type="checkbox"
                  checked={subs.length === 0 || subs.includes(x)}
                  onChange={(e) => {
                    const all = subs.length === 0 ? knownSubs : subs;
                    const next = e.target.checked
                      ? [...new Set([...all, x])]
                      : all.filter((y) => y !== x);
                    setSubs(
                      next.length === knownSubs.length ? [] : next.length === 0 ? ['(none)'] : next,
                    );
                  }}
                />
                {x}
              </label>
            ))}
          </fieldset>
          <label>
            invalidation
            <input
              value={inv}
              onChange={(e) => setInv(e.target.value)}
              placeholder="e.g. munmap#4"
              size={14}
              data-testid="filter-inv"
            />
          </label>
        </form>
        <Legend />
      </header>
      {s.actionError && (
        <div className="banner" role="alert" data-testid="action-error">
          {s.actionError}
        </div>
      )}
      {s.status === 'lagged' && (
        <div className="banner" role="alert" data-testid="lagged">
          The dashboard fell behind the observer ({s.lagged?.dropped.toLocaleString()} events not
          sent): lagged, reload.{' '}
          <button type="button" onClick={() => live.reload()}>
            Reload
          </button>
        </div>
      )}
      {s.missed > 0 && (
        <div className="banner warn" role="status">
          {s.missed.toLocaleString()} events arrived while paused beyond what the view keeps; they
          were dropped.
        </div>
      )}
      <main className="main">
        <Diagram
          model={model}
          follow={!now.paused}
          selectedInv={selectedInv}
          selectedEvent={selectedEvent}
          reveal={reveal}
          onSelectGroup={selectGroup}
          onSelectEvent={selectEvent}
          onScrolledAway={pause}
        />
        <Panel
          model={s.model}
          selectedInv={selectedInv}
          selectedEvent={selectedEvent}
          violations={s.violations}
          memory={s.memory}
          onSelectGroup={selectGroupAndShow}
          onSelectEvent={selectEventAndShow}
          onClear={clear}
        />
      </main>
    </div>
  );
}
