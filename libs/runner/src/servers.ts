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
import type { RedisKind } from '@mmlab/model';
import { MmlabError } from '@mmlab/protocol';
import { type RedisUsers, redisUrlsFor } from './redis-users';

export type ServerKind = 'nats' | 'redis';

/**
 * One nats-server or redis-server the lab started, which a test or the nemesis may pause
 * (signal SIGSTOP / SIGCONT), kill and start again. A server comes back on the same port with
 * the same data: its working folder (Redis: the append-only file, written before every reply,
 * so nothing acknowledged is lost) lives until stop(), which is final.
 *
 * State: `proc` is the current incarnation (a new ChildProcess after each start); `stopped`
 * is set once by stop() and never cleared, after which start() refuses.
 */
export interface ServerHandle {
  readonly kind: ServerKind;
  readonly url: string;
  readonly port: number;
  /** the current process (a new one after each start()) */
  readonly proc: ChildProcess;
  /** the current process is alive (it may be SIGSTOPped) */
  readonly running: boolean;
  /** send sig to the current process (SIGSTOP pauses it, SIGCONT resumes it) */
  signal(sig: NodeJS.Signals): void;
  /** SIGKILL, and wait for the exit; the data stays for start() */
  kill(): Promise<void>;
  /** start a killed server again (same port, same data); a running one is left alone */
  start(): Promise<void>;
  /** stop (SIGTERM, SIGKILL after a grace period) and start again */
  restart(): Promise<void>;
  /** stop for good and remove the working folder; safe to call more than once */
  stop(): Promise<void>;
}

const alive = (p: ChildProcess): boolean => p.exitCode === null && p.signalCode === null;

class ManagedServer implements ServerHandle {
  private stopped = false;

  constructor(
    readonly kind: ServerKind,
    readonly url: string,
    readonly port: number,
    private current: ChildProcess,
    /** spawn one incarnation */
    private readonly launch: () => ChildProcess,
    /** the working folder, removed by stop() */
    private readonly dir?: string,
  ) {}

  get proc(): ChildProcess {
    return this.current;
  }

  get running(): boolean {
    return alive(this.current);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.current.kill(sig);
  }

  async kill(): Promise<void> {
    const p = this.current;
    if (!alive(p)) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }

  async start(): Promise<void> {
    if (this.stopped)
      throw new MmlabError('EINVAL', `${this.kind}-server on ${this.port} was stopped for good`);
    if (this.running) return;
    this.current = this.launch();
    await waitForPort(this.port, this.current, `${this.kind}-server (restart)`);
  }

  async restart(): Promise<void> {
    await stopProcess(this.current);
    await this.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await stopProcess(this.current);
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Spawn with launch, wait for the port; a server that never listens is cleaned up. */
async function managed(
  kind: ServerKind,
  url: string,
  port: number,
  launch: () => ChildProcess,
  dir?: string,
): Promise<ServerHandle> {
  const proc = launch();
  try {
    await waitForPort(port, proc, `${kind}-server`);
  } catch (e) {
    await stopProcess(proc);
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return new ManagedServer(kind, url, port, proc, launch, dir);
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

/**
 * nats-server on loopback. With `authorization` (a nats-server config block: the lab's users and
 * their permissions, nats-identities.ts), from a config file holding it, in a folder of its own
 * that only this user may read (the passwords are in it), removed by stop().
 */
export async function startNats(port?: number, authorization?: string): Promise<ServerHandle> {
  const p = port ?? (await freePort());
  const args = ['-a', '127.0.0.1', '-p', String(p)];
  let dir: string | undefined;
  if (authorization) {
    dir = mkdtempSync(path.join(tmpdir(), 'mmlab-nats-'));
    const file = path.join(dir, 'nats.conf');
    writeFileSync(file, authorization, { mode: 0o600 });
    args.unshift('-c', file);
  }
  return managed(
    'nats',
    `nats://127.0.0.1:${p}`,
    p,
    () => spawn('nats-server', args, { stdio: 'ignore' }),
    dir,
  );
}

export interface RedisServerOptions {
  /**
   * ACL users (libs/model acl.ts, newRedisUsers): written to an aclfile in the server's folder
   * (mode 0600; passwords hashed), read again at every restart. Absent: no ACL, the default
   * user may do anything.
   */
  aclFile?: string;
}

/** --aclfile for opts.aclFile, written into dir (mode 0600); nothing without one. */
function aclArgs(dir: string, opts: RedisServerOptions): string[] {
  if (opts.aclFile === undefined) return [];
  const file = path.join(dir, 'users.acl');
  writeFileSync(file, opts.aclFile, { mode: 0o600 });
  return ['--aclfile', file];
}

/**
 * redis-server with persistence that survives kill -9: the append-only file, in a folder of its
 * own; no RDB snapshots. Redis write(2)s the AOF buffer before it sends the replies of the
 * commands in it (flushAppendOnlyFile in beforeSleep), and what a killed process wrote is in
 * the kernel's page cache: a restart reads it back. Only an fsync would add anything, against
 * the machine itself crashing, which the folder (deleted at stop) does not outlive anyway:
 * appendfsync no. (always: an fsync per write, ~0.3 ms each on this disk, was a share of every
 * lab's Redis time.)
 */
export async function startRedis(
  port?: number,
  extraArgs: string[] = [],
  opts: RedisServerOptions = {},
): Promise<ServerHandle> {
  const p = port ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-redis-'));
  const args = [
    '--port',
    String(p),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'yes',
    '--appendfsync',
    'no',
    '--dir',
    dir,
    ...aclArgs(dir, opts),
    ...extraArgs,
  ];
  return managed(
    'redis',
    `redis://127.0.0.1:${p}`,
    p,
    () => spawn('redis-server', args, { stdio: 'ignore' }),
    dir,
  );
}

export interface ClusterHandle {
  /** `redis+cluster://127.0.0.1:p1,...` (what REDIS_URL takes for a cluster); with ACL users, the lab user's */
  readonly url: string;
  /** with ACL users: each kind's URL (LabStartOptions.redisUsers) */
  readonly urls?: Readonly<Record<RedisKind, string>>;
  readonly ports: number[];
  stop(): Promise<void>;
}

/**
 * A local Redis Cluster of `masters` redis-server processes (Debian redis-server, cluster mode)
 * joined with `redis-cli --cluster create`. Each node also needs its bus port (port + 10000).
 * opts.users: every node gets the same ACL users (the cluster bus needs none), the lab user
 * joins the nodes, and the handle's url is the lab user's (urls: every kind's).
 */
export async function startRedisCluster(
  masters = 3,
  opts: { users?: RedisUsers } = {},
): Promise<ClusterHandle> {
  // Ports found free can be taken before the nodes bind them (bus ports fall in the machine's
  // ephemeral range: another test's outgoing connection may get one): a failed start is tried
  // again on other ports, twice.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startRedisClusterOnce(masters, opts);
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

async function startRedisClusterOnce(
  masters: number,
  opts: { users?: RedisUsers },
): Promise<ClusterHandle> {
  const acl: RedisServerOptions = opts.users ? { aclFile: opts.users.aclFile } : {};
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
          ...aclArgs(dir, acl),
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
          // with ACLs, as the operator (the lab user): the default user is off
          ...(opts.users ? ['--user', 'lab', '--pass', opts.users.passwords.lab] : []),
          '--no-auth-warning',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      c.once('error', reject);
      c.once('close', (code) =>
        code === 0
          ? resolve()
          : reject(
              new Error(`redis-cli --cluster create exited with ${code}: ${out.slice(-2000)}`),
            ),
      );
    });
    const url = `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`;
    const urls = opts.users ? redisUrlsFor(url, opts.users) : undefined;
    return { url: urls?.lab ?? url, ...(urls && { urls }), ports, stop };
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
  return managed(
    'nats',
    `nats://127.0.0.1:${p}`,
    p,
    () =>
      spawn('nats-server', ['-c', file, '-a', '127.0.0.1', '-p', String(p), '-m', String(m)], {
        stdio: 'ignore',
        env: { ...process.env, ...env },
      }),
    dir,
  );
}
