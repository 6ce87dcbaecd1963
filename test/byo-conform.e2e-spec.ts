/**
 * Bring your own device (issue 16), as a user does it: `./scripts/lab.sh --byo gpu0` (`mmlab up
 * --byo gpu0`) makes the device's NATS identity and Redis user and writes
 * them to a private file; the example device (examples/byo/toy-gpu.ts, built into dist) joins
 * the lab as its own process with `--creds FILE`; `mmlab conform --subscriber gpu0` runs the
 * battery against it and passes. The deliberately buggy variant (acks before its flush
 * completes) fails, and the checker names the rule: teardown-before-free (the page freed while
 * the device still maps it), with the device's late smap.clear and its stale access.
 *
 * Cost: one lab (mm-0, cpu0, observer: no HCA), two device processes, two conform runs (the
 * buggy one on the munmap scenario only).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcClient, connectNats } from '@mmlab/runtime';
import { freePort, repoRoot } from '@mmlab/runner';
import { codeOf, runMmlab } from '@mmlab/testing';

const root = repoRoot();

interface Spawned {
  proc: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

/**
 * Start a node script (or, cmd given, that command); resolve once its output matches ready
 * (reject if it exits first).
 */
async function start(
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv,
  cmd: string = process.execPath,
): Promise<Spawned> {
  const proc = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (ready.test(out)) resolve();
    };
    proc.stdout.on('data', check);
    proc.stderr.on('data', check);
    void exited.then((code) => reject(new Error(`${args[0]} exited (${code}):\n${out}`)));
  });
  return { proc, out: () => out, exited };
}

async function stop(s: Spawned | undefined, sig: NodeJS.Signals): Promise<number | null> {
  if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return s?.proc.exitCode ?? null;
  s.proc.kill(sig);
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 20_000);
  try {
    return await s.exited;
  } finally {
    clearTimeout(t);
  }
}

describe('bring your own device: mmlab up --byo, the example device, mmlab conform', () => {
  let tmp: string;
  let up: Spawned | undefined;
  let credsFile: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-byo-'));
    const runDir = path.join(tmp, 'run');
    mkdirSync(runDir);
    chmodSync(runDir, 0o700);
    const base = { ...process.env, MMLAB_RUNTIME_DIR: runDir };
    // the lab as the README starts it: ./scripts/lab.sh (which checks the options, finds the
    // packages installed and dist/ up to date — scripts/test.sh builds through the same
    // build-if-stale.sh — and execs `mmlab up`)
    up = await start(
      [
        ...['--byo', 'gpu0', '--hca', '0', '--cpus', '1', '--mm-replicas', '1', '--frames', '64'],
        ...['--swap-slots', '64'],
        ...['--free-ports', '--api-port', String(await freePort())],
        ...['--logs', path.join(tmp, 'logs')],
      ],
      /Ctrl-C stops everything\./,
      base,
      path.join(root, 'scripts', 'lab.sh'),
    );
    credsFile = /node dist\/examples\/byo\/toy-gpu\.js --creds (\S+)/.exec(up.out())![1];
    const conform = /^ {2}(NATS_URL=\S+) (MMLAB_OBSERVER_URL=\S+) npx mmlab conform/m.exec(
      up.out(),
    )!;
    const [natsVar, obsVar] = [conform[1], conform[2]].map((kv) => kv.split('=', 2));
    env = { ...base, [natsVar[0]]: natsVar[1], [obsVar[0]]: obsVar[1] };
  });
  afterAll(async () => {
    await stop(up, 'SIGINT');
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("the device's credentials: its own NATS user, the dev Redis user, in a 0600 file", () => {
    expect(statSync(credsFile).mode & 0o777).toBe(0o600);
    const creds = JSON.parse(readFileSync(credsFile, 'utf8')) as Record<string, unknown>;
    expect(creds.name).toBe('gpu0');
    expect(creds.natsUrl).toMatch(/^nats:\/\/gpu0:[^@]+@127\.0\.0\.1:\d+$/);
    expect(creds.redisUrl).toMatch(/^redis:\/\/dev:[^@]+@127\.0\.0\.1:\d+$/);
  });

  it('its NATS identity acts as itself only (kind dev: mmlab.mm.by.gpu0.>, not another)', async () => {
    const { natsUrl } = JSON.parse(readFileSync(credsFile, 'utf8')) as { natsUrl: string };
    const nc = await connectNats(natsUrl, 'gpu0-probe');
    try {
      const rpc = new RpcClient(nc, 1000);
      const gup = (agent: string) =>
        codeOf(
          rpc.call('gup', {
            pid: 9999,
            addr: 0x10000000,
            pages: 1,
            write: false,
            pin: false,
            agent,
          }),
        );
      expect(await gup('gpu0')).toBe('ESRCH'); // mm answered: no such process
      expect(await gup('hca0')).not.toBe('ESRCH'); // the server dropped it: nobody answers
    } finally {
      await nc.close();
    }
  });

  it('the toy GPU joins the lab and passes the battery; it stops cleanly', async () => {
    const dev = await start(
      [path.join(root, 'dist/examples/byo/toy-gpu.js'), '--creds', credsFile, '--flush-ms', '20'],
      /gpu0 up: ToyGpu/,
      env,
    );
    try {
      const r = await runMmlab(['conform', '--subscriber', 'gpu0'], env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      for (const s of ['fork-cow', 'munmap', 'mprotect', 'mremap', 'madvise', 'exit', 'reclaim'])
        expect(r.stdout).toMatch(new RegExp(`^ {2}PASS ${s} `, 'm'));
      for (const s of ['ksm', 'slow-callbacks', 'paused-callbacks', 'resends'])
        expect(r.stdout).toMatch(new RegExp(`^ {2}PASS ${s} `, 'm'));
      expect(r.stdout).not.toMatch(/SKIP|FAIL/);
      expect(r.stdout).toMatch(/conform gpu0: PASS \(11 scenarios run\)/);
    } finally {
      // SIGTERM: detached everywhere, lease dropped, exit 0
      expect(await stop(dev, 'SIGTERM'), dev.out()).toBe(0);
    }
  });

  it('the buggy variant (ack before flush) fails: teardown-before-free, with the events', async () => {
    const dev = await start(
      [
        path.join(root, 'dist/examples/byo/toy-gpu-buggy.js'),
        ...['--creds', credsFile, '--flush-ms', '50'],
      ],
      /gpu0 up: ToyGpuBuggy/,
      env,
    );
    try {
      const r = await runMmlab(['conform', '--subscriber', 'gpu0', '--only', 'munmap'], env);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stdout).toMatch(/^ {2}FAIL munmap .*: .*teardown-before-free/m);
      // the offender (mm's free) and the device's translation still live at that moment
      expect(r.stdout).toMatch(
        /teardown-before-free: \d+ violation\(s\), first: frame pfn \d+ gen \d+ freed while still mapped by gpu0/,
      );
      expect(r.stdout).toMatch(/mm-0:\d+ frame\.free/);
      expect(r.stdout).toMatch(/gpu0:\d+ smap\.set/);
      expect(r.stdout).toMatch(/conform gpu0: FAIL \(1 of 1: munmap\)/);
    } finally {
      expect(await stop(dev, 'SIGTERM'), dev.out()).toBe(0);
    }
  });
});
