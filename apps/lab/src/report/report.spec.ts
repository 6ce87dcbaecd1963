import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { RunResults, type WorkloadResult } from '@mmlab/scenario';
import { computeMetrics } from '../metrics';
import { diagramSection } from './diagram';
import { html, trustedHtml } from './html';
import { chaosWindows, latencyPoints } from './plots';
import { buildReport, writeReport } from './report';

const T0 = 1_795_561_472_000;

const fault = (n: number, ms: number): TraceEvent => ({
  id: `mm-0:${n}`,
  ts: T0 + n * 100,
  service: 'mm',
  instance: 'mm-0',
  op: `mm-0/fault#${n}`,
  kind: 'fault.end',
  pid: 1,
  addr: 0x10000000 + n * 4096,
  access: 'write',
  agent: 'cpu0',
  result: 'ok',
  how: 'anon',
  pfn: n,
  gen: 1,
  durMs: ms,
  retries: 0,
});

const ack = (n: number, ms: number): TraceEvent => ({
  id: `mm-1:${n}`,
  ts: T0 + n * 100 + 50,
  service: 'mm',
  instance: 'mm-1',
  op: 'mm-1/munmap#2',
  kind: 'mn.ack',
  pid: 1,
  subscriber: 'hca0',
  callback: 'invalidate_range_start',
  inv: `mm-1/munmap#2~${n}`,
  waitedMs: ms,
});

const release = (n: number, heldMs: number): TraceEvent => ({
  id: `mm-1:${100 + n}`,
  ts: T0 + n * 100 + 70,
  service: 'mm',
  instance: 'mm-1',
  op: 'mm-1/munmap#2',
  kind: 'ptl.release',
  pid: 1,
  lock: 'ptl:128',
  owner: 'mm-1/mm-1/munmap#2',
  token: n,
  heldMs,
  released: true,
});

const freedEvent: TraceEvent = {
  id: 'mm-0:40',
  ts: T0 + 300,
  service: 'mm',
  instance: 'mm-0',
  kind: 'frame.free',
  pfn: 1,
  gen: 1,
};
/** As the checker reports it; the extra field shows that event JSON is escaped too. */
const freed = { ...freedEvent, note: '<b>&</b>' };

const events: TraceEvent[] = [
  fault(1, 4.3),
  fault(2, 3.8),
  fault(3, 0.9),
  ack(4, 207.8),
  ack(5, 4.1),
  release(6, 5.4),
  release(7, 1009),
  freedEvent,
];

/** Two chaos windows: a start/end pair and one event with a duration. */
const chaos = [
  { id: 'chaos:1', ts: T0 + 150, kind: 'chaos.partition.start', target: 'hca0' },
  { id: 'chaos:2', ts: T0 + 450, kind: 'chaos.partition.end', target: 'hca0' },
  { id: 'chaos:3', ts: T0 + 500, kind: 'chaos.pause', target: 'mm-1', durMs: 120 },
];

const results: RunResults = RunResults.parse({
  name: 'fixture',
  seed: 7,
  config: { mode: 'legacy', frames: 64, cpus: 2, mmReplicas: 2 },
  verdict: 'invalid',
  startedAt: new Date(T0 - 2000).toISOString(),
  durationMs: 2500,
  steps: [
    {
      index: 0,
      path: 'steps[0]',
      line: 5,
      op: 'process.create',
      ok: true,
      value: 1,
      durationMs: 5,
    },
    {
      index: 1,
      path: 'steps[1]',
      line: 6,
      op: 'cpu.read',
      ok: false,
      value: 42,
      reason: 'read 42, expected 43',
      durationMs: 7,
    },
  ],
  invariants: [
    { name: 'paired-range', ok: true, checked: 3, violations: [] },
    {
      name: 'teardown-before-free',
      ok: false,
      checked: 4,
      violations: [
        {
          message: 'frame pfn 1 freed while mapped by <script>alert("x")</script> & co',
          events: [freed],
        },
      ],
    },
  ],
  metrics: computeMetrics(events),
  trace: '/tmp/fixture/trace.jsonl',
});

/** The drawn items (paths) of a mark group (`<layer name>_marks`) in an SVG rendered by vega. */
function marks(svg: string, group: string): number {
  const m = new RegExp(`<g class="mark-\\w+ role-mark ${group}"[^>]*?(/>|>(.*?)</g>)`, 's').exec(
    svg,
  );
  if (!m) throw new Error(`no mark group ${group} in the SVG`);
  return (m[2]?.match(/<path /g) ?? []).length;
}

describe('html', () => {
  it('escapes interpolated text, keeps fragments, joins arrays, drops null and false', () => {
    const items = ['a<b', 'c&d'];
    const out = html`<ul>
        ${items.map((i) => html`<li title="${i}">${i}</li>`)}
      </ul>
      ${null}${false}${trustedHtml('<hr>')}${'\'"'}`;
    expect(out.value.replace(/>\s+/g, '>').replace(/\s+</g, '<')).toBe(
      '<ul><li title="a&lt;b">a&lt;b</li><li title="c&amp;d">c&amp;d</li></ul><hr>&#39;&quot;',
    );
  });
});

describe('plot data', () => {
  it('one latency point per fault.end and per mn.ack, in seconds since t0', () => {
    const pts = latencyPoints(events, T0);
    expect(pts.filter((p) => p.series === 'fault').map((p) => [p.t, p.ms])).toEqual([
      [0.1, 4.3],
      [0.2, 3.8],
      [0.3, 0.9],
    ]);
    expect(pts.filter((p) => p.series === 'invalidation').map((p) => [p.t, p.ms, p.who])).toEqual([
      [0.45, 207.8, 'hca0'],
      [0.55, 4.1, 'hca0'],
    ]);
  });

  it('chaos windows: start/end pairs, durations, a start never ended lasts to the end', () => {
    const raw = [
      ...chaos,
      { ts: T0 + 600, kind: 'chaos.kill.start', target: 'cpu1', label: 'kill cpu1' },
      { ts: T0 + 10, kind: 'fault.end' },
      'not an event',
    ];
    expect(chaosWindows(raw, T0 + 900)).toEqual([
      { start: T0 + 150, end: T0 + 450, label: 'partition hca0' },
      { start: T0 + 500, end: T0 + 620, label: 'pause mm-1' },
      { start: T0 + 600, end: T0 + 900, label: 'kill cpu1' },
    ]);
    expect(chaosWindows(events, T0 + 900)).toEqual([]);
  });
});

describe("a KVM run's diagram (examples/kvm/guest-write-host-read, a real trace)", () => {
  const kvmTrace = readFileSync(
    path.join(
      __dirname,
      '../../../../libs/diagram/src/fixtures/kvm-guest-write-host-read.trace.jsonl',
    ),
    'utf8',
  )
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as TraceEvent);

  it("draws kvm0's lifeline, its guest faults and its callbacks", () => {
    const d = diagramSection(kvmTrace, kvmTrace[0].ts);
    expect(d.source).toBe('diagram');
    const svg = String(d.body);
    expect(svg).toContain('class="lifeline" data-instance="kvm0"');
    expect(svg.match(/<title>npf: guest fault ok<\/title>/g)).toHaveLength(3);
    expect(svg).toContain('<title>npf: guest fault EFAULT</title>');
    expect(svg).toContain('<title>mn-call mm-1 → kvm0: invalidate_range_start</title>');
  });
});

describe('buildReport', () => {
  const input = { results, events, rawEvents: [...events, ...chaos], runStartTs: T0 };

  it('latency.svg: one point per fault and per ack, one rect per chaos window', async () => {
    const r = await buildReport(input);
    expect(r.latencySvg).toMatch(/^<svg /);
    expect(marks(r.latencySvg, 'faults_marks')).toBe(3);
    expect(marks(r.latencySvg, 'invalidations_marks')).toBe(2);
    expect(marks(r.latencySvg, 'chaos_marks')).toBe(2);
    expect(r.latencySvg).toContain('partition hca0');

    const none = await buildReport({ ...input, rawEvents: events });
    expect(marks(none.latencySvg, 'chaos_marks')).toBe(0);
    expect(marks(none.latencySvg, 'faults_marks')).toBe(3);
  });

  it('ptl-hold.svg: a bar per occupied bin, colored by the run mode', async () => {
    const r = await buildReport(input);
    // 5.4 ms and 1009 ms fall into two different log bins.
    expect(marks(r.ptlHoldSvg, 'holds_marks')).toBe(2);
    expect(r.ptlHoldSvg).toContain('>legacy<');
    expect(r.ptlHoldSvg).toContain('2 release(s)');
    // The checker's threshold (softlockupMs, default 1000) as a labelled rule.
    expect(r.ptlHoldSvg).toContain('bounded-ptlock-hold: 1000 ms');
  });

  it('report.html: verdicts, escaped messages with their events, both plots inline', async () => {
    const r = await buildReport(input);
    const page = r.html;
    expect(page).toMatch(/^<!doctype html>/);
    expect(page).toContain('<span class="badge verdict-invalid">INVALID</span>');
    // One row per invariant, with its verdict.
    expect(page).toMatch(
      /<tr class="ok">\s*<td class="mono">paired-range<\/td>\s*<td class="verdict-cell">ok<\/td>\s*<td class="num">3<\/td>/,
    );
    expect(page).toMatch(
      /<tr class="bad">\s*<td class="mono">teardown-before-free<\/td>\s*<td class="verdict-cell">VIOLATED<\/td>/,
    );
    // The message escaped, never as markup; its offending event as JSON in a <details>.
    expect(page).toContain(
      'frame pfn 1 freed while mapped by &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co',
    );
    expect(page).not.toContain('<script');
    expect(page).toMatch(/<details class="violation">\s*<summary>\s*frame pfn 1/);
    expect(page).toContain('&quot;id&quot;: &quot;mm-0:40&quot;');
    expect(page).toContain('&quot;note&quot;: &quot;&lt;b&gt;&amp;&lt;/b&gt;&quot;');
    // Both plots inline, as rendered.
    expect(page).toContain(r.latencySvg);
    expect(page).toContain(r.ptlHoldSvg);
    expect(page.match(/<svg /g)).toHaveLength(3);
    // Steps and metrics.
    expect(page).toContain('read 42, expected 43');
    expect(page).toMatch(/<th>fault latency<\/th>\s*<td class="num">3<\/td>/);
    expect(page).toMatch(
      /<td class="mono">hca0<\/td>\s*<td class="mono">invalidate_range_start<\/td>\s*<td class="num">2<\/td>/,
    );
    // The sequence diagram: a lifeline per instance, the violation marked on its event.
    expect(page).toMatch(/<section id="diagram" class="diagram-diagram">/);
    for (const id of ['mm-0', 'mm-1'])
      expect(page).toContain(`class="lifeline" data-instance="${id}"`);
    expect(page.match(/class="marker marker-violation"/g)).toHaveLength(1);
    // Self-contained: nothing fetched.
    expect(page).not.toMatch(/\s(src|href)="(https?:)?\/\//);
    expect(page).not.toMatch(/<link\b|@import|url\((?!#)/);
  });

  it('report.html: a faults-and-workloads section only for a run that had them', async () => {
    expect((await buildReport(input)).html).not.toContain('id="chaos"');
    const w = {
      name: 'cpus',
      kind: 'cpu' as const,
      ops: 10,
      reads: 5,
      writes: 5,
      zaps: 1,
      faults: 8,
      failed: { definite: 0, indefinite: 1, byCode: { ETIMEDOUT: 1 } },
      unexpected: 0,
      impossibleReads: 2,
      impossible: [],
      startedAt: 0,
      durationMs: 1000,
      window: { ms: 1000, ops: 9, faults: 8 },
      opsPerSec: 9,
      faultsPerSec: 8,
      latencyMs: { p50: 1, p99: 2, max: 3 },
    } satisfies WorkloadResult;
    const lat = { count: 0, p50Ms: null, p99Ms: null, maxMs: null };
    const chaos = {
      faults: [
        {
          id: 1,
          target: 'mm',
          instance: 'mm-1',
          fault: 'kill',
          label: 'kill mm (mm-1)',
          startMs: 5,
          endMs: null,
        },
      ],
      schedules: [],
      operations: { ok: 9, failedDefinite: 0, failedIndefinite: 1, byCode: { ETIMEDOUT: 1 } },
      latency: { inFaults: lat, outsideFaults: lat },
      longestPtlHold: null,
      locksLeft: [{ lock: 'ptl:128', pid: 1, owner: 'mm-1/mm-1/fault#4' }],
    };
    const page = (await buildReport({ ...input, results: { ...results, workloads: [w], chaos } }))
      .html;
    expect(page).toContain('id="chaos"');
    expect(page).toContain('kill mm (mm-1)');
    expect(page).toContain('never healed');
    expect(page).toContain('<b>ptl:128 of pid 1 by mm-1/mm-1/fault#4</b>');
    expect(page).toMatch(/<tr class="bad">\s*<td class="mono">cpus<\/td>/);
  });

  it('writeReport writes the three files and returns their paths', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-report-'));
    try {
      const files = await writeReport(dir, input);
      expect(files).toEqual({
        html: path.join(dir, 'report.html'),
        latencySvg: path.join(dir, 'latency.svg'),
        ptlHoldSvg: path.join(dir, 'ptl-hold.svg'),
      });
      expect(readFileSync(files.html, 'utf8')).toContain(readFileSync(files.latencySvg, 'utf8'));
      expect(readFileSync(files.ptlHoldSvg, 'utf8')).toMatch(/^<svg /);
      expect(RunResults.parse({ ...results, report: files }).report).toEqual(files);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('memory.svg and a memory section only for a run that reclaimed: free frames against the watermarks', async () => {
    const base = { id: '', service: 'mm', instance: 'mm-0', op: 'mm-0/reclaim#1' } as const;
    const swapped: TraceEvent[] = [
      ...[1, 2, 3].map((n): TraceEvent => ({
        ...base,
        id: `mm-0:${200 + n}`,
        ts: T0 + 600 + n,
        kind: 'swap.out',
        pid: 1,
        addr: 0x10000000 + n * 4096,
        pfn: n,
        gen: 1,
        slot: n,
        slotGen: 1,
      })),
      {
        ...base,
        id: 'mm-0:210',
        ts: T0 + 700,
        kind: 'reclaim',
        why: 'kswapd',
        scanned: 5,
        reclaimed: 3,
        referenced: 2,
        pinned: 0,
        free: 9,
      },
      {
        ...base,
        id: 'mm-0:211',
        ts: T0 + 800,
        kind: 'swap.in',
        op: 'mm-0/fault#9',
        pid: 1,
        addr: 0x10001000,
        pfn: 4,
        gen: 2,
        slot: 1,
        slotGen: 1,
        cached: false,
      },
    ];
    const withSwap = {
      ...input,
      results: { ...results, config: { ...results.config, watermarks: { low: 4, high: 8 } } },
      events: [...events, ...swapped],
    };
    const r = await buildReport(withSwap);
    expect(r.memorySvg).toMatch(/^<svg /);
    expect(r.memorySvg).toContain('low watermark (4): kswapd wakes');
    expect(r.memorySvg).toContain('high watermark (8): kswapd stops');
    // a point per swap-out (3), swap-in (1) and free-frames sample (1)
    expect(marks(r.memorySvg!, 'layer_0_layer_1_marks')).toBe(5);
    expect(r.html).toContain('<section id="memory">');
    expect(r.html).toContain('3 page(s) swapped out, 1 swapped in (0 from the swap cache)');
    expect(r.html).toMatch(/<td>kswapd<\/td>\s*<td>1<\/td>\s*<td>5<\/td>\s*<td>3<\/td>/);
    // no reclaim: no plot, no section
    const none = await buildReport(input);
    expect(none.memorySvg).toBeUndefined();
    expect(none.html).not.toContain('id="memory"');
  });
});
