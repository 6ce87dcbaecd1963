/**
 * The report's sequence-diagram section, behind one adapter: the report asks for the section
 * and does not know who draws it.
 *
 * The diagram is @mmlab/diagram's, the one the live dashboard draws: one lifeline per
 * instance, arrows for messages, PT-lock and sleep bars, invalidations grouped, the checker's
 * violations marked where they happened, as one standalone SVG (at most DIAGRAM_MAX_ROWS
 * rows; the rest is summarized). Should drawing it fail, the section says why and shows the
 * run's events as a compact timeline table instead (capped too; trace.jsonl holds them all).
 */
import type { TraceEvent } from '@mmlab/protocol';
import { type ViolationInput, buildDiagram, renderSequenceSvg } from '@mmlab/diagram';
import type { InvariantResult } from '@mmlab/scenario';
import { type Html, html, trustedHtml } from './html';

/** Rows of the sequence diagram drawn in a report. */
export const DIAGRAM_MAX_ROWS = 3000;
/** Rows of the fallback timeline; the rest are counted, not shown. */
export const TIMELINE_MAX_ROWS = 2000;
/** A timeline this short is shown open; a longer one starts folded. */
const TIMELINE_OPEN_ROWS = 60;

/** What the report embeds: markup (SVG or HTML), and where it came from. */
export interface DiagramSection {
  body: Html;
  /** 'diagram': the sequence diagram; 'timeline': the fallback table */
  source: 'diagram' | 'timeline';
}

/** The checker's violations as the diagram marks them (by event id). */
export function violationInputs(invariants: readonly InvariantResult[]): ViolationInput[] {
  return invariants.flatMap((i) =>
    i.violations.map((v) => ({
      invariant: i.name,
      message: v.message,
      events: v.events.flatMap((e) =>
        typeof e === 'object' && e !== null && typeof (e as { id?: unknown }).id === 'string'
          ? [{ id: (e as { id: string }).id }]
          : [],
      ),
    })),
  );
}

export function diagramSection(
  events: readonly TraceEvent[],
  t0: number,
  invariants: readonly InvariantResult[] = [],
): DiagramSection {
  try {
    const model = buildDiagram(events, { violations: violationInputs(invariants) });
    const svg = renderSequenceSvg(model, { maxRows: DIAGRAM_MAX_ROWS, timeOrigin: t0 });
    return { body: html`<div class="diagram">${trustedHtml(svg)}</div>`, source: 'diagram' };
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return {
      body: html`<p class="note">The sequence diagram could not be drawn: ${why}</p>
        ${timeline(events, t0)}`,
      source: 'timeline',
    };
  }
}

const BASE = new Set(['id', 'ts', 'service', 'instance', 'op', 'kind']);

/** The event's own fields, `k=v` each, addresses in hex. */
function details(e: TraceEvent): string {
  return Object.entries(e)
    .filter(([k]) => !BASE.has(k))
    .map(([k, v]) => {
      const addrLike = ['addr', 'start', 'end', 'from', 'to'].includes(k);
      if (typeof v === 'number')
        return `${k}=${addrLike ? '0x' + v.toString(16) : String(Math.round(v * 1000) / 1000)}`;
      return `${k}=${JSON.stringify(v)}`;
    })
    .join(' ');
}

function timeline(events: readonly TraceEvent[], t0: number): Html {
  const sorted = [...events].sort((a, b) => a.ts - b.ts);
  const shown = sorted.slice(0, TIMELINE_MAX_ROWS);
  const instances = [...new Set(sorted.map((e) => e.instance))].sort();
  return html`<p class="note">
      The run's events in time order, ${instances.length} instance(s): ${instances.join(', ')}.
      ${
        sorted.length > shown.length &&
        html`Showing the first ${shown.length} of ${sorted.length} events (all are in trace.jsonl).`
      }
    </p>
    <details${events.length <= TIMELINE_OPEN_ROWS ? html` open` : ''}>
      <summary>${sorted.length} event(s)</summary>
      <table class="timeline">
        <thead>
          <tr>
            <th>t (ms)</th>
            <th>instance</th>
            <th>kind</th>
            <th>op</th>
            <th>fields</th>
          </tr>
        </thead>
        <tbody>
          ${shown.map(
            (e) =>
              html`<tr class="svc-${e.service}">
                <td class="num">${(e.ts - t0).toFixed(3)}</td>
                <td>${e.instance}</td>
                <td>${e.kind}</td>
                <td>${e.op ?? ''}</td>
                <td class="mono">${details(e)}</td>
              </tr>`,
          )}
        </tbody>
      </table>
    </details>`;
}
