/**
 * The Memory panel: what reclaim did so far (memory.ts) — free frames after each reclaim pass
 * against kswapd's watermarks, swap-outs and swap-ins (counts and rates), the last passes. One
 * line on a run that has not reclaimed.
 */
import { memo, useEffect, useMemo, useState } from 'react';
import { type MemoryState, RATE_WINDOW_MS, RECLAIM_WHY, memoryChart, memoryView } from './memory';

const BOX = { width: 436, height: 104, left: 30, bottom: 12 };
const RULE_COLORS = { low: '#dc2626', high: '#16a34a' } as const;
const CURVE_COLOR = '#2563eb';

const perSec = (n: number) => `${n.toFixed(n > 0 && n < 10 ? 1 : 0)}/s`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
const clock = (ts: number) => new Date(ts).toLocaleTimeString(undefined, { hour12: false });

export const Memory = memo(function Memory({ memory }: { memory: MemoryState }) {
  // the rates are over the last seconds up to now: look again while they are not 0
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => setNow(Date.now()), [memory]);
  const v = useMemo(() => memoryView(memory, now), [memory, now]);
  const moving = v !== null && v.swapOutRate + v.swapInRate > 0;
  useEffect(() => {
    if (!moving) return;
    const t = window.setTimeout(() => setNow(Date.now()), 1000);
    return () => window.clearTimeout(t);
  }, [moving, now]);

  if (v === null)
    return (
      <section className="memory" data-testid="memory-panel" data-reclaim="false">
        <h3>Memory</h3>
        <p className="none" data-testid="memory-none">
          no reclaim yet
        </p>
      </section>
    );
  const c = memoryChart(v, BOX);
  const window_ = seconds(RATE_WINDOW_MS);
  return (
    <section className="memory" data-testid="memory-panel" data-reclaim="true">
      <h3>
        Memory <span className="count">{v.passes} reclaim passes</span>
      </h3>
      <p className="memory-note">
        free frames after each pass{c.spanMs > 0 ? `, over ${seconds(c.spanMs)}` : ''}
      </p>
      <svg
        className="memory-chart"
        width={BOX.width}
        height={BOX.height}
        role="img"
        aria-label="Free frames after each reclaim pass, against kswapd's watermarks"
        data-testid="memory-chart"
        data-points={c.dots.length}
      >
        <line x1={c.plot.x0} x2={c.plot.x1} y1={c.plot.y0} y2={c.plot.y0} className="axis" />
        <line x1={c.plot.x0} x2={c.plot.x0} y1={c.plot.y0} y2={c.plot.y1} className="axis" />
        <text x={c.plot.x0 - 4} y={c.plot.y0} className="tick" textAnchor="end">
          0
        </text>
        <text x={c.plot.x0 - 4} y={c.plot.y1 + 8} className="tick" textAnchor="end">
          {c.yMax}
        </text>
        {c.rules.map((r) => (
          <g key={r.level} data-testid="memory-watermark" data-level={r.level} data-value={r.value}>
            <line
              x1={c.plot.x0}
              x2={c.plot.x1}
              y1={r.y}
              y2={r.y}
              stroke={RULE_COLORS[r.level]}
              strokeDasharray="4 3"
            />
            {/* at the right end: high above its rule, low below its own (they may be close) */}
            <text
              x={c.plot.x1 - 2}
              y={r.level === 'high' ? r.y - 3 : r.y + 10}
              className="rule-label"
              textAnchor="end"
              fill={RULE_COLORS[r.level]}
            >
              {r.level === 'high'
                ? `high ${r.value}: kswapd stops`
                : `low ${r.value}: kswapd wakes`}
            </text>
          </g>
        ))}
        <polyline
          points={c.points}
          fill="none"
          stroke={CURVE_COLOR}
          strokeWidth="1.5"
          data-testid="memory-free"
        />
        {c.dots.length <= 60 &&
          c.dots.map((d, i) => <circle key={i} cx={d.x} cy={d.y} r="2" fill={CURVE_COLOR} />)}
      </svg>
      <dl className="facts memory-facts">
        <dt>swapped out</dt>
        <dd data-testid="memory-swap-out" data-count={v.swapOut}>
          {v.swapOut.toLocaleString()} · {perSec(v.swapOutRate)}
        </dd>
        <dt>swapped in</dt>
        <dd data-testid="memory-swap-in" data-count={v.swapIn}>
          {v.swapIn.toLocaleString()} ({v.swapInCached.toLocaleString()} from the swap cache) ·{' '}
          {perSec(v.swapInRate)}
        </dd>
        <dt>passes by</dt>
        <dd data-testid="memory-by-why">
          {RECLAIM_WHY.map((w) => `${w} ${v.byWhy[w]}`).join(' · ')}
        </dd>
      </dl>
      <p className="memory-note">rates over the last {window_}</p>
      {v.last.length > 0 && (
        <table className="events memory-passes" data-testid="memory-passes">
          <thead>
            <tr>
              <th>time</th>
              <th>by</th>
              <th className="num">scanned</th>
              <th className="num">reclaimed</th>
              <th className="num">referenced</th>
              <th className="num">pinned</th>
              <th className="num">free</th>
            </tr>
          </thead>
          <tbody>
            {v.last.map((p) => (
              <tr
                key={p.id}
                data-testid="memory-pass"
                data-event-id={p.id}
                data-why={p.why}
                title={`${p.instance} ${p.id}`}
              >
                <td>{clock(p.ts)}</td>
                <td className="kind">{p.why}</td>
                <td className="num">{p.scanned}</td>
                <td className="num">{p.reclaimed}</td>
                <td className="num">{p.referenced}</td>
                <td className="num">{p.pinned}</td>
                <td className="num">{p.free}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
});
