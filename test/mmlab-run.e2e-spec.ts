/**
 * `mmlab run` end to end: the built CLI (dist/, so `npm run build` first) starts a local lab
 * (real nats-server, redis-server, observer, mm and cpu processes), runs a scenario and
 * writes results.json; the exit code is the verdict.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunResults } from '@mmlab/scenario';
import { runMmlab } from '@mmlab/testing';

const root = path.resolve(__dirname, '..');
const example = path.join(root, 'examples', 'anon-basic.yaml');

const mmlab = runMmlab;

const readResults = (out: string): RunResults =>
  RunResults.parse(JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')));

describe('mmlab run', () => {
  let tmp: string;
  beforeAll(() => {
    const cli = path.join(root, 'dist', 'apps', 'lab', 'src', 'main.js');
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build first`);
    tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-run-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('runs examples/anon-basic.yaml on a local lab: valid, exit 0', async () => {
    const out = path.join(tmp, 'valid');
    const r = await mmlab(['run', example, '--local', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('anon-basic: VALID');

    const res = readResults(out);
    expect(res.name).toBe('anon-basic');
    expect(res.seed).toBe(1);
    expect(res.config).toEqual({ mode: 'patched', frames: 256, cpus: 2, mmReplicas: 2 });
    expect(res.verdict).toBe('valid');
    expect(res.error).toBeUndefined();
    expect(res.steps.map((s) => [s.index, s.line, s.op, s.ok])).toEqual([
      [0, 5, 'process.create', true],
      [1, 6, 'mmap', true],
      [2, 7, 'cpu.write', true],
      [3, 8, 'cpu.read', true],
      [4, 9, 'cpu.read', true],
      [5, 10, 'mmap', true],
      [6, 11, 'cpu.read', true],
      [7, 12, 'munmap', true],
    ]);
    const [create, map, , read42, read0, guard, segv] = res.steps;
    expect(create.value).toEqual(expect.any(Number));
    expect(map.value).toEqual(expect.any(Number));
    expect(guard.value).toEqual(expect.any(Number));
    expect(read42.value).toBe(42);
    expect(read0.value).toBe(0);
    expect(segv.error?.code).toBe('SIGSEGV');
    expect(segv.value).toBeUndefined();

    expect(res.invariants.length).toBeGreaterThan(0);
    for (const inv of res.invariants)
      expect(inv, inv.name).toMatchObject({ ok: true, violations: [] });

    expect(res.trace).toBe(path.join(out, 'trace.jsonl'));
    const trace = readFileSync(res.trace, 'utf8').trim().split('\n');
    expect(trace.length).toBe(res.metrics.events.total);
    expect(res.metrics.events.total).toBeGreaterThan(0);
    // Two faults at least: the write to page 3 and the read of page 4.
    expect(res.metrics.faults.count).toBeGreaterThanOrEqual(2);
    expect(res.metrics.faults.maxMs).toEqual(expect.any(Number));
    expect(existsSync(path.join(out, 'logs', 'mm-0.log'))).toBe(true);

    // The run report beside it: the page, and the two plots it embeds.
    expect(res.report).toEqual({
      html: path.join(out, 'report.html'),
      latencySvg: path.join(out, 'latency.svg'),
      ptlHoldSvg: path.join(out, 'ptl-hold.svg'),
    });
    const page = readFileSync(path.join(out, 'report.html'), 'utf8');
    const latency = readFileSync(path.join(out, 'latency.svg'), 'utf8');
    const ptlHold = readFileSync(path.join(out, 'ptl-hold.svg'), 'utf8');
    expect(page).toMatch(/^<!doctype html>/);
    expect(page).toContain('<span class="badge verdict-valid">VALID</span>');
    for (const inv of res.invariants) expect(page).toContain(`<td class="mono">${inv.name}</td>`);
    expect(page).toContain(latency);
    expect(page).toContain(ptlHold);
    expect(page).toContain('class="lifeline" data-instance="cpu0"');
    // One point per fault in the latency plot; the hold-time plot is drawn, axes and all.
    const faultMarks = /class="mark-symbol role-mark faults_marks"[^>]*>(.*?)<\/g>/s.exec(latency);
    expect(faultMarks?.[1].match(/<path /g)).toHaveLength(res.metrics.faults.count);
    expect(ptlHold).toMatch(/^<svg [^]*PT-lock hold time[^]*<\/svg>$/);
    expect(ptlHold.length).toBeGreaterThan(2000);
  });

  it('a wrong expect: that step is not ok, invalid, exit 1', async () => {
    const text = readFileSync(example, 'utf8');
    const wrong = text.replace('page: 3, expect: 42', 'page: 3, expect: 43');
    expect(wrong).not.toBe(text);
    const file = path.join(tmp, 'anon-wrong.yaml');
    writeFileSync(file, wrong);
    const out = path.join(tmp, 'invalid');

    const r = await mmlab(['run', file, '--local', '--out', out]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('anon-basic: INVALID');
    expect(r.stdout).toContain('step 3 (line 8) cpu.read: read 42, expected 43');

    const res = readResults(out);
    expect(res.verdict).toBe('invalid');
    expect(res.steps[3]).toMatchObject({ index: 3, line: 8, op: 'cpu.read', ok: false, value: 42 });
    expect(res.steps.filter((s) => !s.ok).map((s) => s.index)).toEqual([3]);
  });

  it('a scenario that does not parse: errors with lines, nothing run, exit 2', async () => {
    const file = path.join(tmp, 'broken.yaml');
    writeFileSync(
      file,
      'name: broken\nsteps:\n  - { op: process.create, as: p\n  - { op: mmap }\n',
    );
    const out = path.join(tmp, 'broken');

    const r = await mmlab(['run', file, '--local', '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/broken\.yaml:\d+:\d+: /);
    expect(existsSync(path.join(out, 'results.json'))).toBe(false);
  });
});
