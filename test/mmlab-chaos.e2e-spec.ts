/**
 * `mmlab chaos` end to end, with the built CLI (dist/, so build first) as a user runs it:
 * `mmlab up` (real nats-server, redis-server, observer, mm-0, cpu0, hca0, kvm0 and the lab API)
 * as a child process on free ports, then `mmlab chaos ...` / `mmlab heal` against its API,
 * checked against what the processes really do: hca0 and kvm0 drop acks on the wire, cpu0 and
 * kvm0 are stopped in /proc. Then `mmlab api` against the same lab through NATS only (callback faults, and process
 * faults refused), and finally SIGINT to `mmlab up` takes every process down.
 *
 * A second part runs `mmlab api` as the compose `lab-api` NATS user, on a nats-server started
 * from deploy/nats/nats.conf: everything the nemesis needs is allowed, the rest refused.
 * Nothing asserts on durations.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { type NatsConnection, RequestStrategy } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  RPC,
  type TraceEvent,
  subjectFor,
  traceMessageEvents,
  traceSubject,
} from '@mmlab/protocol';
import { connectNats, decodeReply, newLabToken } from '@mmlab/runtime';
import {
  LocalLab,
  type ServerHandle,
  freePort,
  natsUrlWithUser,
  repoRoot,
  startNatsWithConfig,
} from '@mmlab/runner';
import { assertFsckClean, codeOf, rawRangeEnd, runMmlab, until } from '@mmlab/testing';

const root = repoRoot();
const cli = path.join(root, 'dist', 'apps', 'lab', 'src', 'main.js');

interface Spawned {
  proc: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

/** Start the CLI; resolve once stdout matches `ready` (reject if it exits first). */
async function start(
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Spawned> {
  const proc = spawn(process.execPath, [cli, ...args], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (ready.test(out)) {
        proc.stdout.off('data', check);
        resolve();
      }
    };
    proc.stdout.on('data', check);
    void exited.then((code) =>
      reject(new Error(`mmlab ${args[0]} exited (${code}) before it was ready:\n${out}\n${err}`)),
    );
  });
  return { proc, out: () => out, err: () => err, exited };
}

/** Stop a spawned CLI with sig and wait for it (SIGKILL if it hangs). */
async function stop(s: Spawned | undefined, sig: NodeJS.Signals): Promise<number | null> {
  if (!s || s.proc.exitCode !== null || s.proc.signalCode !== null) return s?.proc.exitCode ?? null;
  s.proc.kill(sig);
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 30_000);
  try {
    return await s.exited;
  } finally {
    clearTimeout(t);
  }
}

/** The state letter of /proc/<pid>/stat ("pid (comm) S ..."). */
const stateOf = (pid: number): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.charAt(stat.lastIndexOf(')') + 2);
};

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The token a compose user sets (MMLAB_LAB_TOKEN) for `mmlab api`. */
const TOKEN = newLabToken();

interface Window {
  id: number;
  target: string;
  instance: string;
  fault: string;
  endedAt: number | null;
  healError?: string;
}
interface Status {
  active: Window[];
  windows: Window[];
}

describe('mmlab up + mmlab chaos', () => {
  let tmp: string;
  let up: Spawned | undefined;
  let natsUrl: string;
  let apiUrl: string;
  let nc: NatsConnection;
  let pids: Record<string, number>;

  /** Where `mmlab up` writes its token file, and the CLI finds it (MMLAB_RUNTIME_DIR). */
  let runDir: string;
  const withRunDir = (): NodeJS.ProcessEnv => ({
    ...process.env,
    MMLAB_LAB_TOKEN: '',
    MMLAB_RUNTIME_DIR: runDir,
  });
  /** The CLI against this lab's API, as a user in another shell runs it: the token from the file. */
  const mmlab = (...args: string[]) => runMmlab([...args, '--lab-url', apiUrl], withRunDir());
  const status = async (url = apiUrl): Promise<Status> => {
    const r = await runMmlab(['chaos', 'status', '--json', '--lab-url', url], withRunDir());
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Status;
  };

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: build first`);
    tmp = mkdtempSync(path.join(tmpdir(), 'mmlab-chaos-'));
    runDir = path.join(tmp, 'run');
    const port = await freePort();
    up = await start(
      [
        'up',
        ...['--cpus', '1', '--hca', '1', '--kvm', '1', '--mmu-lock', 'sleep'],
        ...['--mm-replicas', '1', '--frames', '64'],
        ...['--invalidate-latency', 'uniform:0:2', '--free-ports', '--api-port', String(port)],
        ...['--logs', path.join(tmp, 'logs')],
      ],
      /Ctrl-C stops everything\./,
      withRunDir(),
    );
    // the server's URL is printed; the owner's credentials are in a file only this user reads
    const credsFile = /^ {2}NATS +\S+ +\(credentials of user lab in (\S+)\)/m.exec(up.out())![1];
    expect(statSync(credsFile).mode & 0o777).toBe(0o600);
    natsUrl = readFileSync(credsFile, 'utf8').trim();
    expect(natsUrl).toMatch(/^nats:\/\/lab:[^@]+@127\.0\.0\.1:\d+$/);
    apiUrl = /^ {2}lab API +(\S+)/m.exec(up.out())![1];
    expect(apiUrl).toBe(`http://127.0.0.1:${port}`);
    nc = await connectNats(natsUrl, 'mmlab-chaos-test');
    const targets = (await (await fetch(`${apiUrl}/targets`)).json()) as {
      pids: Record<string, number>;
    };
    pids = targets.pids;
  });
  afterAll(async () => {
    await nc?.close();
    await stop(up, 'SIGINT');
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('chaos targets: the processes of the lab and its subscriber', async () => {
    const r = await mmlab('chaos', 'targets');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/subscribers .*: hca0 kvm0\n/);
    for (const p of ['mm', 'mm-0', 'cpu0', 'observer', 'nats', 'redis'])
      expect(r.stdout).toContain(p);
    expect(up!.out()).toMatch(/1 HCA, 1 KVM \(mmu_lock sleep\)/);
    // the pids are the lab's own processes (each service is told its instance name)
    for (const i of ['mm-0', 'cpu0', 'hca0', 'kvm0'])
      expect(readFileSync(`/proc/${pids[i]}/environ`, 'utf8').split('\0')).toContain(
        `MMLAB_INSTANCE=${i}`,
      );
  });

  it('chaos hca0 drop-ack: listed active, and hca0 drops the first ack of each inv until healed', async () => {
    const r = await mmlab('chaos', 'hca0', 'drop-ack');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^#\d+ drop-ack hca0: open since /);
    expect((await status()).active).toEqual([
      expect.objectContaining({
        target: 'hca0',
        instance: 'hca0',
        fault: 'drop-ack',
        endedAt: null,
      }),
    ]);

    // on the wire: the first request of an inv gets no answer, its resend does
    const subject = subjectFor(RPC.mnInvalidateRangeEnd, 'hca0');
    expect(
      await codeOf(nc.request(subject, rawRangeEnd('hca0', 'e2e-drop'), { timeout: 1000 })),
    ).not.toBe('ok');
    const again = await nc.request(subject, rawRangeEnd('hca0', 'e2e-drop'), { timeout: 10_000 });
    expect(decodeReply('mnInvalidateRangeEnd', again.data)).toEqual({ inv: 'e2e-drop' });

    const h = await mmlab('heal', 'hca0');
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toContain('healed 1 fault window(s) of hca0');
    const s = await status();
    expect(s.active).toEqual([]);
    expect(s.windows.find((w) => w.fault === 'drop-ack')?.endedAt).toEqual(expect.any(Number));
    // healed: a new inv is answered the first time
    const fresh = await nc.request(subject, rawRangeEnd('hca0', 'e2e-healed'), { timeout: 10_000 });
    expect(decodeReply('mnInvalidateRangeEnd', fresh.data)).toEqual({ inv: 'e2e-healed' });
  });

  it('chaos cpu0 pause --ms 60000: cpu0 is stopped (state T); heal cpu0: it runs again, the window is closed', async () => {
    const cpu0 = pids.cpu0;
    expect(stateOf(cpu0)).not.toBe('T');
    const r = await mmlab('chaos', 'cpu0', 'pause', '--ms', '60000');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /pause cpu0 for 60000 ms: open since .* heals by itself after 60000 ms/,
    );
    // SIGSTOP lands asynchronously: wait for it (a hang guard, not a timing assertion)
    await until(() => stateOf(cpu0) === 'T', 'cpu0 stopped');
    const open = (await status()).active;
    expect(open).toEqual([
      expect.objectContaining({ target: 'cpu0', fault: 'pause', endedAt: null }),
    ]);

    const table = await mmlab('chaos', 'status');
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^#\d+ +ACTIVE +cpu0 +pause /m);

    const h = await mmlab('heal', 'cpu0');
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toContain('healed 1');
    await until(() => stateOf(cpu0) !== 'T', 'cpu0 running again');
    const s = await status();
    expect(s.active).toEqual([]);
    const w = s.windows.find((x) => x.id === open[0].id)!;
    expect(w.endedAt).toEqual(expect.any(Number));
    expect(w.healError).toBeUndefined();
  });

  it('chaos kvm0 drop-ack, then pause: its callbacks lose their first ack, its process stops; heal undoes both', async () => {
    expect((await mmlab('chaos', 'kvm0', 'drop-ack')).code).toBe(0);
    const subject = subjectFor(RPC.mnInvalidateRangeEnd, 'kvm0');
    expect(
      await codeOf(nc.request(subject, rawRangeEnd('kvm0', 'e2e-kvm-drop'), { timeout: 1000 })),
    ).not.toBe('ok');
    const again = await nc.request(subject, rawRangeEnd('kvm0', 'e2e-kvm-drop'), {
      timeout: 10_000,
    });
    expect(decodeReply('mnInvalidateRangeEnd', again.data)).toEqual({ inv: 'e2e-kvm-drop' });
    expect((await mmlab('heal', 'kvm0')).stdout).toContain('healed 1 fault window(s) of kvm0');
    const fresh = await nc.request(subject, rawRangeEnd('kvm0', 'e2e-kvm-healed'), {
      timeout: 10_000,
    });
    expect(decodeReply('mnInvalidateRangeEnd', fresh.data)).toEqual({ inv: 'e2e-kvm-healed' });

    const kvm0 = pids.kvm0;
    const r = await mmlab('chaos', 'kvm0', 'pause', '--ms', '60000');
    expect(r.code, r.stderr).toBe(0);
    await until(() => stateOf(kvm0) === 'T', 'kvm0 stopped');
    expect((await status()).active).toEqual([
      expect.objectContaining({ target: 'kvm0', fault: 'pause', endedAt: null }),
    ]);
    expect((await mmlab('heal', 'kvm0')).code).toBe(0);
    await until(() => stateOf(kvm0) !== 'T', 'kvm0 running again');
    expect((await status()).active).toEqual([]);
  });

  it('chaos nosuch kill: exit 2, naming the targets', async () => {
    const r = await mmlab('chaos', 'nosuch', 'kill');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nosuch');
    for (const t of ['mm-0', 'cpu0', 'hca0', 'nats', 'redis']) expect(r.stderr).toContain(t);
  });

  it('a bad spec (latency without --distribution): exit 2 before anything is sent', async () => {
    const before = (await status()).windows.length;
    const r = await mmlab('chaos', 'hca0', 'latency');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--distribution: a latency fault needs a distribution');
    const typo = await mmlab('chaos', 'hca0', 'drop-akc');
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('<fault>');
    expect((await status()).windows).toHaveLength(before);
  });

  it('mmlab api: the same lab through NATS only — callback faults work, process faults are refused', async () => {
    const api = await start(['api', '--port', '0', '--host', '127.0.0.1'], /lab API on (\S+)/, {
      ...process.env,
      NATS_URL: natsUrl,
      MMLAB_LAB_TOKEN: TOKEN,
    });
    try {
      const url = /lab API on (\S+)/.exec(api.out())![1];
      // no file for this one: the token from MMLAB_LAB_TOKEN, as compose users give it
      const remote = (...args: string[]) =>
        runMmlab([...args, '--lab-url', url], { ...process.env, MMLAB_LAB_TOKEN: TOKEN });
      const t = await remote('chaos', 'targets');
      expect(t.code, t.stderr).toBe(0);
      expect(t.stdout).toMatch(/instances answering ping: .*cpu0/);
      // kvm0 answers ping as a kvm: a subscriber, open to callback faults
      expect(t.stdout).toMatch(/subscribers \(callback faults\): hca0 kvm0\n/);

      const d = await remote('chaos', 'hca0', 'dup-ack');
      expect(d.code, d.stderr).toBe(0);
      // on the wire: two answers to one request
      const replies: string[] = [];
      const many = await nc.requestMany(
        subjectFor(RPC.mnInvalidateRangeEnd, 'hca0'),
        rawRangeEnd('hca0', 'e2e-dup'),
        { strategy: RequestStrategy.Count, maxMessages: 2, maxWait: 10_000 },
      );
      for await (const m of many) replies.push(decodeReply('mnInvalidateRangeEnd', m.data).inv);
      expect(replies).toEqual(['e2e-dup', 'e2e-dup']);

      const p = await remote('chaos', 'cpu0', 'pause');
      expect(p.code).toBe(2);
      expect(p.stderr).toContain('HTTP 422');
      expect(p.stderr).toContain('docker compose');
      expect(stateOf(pids.cpu0)).not.toBe('T');

      const h = await remote('heal');
      expect(h.code, h.stderr).toBe(0);
      expect(h.stdout).toContain('healed 1');
      expect((await status(url)).active).toEqual([]);
    } finally {
      expect(await stop(api, 'SIGTERM')).toBe(0);
    }
  });

  it("prints the lab's token and writes it 0600 for the CLI; without it (or with another) nothing opens", async () => {
    const token = /^ {2}token +(\S+)/m.exec(up!.out())?.[1];
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    const file = path.join(runDir, `lab-${new URL(apiUrl).port}.token`);
    expect(up!.out()).toContain(file);
    expect(readFileSync(file, 'utf8').trim()).toBe(token);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(runDir).mode & 0o777).toBe(0o700);
    const before = (await status()).windows.length;
    // another shell with no runtime file and no variable
    const none = await runMmlab(['chaos', 'cpu0', 'pause', '--lab-url', apiUrl], {
      ...process.env,
      MMLAB_LAB_TOKEN: '',
      MMLAB_RUNTIME_DIR: path.join(tmp, 'elsewhere'),
    });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('HTTP 401: EACCES');
    expect(none.stderr).toContain('no token in --token, MMLAB_LAB_TOKEN and');
    const wrong = await mmlab('heal', '--token', newLabToken());
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('HTTP 401');
    expect(wrong.stderr).toContain('the token came from --token');
    expect(stateOf(pids.cpu0)).not.toBe('T');
    expect((await status()).windows).toHaveLength(before);
  });

  it('SIGINT to mmlab up stops every process it started', async () => {
    const all = Object.values(pids);
    expect(all.length).toBeGreaterThanOrEqual(6); // observer, mm-0, cpu0, hca0, nats, redis
    for (const pid of all) expect(alive(pid), String(pid)).toBe(true);
    expect(await stop(up, 'SIGINT')).toBe(0);
    expect(up!.out()).toContain('stopping the lab');
    for (const pid of all) expect(alive(pid), String(pid)).toBe(false);
    // the token of a lab that is gone is not left behind
    expect(existsSync(path.join(runDir, `lab-${new URL(apiUrl).port}.token`))).toBe(false);
  });
});

describe('mmlab api as the compose lab-api NATS user (deploy/nats/nats.conf)', () => {
  const PASSWORDS = {
    NATS_MM_PASSWORD: 'mm-secret',
    NATS_CPU_PASSWORD: 'cpu-secret',
    NATS_HCA_PASSWORD: 'hca-secret',
    NATS_KVM_PASSWORD: 'kvm-secret',
    NATS_OBSERVER_PASSWORD: 'observer-secret',
    NATS_LAB_PASSWORD: 'lab-secret',
    NATS_LAB_API_PASSWORD: 'lab-api-secret',
  };
  let nats: ServerHandle | undefined;
  let lab: LocalLab | undefined;
  let api: Spawned | undefined;
  let url: string;
  let watcher: NatsConnection;
  const trace: TraceEvent[] = [];

  beforeAll(async () => {
    nats = await startNatsWithConfig(path.join(root, 'deploy', 'nats', 'nats.conf'), PASSWORDS);
    lab = await LocalLab.start(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 1,
        observer: false,
        subscribers: [{ name: 'hca0', kind: 'hca' }],
      },
      {
        natsUrl: nats.url,
        natsUsers: {
          mm: `mm:${PASSWORDS.NATS_MM_PASSWORD}`,
          cpu: `cpu:${PASSWORDS.NATS_CPU_PASSWORD}`,
          hca: `hca:${PASSWORDS.NATS_HCA_PASSWORD}`,
        },
        readyUser: `lab:${PASSWORDS.NATS_LAB_PASSWORD}`,
      },
    );
    watcher = await connectNats(
      natsUrlWithUser(nats.url, `lab:${PASSWORDS.NATS_LAB_PASSWORD}`),
      'watch',
    );
    const sub = watcher.subscribe(traceSubject('lab', '>'));
    void (async () => {
      for await (const m of sub) {
        const raw: unknown = JSON.parse(m.string());
        for (const e of traceMessageEvents(raw)?.events ?? [raw]) trace.push(e as TraceEvent);
      }
    })();
    await watcher.flush();
    api = await start(['api', '--port', '0', '--host', '127.0.0.1'], /lab API on (\S+)/, {
      ...process.env,
      // as docker-compose.yml's lab-api connects, with the token its user set
      NATS_URL: natsUrlWithUser(nats.url, `lab-api:${PASSWORDS.NATS_LAB_API_PASSWORD}`),
      MMLAB_LAB_TOKEN: TOKEN,
    });
    url = /lab API on (\S+)/.exec(api.out())![1];
  });
  afterAll(async () => {
    await stop(api, 'SIGTERM');
    await watcher?.close();
    try {
      if (lab) await assertFsckClean(lab.redisUrl);
    } finally {
      await lab?.stop();
      await nats?.stop();
    }
  });

  it('may ping, set a subscriber fault, heal it and publish its chaos.start/end events', async () => {
    const t = await runMmlab(['chaos', 'targets', '--json', '--lab-url', url]);
    expect(t.code, t.stderr).toBe(0);
    expect(JSON.parse(t.stdout)).toMatchObject({ local: false, subscribers: ['hca0'] });
    const c = await runMmlab(['chaos', 'hca0', 'hang', '--lab-url', url, '--token', TOKEN]);
    expect(c.code, c.stderr).toBe(0);
    const h = await runMmlab(['heal', '--lab-url', url, '--token', TOKEN]);
    expect(h.code, h.stderr).toBe(0);
    expect(h.stdout).toContain('healed 1');
    await watcher.flush();
    await until(() => trace.some((e) => e.kind === 'chaos.end'), 'the chaos.end event');
    expect(trace.map((e) => [e.kind, e.instance])).toEqual([
      ['chaos.start', 'nemesis'],
      ['chaos.end', 'nemesis'],
    ]);
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
  });

  it('may not publish anything else (a syscall, a CPU access)', async () => {
    const nc = await connectNats(
      natsUrlWithUser(nats!.url, `lab-api:${PASSWORDS.NATS_LAB_API_PASSWORD}`),
      'probe-lab-api',
    );
    try {
      for (const forbidden of [
        'mmlab.mm.munmap',
        'mmlab.cpu.0.access',
        'mmlab.sub.hca0.invalidate_page',
      ])
        expect(await codeOf(nc.request(forbidden, '{}', { timeout: 1000 })), forbidden).not.toBe(
          'ok',
        );
    } finally {
      await nc.close();
    }
  });
});
