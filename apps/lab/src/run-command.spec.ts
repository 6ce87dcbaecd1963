/**
 * runCommand writes the run report after results.json, and a report that cannot be written
 * is a warning only. No lab is needed: a NATS URL nobody listens on makes an `unknown` run,
 * which still gets its results.json and its report.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunResults, parseScenario } from '@mmlab/scenario';
import { type Io, runCommand, unexpectedFsck } from './run-command';

/** A port that was free a moment ago and that nobody listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('runCommand: the run report', () => {
  let tmp: string;
  let file: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-run-report-'));
    file = path.join(tmp, 'tiny.yaml');
    writeFileSync(file, 'name: tiny\nsteps:\n  - { op: process.create, as: p }\n');
    env = { NATS_URL: `nats://127.0.0.1:${await closedPort()}` };
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  const run = async (out: string) => {
    const err: string[] = [];
    const io: Io = { out: () => undefined, err: (l) => err.push(l), env };
    const code = await runCommand(file, { out }, io);
    const results = RunResults.parse(
      JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')),
    );
    return { code, results, err: err.join('\n') };
  };

  it('is written beside results.json, which names it, for any verdict', async () => {
    const out = path.join(tmp, 'ok');
    const { code, results, err } = await run(out);
    expect(code).toBe(2);
    expect(results.verdict).toBe('unknown');
    expect(err).not.toContain('report');
    expect(results.report).toEqual({
      html: path.join(out, 'report.html'),
      latencySvg: path.join(out, 'latency.svg'),
      ptlHoldSvg: path.join(out, 'ptl-hold.svg'),
    });
    const page = readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(page).toContain('<span class="badge verdict-unknown">UNKNOWN</span>');
    expect(page).toContain(`run did not complete: lab: cannot reach NATS at ${env.NATS_URL}`);
    expect(readFileSync(path.join(out, 'ptl-hold.svg'), 'utf8')).toContain(
      'no PT lock was released in this run',
    );
  });

  it('a report that cannot be written is a warning: same verdict, same exit code', async () => {
    const out = path.join(tmp, 'blocked');
    // A directory where the page should go: writing report.html fails.
    mkdirSync(path.join(out, 'report.html'), { recursive: true });
    const { code, results, err } = await run(out);
    expect(code).toBe(2);
    expect(results.verdict).toBe('unknown');
    expect(results.report).toBeUndefined();
    expect(err).toMatch(/warning: the run report was not written: .*EISDIR/);
    expect(existsSync(path.join(out, 'trace.jsonl'))).toBe(true);
  });
});

describe('unexpectedFsck: what fsck found that the scenario does not name', () => {
  const scenario = (expectFsck: string) => {
    const r = parseScenario(
      `name: s\nsteps:\n  - { op: process.create, as: p }\nexpect: { fsck: [${expectFsck}] }\n`,
      's.yaml',
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.scenario;
  };
  const finding = (code: string) => ({ code, key: '{mem}:frames', message: code, objects: {} });
  const found = { ok: false, findings: [finding('mapcount'), finding('pte-outside-vma')] };

  it('names every finding when the scenario expects none, and none when fsck was clean', () => {
    expect(unexpectedFsck(found, scenario('')).map((f) => f.code)).toEqual([
      'mapcount',
      'pte-outside-vma',
    ]);
    expect(unexpectedFsck({ ok: true, findings: [] }, scenario(''))).toEqual([]);
    expect(unexpectedFsck(undefined, scenario(''))).toEqual([]);
  });

  it('leaves out the codes the scenario expects, and only those', () => {
    expect(unexpectedFsck(found, scenario('mapcount')).map((f) => f.code)).toEqual([
      'pte-outside-vma',
    ]);
  });

  it('rejects a code fsck does not have', () => {
    expect(
      parseScenario(
        `name: s\nsteps: [{ op: process.create, as: p }]\nexpect: { fsck: [bogus] }\n`,
        's.yaml',
      ).ok,
    ).toBe(false);
  });
});
