/**
 * The side panel: the selected invalidation's events (every service's, in time order), or one
 * selected event's fields; below, memory (reclaim and swap: Memory.tsx), then the latest
 * invalidations and the violations, clickable.
 */
import { memo } from 'react';
import type { TraceEvent } from '@mmlab/protocol';
import {
  type DiagramModel,
  GROUP_COLORS,
  type InvGroup,
  MARKER_COLORS,
  type Marker,
  type ViolationInput,
  describeEvent,
} from '@mmlab/diagram';
import { Memory } from './Memory';
import type { MemoryState } from './memory';

export interface PanelProps {
  model: DiagramModel;
  selectedInv: string | null;
  selectedEvent: string | null;
  violations: ViolationInput[];
  memory: MemoryState;
  onSelectGroup: (inv: string) => void;
  onSelectEvent: (id: string) => void;
  onClear: () => void;
}

const LISTED = 150;
const ms = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`;

function eventsOf(model: DiagramModel, g: InvGroup): TraceEvent[] {
  return g.rows
    .filter((r) => r >= model.firstRow)
    .map((r) => model.rows[r - model.firstRow]?.event)
    .filter((e): e is TraceEvent => e !== undefined);
}

function GroupDetail({
  model,
  g,
  onSelectEvent,
  selectedEvent,
}: {
  model: DiagramModel;
  g: InvGroup;
  selectedEvent: string | null;
  onSelectEvent: (id: string) => void;
}) {
  const events = eventsOf(model, g);
  const hex = (n: number) => '0x' + n.toString(16);
  return (
    <section className="detail" aria-label={`Events of invalidation ${g.inv}`}>
      <h2>
        <span className="swatch" style={{ background: GROUP_COLORS[g.kind] }} />
        {g.kind === 'range'
          ? 'invalidate_range'
          : g.kind === 'page'
            ? 'invalidate_page'
            : g.kind}{' '}
        <code data-testid="panel-inv">{g.inv}</code>
      </h2>
      <dl className="facts">
        <dt>process</dt>
        <dd>pid {g.pid}</dd>
        {g.start !== undefined && g.end !== undefined && (
          <>
            <dt>range</dt>
            <dd>
              [{hex(g.start)}, {hex(g.end)}){g.reason ? ` · ${g.reason}` : ''}
            </dd>
          </>
        )}
        <dt>from</dt>
        <dd>{g.mm || '?'}</dd>
        <dt>subscribers</dt>
        <dd>{g.subscribers.join(', ') || 'none'}</dd>
        <dt>lifelines</dt>
        <dd data-testid="panel-lifelines">{g.lifelines.join(', ')}</dd>
        <dt>took</dt>
        <dd>
          {ms(g.endTs - g.startTs)} {g.complete ? '' : '(in flight)'}
          {g.flagged ? ' · flagged' : ''}
        </dd>
      </dl>
      <table className="events" data-testid="panel-events">
        <thead>
          <tr>
            <th>+ms</th>
            <th>instance</th>
            <th>event</th>
            <th>details</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr
              key={e.id}
              data-testid="panel-event"
              data-kind={e.kind}
              data-instance={e.instance}
              data-event-id={e.id}
              className={e.id === selectedEvent ? 'selected' : undefined}
              onClick={() => onSelectEvent(e.id)}
            >
              <td className="num">{(e.ts - g.startTs).toFixed(2)}</td>
              <td>{e.instance}</td>
              <td className="kind">{e.kind}</td>
              <td className="desc">{describeEvent(e)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function EventDetail({
  e,
  inv,
  markers,
  onSelectGroup,
}: {
  e: TraceEvent;
  inv?: string;
  markers: Marker[];
  onSelectGroup: (inv: string) => void;
}) {
  return (
    <section className="detail" aria-label={`Event ${e.id}`}>
      <h2>
        {e.kind} <code>{e.id}</code>
      </h2>
      <p className="desc">{describeEvent(e)}</p>
      {markers.map((m, i) => (
        <p
          key={i}
          className={`flag flag-${m.kind}`}
          style={{ borderLeftColor: MARKER_COLORS[m.kind] }}
        >
          <b>{m.title}</b> {m.message}
        </p>
      ))}
      {inv !== undefined && (
        <p>
          part of{' '}
          <button type="button" className="link" onClick={() => onSelectGroup(inv)}>
            {inv}
          </button>
        </p>
      )}
      <pre className="json" data-testid="panel-json">
        {JSON.stringify(e, null, 2)}
      </pre>
    </section>
  );
}

export const Panel = memo(function Panel(p: PanelProps) {
  const { model } = p;
  const g =
    p.selectedInv !== null ? p.model.groups.find((x) => x.inv === p.selectedInv) : undefined;
  const selectedRow =
    p.selectedEvent !== null ? model.rows.find((r) => r.event.id === p.selectedEvent) : undefined;
  const recent = model.groups.slice(-LISTED).reverse();
  return (
    <aside className="panel" data-testid="event-panel" role="region" aria-label="Selected events">
      <div className="panel-top">
        {g ? (
          <GroupDetail
            model={model}
            g={g}
            selectedEvent={p.selectedEvent}
            onSelectEvent={p.onSelectEvent}
          />
        ) : selectedRow ? (
          <EventDetail
            e={selectedRow.event}
            inv={selectedRow.inv}
            markers={model.markers.filter((m) => m.eventId === selectedRow.event.id)}
            onSelectGroup={p.onSelectGroup}
          />
        ) : (
          <p className="hint">
            Click an invalidation in the diagram (or below) to read its events across services;
            click a row for one event.
          </p>
        )}
        {(g || selectedRow) && (
          <button
            type="button"
            className="clear"
            onClick={p.onClear}
            aria-label="Clear the selection"
          >
            ×
          </button>
        )}
      </div>
      <Memory memory={p.memory} />
      <section className="lists">
        <h3>
          Violations <span className="count">{p.violations.length}</span>
        </h3>
        <ul className="violations" data-testid="violations">
          {p.violations.length === 0 && <li className="none">none so far</li>}
          {p.violations.slice(0, 50).map((v, i) => (
            <li
              key={i}
              className={v.expected ? 'expected' : 'violation'}
              data-testid={v.expected ? 'expected-violation' : 'violation'}
            >
              <button
                type="button"
                onClick={() => v.events[0] && p.onSelectEvent(v.events[0].id)}
                style={{ borderLeftColor: MARKER_COLORS[v.expected ? 'expected' : 'violation'] }}
                title={
                  v.expected ? 'the running scenario expects this invariant to break' : undefined
                }
              >
                {v.expected && <span className="tag">expected</span>}
                <b>{v.invariant}</b> {v.message}
              </button>
            </li>
          ))}
        </ul>
        <h3>
          Invalidations <span className="count">{model.groups.length}</span>
        </h3>
        <ul className="invs" data-testid="inv-list">
          {recent.map((x) => (
            <li key={x.inv}>
              <button
                type="button"
                data-testid="inv-list-item"
                data-inv={x.inv}
                aria-pressed={x.inv === p.selectedInv}
                onClick={() => p.onSelectGroup(x.inv)}
                style={{
                  borderLeftColor: x.flagged ? MARKER_COLORS.violation : GROUP_COLORS[x.kind],
                }}
              >
                <span className="inv-kind">{x.kind}</span> <code>{x.inv}</code>
                <span className="inv-meta">
                  pid {x.pid} · {x.lifelines.length} lifelines · {ms(x.endTs - x.startTs)}
                  {x.complete ? '' : ' · in flight'}
                </span>
              </button>
            </li>
          ))}
        </ul>
      </section>
    </aside>
  );
});
