/**
 * The quick variant of every benchmark of `npm run bench` (bench/suite), seconds each, against
 * real labs: each must produce every row with numeric figures, its JSON and its SVG plot. No
 * timing is asserted (the figures are whatever this machine gives); a change that breaks a
 * benchmark's path (a subject, a trace event it reads, a lab option) fails here.
 *
 * The benchmarks share their labs (bench/lib/labs.ts: one patched, one legacy; the mm replicas
 * restarted when a benchmark names the other dispatch), so the file starts two labs where the
 * benchmarks alone would start twelve; state-footprint (an emptied Redis of its own) and
 * observer-intake (an observer process of its own) still start theirs. The shared labs end with
 * mmlab fsck clean, asserted by the last test.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type BenchResult, formatTable, runBenchmark, writeResult } from '../bench/lib/harness';
import { SharedLabs } from '../bench/lib/labs';
import { BENCHMARKS } from '../bench/suite';

const out = mkdtempSync(path.join(tmpdir(), 'mmlab-bench-quick-'));
const labs = new SharedLabs();
afterAll(async () => {
  rmSync(out, { recursive: true, force: true });
  await labs.stop(); // a test failed before the last one stopped them
});

/** Rows each quick variant has: its configurations (bench/suite/NAME.ts, quick branch). */
const ROWS: Record<string, { count: number; numeric: string[]; keys?: string[] }> = {
  'ptlock-vs-sleep': { count: 4, numeric: ['p50Ms', 'p99Ms', 'maxMs'], keys: ['mode', 'sleepMs'] },
  'faults-under-invalidation': {
    count: 2,
    numeric: ['baselinePerSecond', 'duringPerSecond', 'ratio'],
    keys: ['mode'],
  },
  'dispatch-fanout': {
    count: 4,
    numeric: ['p50Ms', 'maxMs', 'overD'],
    keys: ['dispatch', 'subscribers'],
  },
  'fault-floor': { count: 5, numeric: ['p50Ms', 'overFloorP50'], keys: ['path'] },
  'fault-throughput': {
    count: 4,
    numeric: ['faultsPerSecond', 'overDirectMm'],
    keys: ['cpus', 'replicas'],
  },
  'odp-vs-pinned': {
    count: 4,
    numeric: ['regMs', 'firstTouchMs', 'regOverSmallest'],
    keys: ['mode', 'pages'],
  },
  'state-footprint': { count: 1, numeric: ['bytesPerPage', 'residentBytes'], keys: ['pages'] },
  'observer-intake': { count: 1, numeric: ['sent', 'stored', 'achievedRate'] },
  'mmu-lock': {
    count: 6,
    numeric: ['teardownMs', 'longestHoldMs', 'duringFaultP99Ms', 'idleFaultP99Ms', 'hitP99Ratio'],
    keys: ['mode', 'pages'],
  },
};

const results: BenchResult[] = [];

describe('npm run bench, quick', () => {
  it('has a row shape for every benchmark', () => {
    expect(Object.keys(ROWS).sort()).toEqual(BENCHMARKS.map((b) => b.name).sort());
  });

  it.each(BENCHMARKS.map((b) => [b.name, b] as const))('%s', async (name, b) => {
    const r = await runBenchmark(b, { quick: true, labs });
    const shape = ROWS[name];
    expect(r.name).toBe(name);
    expect(r.quick).toBe(true);
    expect(r.rows).toHaveLength(shape.count);
    for (const row of r.rows)
      for (const k of shape.numeric) {
        expect(typeof row[k], `${name} ${k}`).toBe('number');
        expect(Number.isFinite(row[k]), `${name} ${k} = ${String(row[k])}`).toBe(true);
      }
    // every configuration appears once
    if (shape.keys) {
      const ids = r.rows.map((row) => shape.keys!.map((k) => String(row[k])).join('/'));
      expect(new Set(ids).size).toBe(shape.count);
    }
    expect(Number.isFinite(r.figure.value), `${name} figure ${r.figure.text}`).toBe(true);
    expect(r.target.text).toBe(b.target);
    for (const v of Object.values(r.counts ?? {})) expect(Number.isFinite(v)).toBe(true);
    const files = await writeResult(r, out);
    const json = JSON.parse(readFileSync(files.json, 'utf8')) as BenchResult;
    expect(json.rows).toHaveLength(shape.count);
    const svg = readFileSync(files.svg, 'utf8');
    expect(svg).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    // the data was drawn: a mark per row at least (points, bars or a line path)
    expect((svg.match(/<path/g) ?? []).length).toBeGreaterThanOrEqual(1);
    results.push(r);
  });

  it('the shared labs end with mmlab fsck clean', async () => {
    // stop() runs fsck on each lab and throws its findings
    await expect(labs.stop()).resolves.toBeUndefined();
  });

  it('prints the table with a line per benchmark', () => {
    const table = formatTable(results).split('\n');
    expect(table).toHaveLength(2 + BENCHMARKS.length);
    for (const b of BENCHMARKS) expect(table.some((l) => l.includes(`\`${b.name}\``))).toBe(true);
  });
});
