/**
 * `mmlab run` against a lab it did not start (as after `./scripts/lab.sh`), with the built CLI:
 *   - a scenario whose mode or subscriber latency is not the lab's is refused: unknown, exit 2,
 *     the differences named, nothing run, and results.json records the lab's mode, not the
 *     scenario's;
 *   - a matching scenario runs, and a fault window opened before it with `mmlab chaos` (through
 *     `mmlab api`) is in its results;
 *   - a refused run does not replace the complete run's results: it goes beside them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '@mmlab/runner';
import { newLabToken } from '@mmlab/runtime';
import { RunResults } from '@mmlab/scenario';
import { type TestLab, runMmlab, startTestLab } from '@mmlab/testing';

const root = repoRoot();
let t: TestLab;
let tmp: string;
let env: NodeJS.ProcessEnv;
let api: ChildProcess | undefined;

const readResults = (dir: string) =>
  RunResults.parse(JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8')));

/** a scenario file in tmp: one process created, written and read on the lab's two CPUs */
function scenario(name: string, config: string): string {
  const file = path.join(tmp, `${name}.yaml`);
  writeFileSync(
    file,
    [
      `name: ${name}`,
      `config: ${config}`,
      'steps:',
      '  - { op: process.create, as: p }',
      '  - { op: mmap, process: p, pages: 2, prot: rw, as: buf }',
      '  - { op: cpu.write, cpu: 0, process: p, addr: buf, value: 7 }',
      '  - { op: cpu.read, cpu: 1, process: p, addr: buf, expect: 7 }',
      '',
    ].join('\n'),
  );
  return file;
}

const LAB = 'frames: 64, cpus: 2, mmReplicas: 1';

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-run-lab-'));
  t = await startTestLab(
    {
      mode: 'legacy',
      frames: 64,
      cpus: 2,
      mmReplicas: 1,
      subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 5 }],
    },
    { trace: false },
  );
  // the token `mmlab api` and `mmlab chaos` share, as a compose user sets it in both shells
  env = {
    ...process.env,
    NATS_URL: t.lab.natsUrl,
    MMLAB_OBSERVER_URL: t.lab.observerUrl!,
    MMLAB_LAB_TOKEN: newLabToken(),
  };
}, 120_000);

afterAll(async () => {
  if (api && api.exitCode === null) api.kill('SIGKILL');
  await t?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('mmlab run against a running lab', () => {
  it('refuses a scenario of another mode: unknown, exit 2, the lab mode recorded, nothing run', async () => {
    const out = path.join(tmp, 'out-patched');
    const file = scenario(
      'patched',
      `{ mode: patched, ${LAB}, subscribers: [{ name: hca0, kind: hca, invalidateLatencyMs: 5 }] }`,
    );
    const r = await runMmlab(['run', file, '--out', out], env);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toContain('mode: the scenario asks for "patched", the lab runs "legacy"');
    const res = readResults(out);
    expect(res.verdict).toBe('unknown');
    expect(res.config.mode).toBe('legacy');
    expect(res.steps).toEqual([]);
    expect(res.error).toMatch(/nothing was run/);
  });

  it('refuses a scenario whose subscriber latency is not the lab', async () => {
    const out = path.join(tmp, 'out-latency');
    const file = scenario(
      'latency',
      `{ mode: legacy, ${LAB}, subscribers: [{ name: hca0, kind: hca, invalidateLatencyMs: 300 }] }`,
    );
    const r = await runMmlab(['run', file, '--out', out], env);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toContain(
      'hca0.invalidateLatencyMs: the scenario asks for "300", the lab runs "5"',
    );
    expect(readResults(out).config.subscribers).toEqual([
      { name: 'hca0', kind: 'hca', invalidateLatencyMs: 5, npfDelayMs: 0 },
    ]);
  });

  it('runs a matching scenario, with the window `mmlab chaos` opened before it in its results', async () => {
    const proc = spawn(
      process.execPath,
      [path.join(root, 'dist/apps/lab/src/main.js'), 'api', '--port', '0', '--host', '127.0.0.1'],
      { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    api = proc;
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      proc.stdout.on('data', () => {
        const m = /lab API on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      proc.once('exit', (c) => reject(new Error(`mmlab api exited (${c}): ${out}`)));
    });
    const opened = await runMmlab(
      ['chaos', 'hca0', 'latency', '--distribution', '2', '--lab-url', url],
      env,
    );
    expect(opened.code, opened.stderr).toBe(0);

    const dir = path.join(tmp, 'out-match');
    const file = scenario(
      'match',
      `{ mode: legacy, ${LAB}, subscribers: [{ name: hca0, kind: hca, invalidateLatencyMs: 5 }] }`,
    );
    const r = await runMmlab(['run', file, '--out', dir], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('(opened before the run)');
    const res = readResults(dir);
    expect(res.verdict).toBe('valid');
    expect(res.config.mode).toBe('legacy');
    const before = res.chaos?.faults.filter((f) => f.openedBefore) ?? [];
    expect(before.map((f) => [f.target, f.fault, f.endMs])).toEqual([['hca0', 'latency', null]]);
    expect(before[0].startMs).toBeLessThan(0);

    expect((await runMmlab(['heal', '--lab-url', url], env)).code).toBe(0);
    proc.kill('SIGTERM');

    // a refused run with the same --out: the valid run stays, the refused one goes beside it
    const patched = scenario('match2', `{ mode: patched, ${LAB} }`);
    const refused = await runMmlab(['run', patched, '--out', dir], env);
    expect(refused.code).toBe(2);
    expect(refused.stdout).toContain(`${dir} still holds the last complete run`);
    expect(readResults(dir).verdict).toBe('valid');
    expect(readResults(`${dir}.unknown`).verdict).toBe('unknown');
  });
});
