/**
 * Real nats-server and redis-server processes on free ports, for tests and `mmlab run --local`.
 * Binaries come from PATH (Debian packages nats-server and redis-server; scripts/ensure-deps.sh
 * installs them where missing). Nothing here mocks either server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createConnection } from 'node:net';
import { checkPort, getRandomPort } from 'get-port-please';

export interface ServerHandle {
  readonly url: string;
  readonly port: number;
  readonly proc: ChildProcess;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return getRandomPort('127.0.0.1');
}

export async function isPortFree(port: number): Promise<boolean> {
  return (await checkPort(port, '127.0.0.1')) === port;
}

function waitForPort(
  port: number,
  proc: ChildProcess,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tryOnce = () => {
      if (proc.exitCode !== null) return reject(new Error(`${what} exited with ${proc.exitCode}`));
      const s = createConnection({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new Error(`${what} did not listen on ${port}`));
        else setTimeout(tryOnce, 50);
      });
    };
    tryOnce();
  });
}

export function stopProcess(
  proc: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 3000,
): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    proc.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    try {
      // A SIGSTOPped process does not see SIGTERM until continued.
      proc.kill('SIGCONT');
      proc.kill(signal);
    } catch {
      clearTimeout(t);
      resolve();
    }
  });
}

/** A server whose working folder goes away with it. */
function serverWithDir(url: string, port: number, proc: ChildProcess, dir: string): ServerHandle {
  return {
    url,
    port,
    proc,
    stop: async () => {
      await stopProcess(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startNats(port?: number): Promise<ServerHandle> {
  const p = port ?? (await freePort());
  const proc = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(p)], { stdio: 'ignore' });
  await waitForPort(p, proc, 'nats-server');
  return { url: `nats://127.0.0.1:${p}`, port: p, proc, stop: () => stopProcess(proc) };
}

export async function startRedis(port?: number, extraArgs: string[] = []): Promise<ServerHandle> {
  const p = port ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-redis-'));
  const proc = spawn(
    'redis-server',
    [
      '--port',
      String(p),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      ...extraArgs,
    ],
    { stdio: 'ignore' },
  );
  await waitForPort(p, proc, 'redis-server');
  return serverWithDir(`redis://127.0.0.1:${p}`, p, proc, dir);
}

export interface ClusterHandle {
  /** `redis+cluster://127.0.0.1:p1,...` (what REDIS_URL takes for a cluster) */
  readonly url: string;
  readonly ports: number[];
  stop(): Promise<void>;
}

/**
 * A local Redis Cluster of `masters` redis-server processes (Debian redis-server, cluster mode)
 * joined with `redis-cli --cluster create`. Each node also needs its bus port (port + 10000).
 */
export async function startRedisCluster(masters = 3): Promise<ClusterHandle> {
  let ports: number[] = [];
  for (let attempt = 0; attempt < 50 && ports.length === 0; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    const candidate = Array.from({ length: masters }, (_, i) => base + i);
    const all = [...candidate, ...candidate.map((p) => p + 10000)];
    if ((await Promise.all(all.map(isPortFree))).every(Boolean)) ports = candidate;
  }
  if (ports.length === 0) throw new Error('no free port range for a Redis Cluster');
  const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-redis-cluster-'));
  const procs: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(procs.map((p) => stopProcess(p)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const p of ports) {
      const proc = spawn(
        'redis-server',
        [
          '--port',
          String(p),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${p}.conf`,
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          dir,
        ],
        { stdio: 'ignore' },
      );
      procs.push(proc);
      await waitForPort(p, proc, `redis-server (cluster node ${p})`);
    }
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        'redis-cli',
        [
          '--cluster',
          'create',
          ...ports.map((p) => `127.0.0.1:${p}`),
          '--cluster-replicas',
          '0',
          '--cluster-yes',
        ],
        { stdio: 'ignore' },
      );
      c.once('error', reject);
      c.once('exit', (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`redis-cli --cluster create exited with ${code}`)),
      );
    });
    return { url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, ports, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * nats-server with a configuration file (e.g. deploy/nats/nats.conf, the compose lab's users
 * and permissions) on free ports; `env` feeds the file's $VARIABLES. The JetStream store_dir
 * is moved to a temporary folder, everything else is used as written.
 */
export async function startNatsWithConfig(
  confPath: string,
  env: Record<string, string>,
): Promise<ServerHandle> {
  const p = await freePort();
  const m = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-nats-'));
  const conf = readFileSync(confPath, 'utf8').replace(
    /store_dir:\s*\S+/,
    `store_dir: ${JSON.stringify(dir)}`,
  );
  const file = path.join(dir, 'nats.conf');
  writeFileSync(file, conf);
  const proc = spawn(
    'nats-server',
    ['-c', file, '-a', '127.0.0.1', '-p', String(p), '-m', String(m)],
    {
      stdio: 'ignore',
      env: { ...process.env, ...env },
    },
  );
  await waitForPort(p, proc, 'nats-server');
  return serverWithDir(`nats://127.0.0.1:${p}`, p, proc, dir);
}
