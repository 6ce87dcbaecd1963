/**
 * The scenarios of examples/seed/try_to_unmap_one.yaml, in both modes, as `mmlab run --local` runs them: valid in
 * patched (v3.7: invalidate_page after the PT lock is dropped); in legacy (v3.6:
 * ptep_clear_flush_notify under the lock) the checker reports no-sleep-under-ptlock where the
 * slow HCA slept in it. Reclaim against the services themselves: reclaim.e2e-spec.ts.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { LEGACY_TWIN_OK, outcomeOf, runLegacyTwin, runScenario } from '@mmlab/testing';

describe('examples/seed/try_to_unmap_one.yaml, in both eras, as mmlab run --local runs them', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-reclaim-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** try_to_unmap_one's invalidate_page sends to hca0, in trace order: the PT lock each was sent under */
  const pageSends = (evs: TraceEvent[]) => {
    const reclaimOps = new Set(evs.filter((e) => e.kind === 'swap.out').map((e) => e.op));
    return evs.flatMap((e) =>
      e.kind === 'mn.send' &&
      e.subscriber === 'hca0' &&
      e.callback === 'invalidate_page' &&
      reclaimOps.has(e.op)
        ? [e.ptl]
        : [],
    );
  };

  it('try-to-unmap-one.yaml in patched mode: invalidate_page after the unlock, before the free', async () => {
    const { code, results, events, log } = await runScenario(
      'examples/seed/try_to_unmap_one.yaml',
      'reclaim-ttu-patched',
      tmp,
      undefined,
      { report: true },
    );
    expect(results.verdict, log).toBe('valid');
    expect(code).toBe(0);
    const outs = events.filter((e) => e.kind === 'swap.out');
    expect(outs.length).toBe(4); // the four pages the CPU and the HCA touched
    const sends = pageSends(events);
    expect(sends.length).toBeGreaterThanOrEqual(4);
    expect(sends.every((ptl) => ptl === null)).toBe(true);
    expect(events.filter((e) => e.kind === 'swap.in').length).toBe(4);
    // the report shows the pressure: memory.svg, and its section in report.html
    expect(results.report?.memorySvg).toMatch(/memory\.svg$/);
    expect(readFileSync(results.report!.html, 'utf8')).toContain('<section id="memory">');
  });

  it('try-to-unmap-one.yaml in legacy mode: v3.6 sends invalidate_page under the PT lock', async () => {
    const run = await runLegacyTwin(
      'examples/seed/try_to_unmap_one.yaml',
      'reclaim-ttu-legacy',
      tmp,
    );
    expect(outcomeOf(run), run.log).toEqual(LEGACY_TWIN_OK);
    const { events } = run;
    const sends = pageSends(events);
    expect(sends.length).toBeGreaterThanOrEqual(4);
    expect(sends.every((ptl) => typeof ptl === 'string' && ptl.startsWith('ptl:'))).toBe(true);
  });
});
