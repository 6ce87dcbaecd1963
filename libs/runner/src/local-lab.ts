/**
 * The native runner: every service of the lab as its own OS process (node dist/apps/<app>),
 * against a real nats-server and redis-server. Used by `mmlab run --local`, scripts/lab.sh
 * and the integration tests, so all three start exactly the same thing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import {
  type Dispatch,
  type InjectMode,
  MmlabError,
  type MmuLockMode,
  type Mode,
  type ThpMode,
} from '@mmlab/protocol';
import type { RedisKind } from '@mmlab/model';
import { RpcClient, connectNats, newLabToken, sleep } from '@mmlab/runtime';
import { newRedisUsers, redisUrlsFor } from './redis-users';
import {
  type ServerHandle,
  type ServerKind,
  freePort,
  isPortFree,
  startNats,
  startRedis,
  stopProcess,
} from './servers';
import { LAB_USER, labIdentities } from './nats-identities';

/** The ports `mmlab up` (scripts/lab.sh) and the compose lab publish. */
export const LAB_PORTS = { nats: 4222, redis: 6379, observer: 8080 } as const;

export interface LabConfig {
  mode: Mode;
  frames: number;
  /** swap slots (MMLAB_SWAP_SLOTS); default 0: no swap */
  swapSlots?: number;
  /** transparent huge pages (MMLAB_THP); default never */
  thp?: ThpMode;
  /** a huge page is 2^hugePageOrder frames (MMLAB_HUGE_PAGE_ORDER); default 3 */
  hugePageOrder?: number;
  /** huge pages reserved for hugetlbfs (MMLAB_HUGETLB_PAGES); default 0 */
  hugetlbPages?: number;
  /** kswapd's watermarks (MMLAB_WATERMARK_LOW/HIGH); default none */
  watermarks?: { low: number; high: number };
  /** RLIMIT_MEMLOCK in pages (MMLAB_MEMLOCK_PAGES); default a quarter of the frames */
  memlockPages?: number;
  cpus: number;
  mmReplicas: number;
  leaseTtlMs?: number;
  softlockupMs?: number;
  faultDeadlineMs?: number;
  observer?: boolean;
  /** notifier subscribers to start (each its own process) */
  subscribers?: SubscriberConfig[];
  dispatch?: Dispatch;
  inject?: InjectMode[];
  seed?: number;
  /** extra environment for every service */
  env?: Record<string, string>;
  /**
   * The lab's token (MMLAB_LAB_TOKEN of the observer): its mutating requests need it.
   * LocalLab.start generates one when absent (libs/runtime lab-token.ts).
   */
  token?: string;
}

export interface SubscriberConfig {
  /** instance name, and its subscriber name: hca0, hca1, kvm0, ... */
  name: string;
  /**
   * hca: an RDMA HCA (apps/hca); kvm: a KVM instance (apps/kvm); external: a device the user
   * runs (libs/subscriber runDevice, examples/byo): the lab does not start it, but makes its
   * NATS identity (kind dev) and gives it the Redis user `dev` (LocalLab.deviceCreds)
   */
  kind: 'hca' | 'kvm' | 'external';
  /**
   * device invalidation latency (kvm: what each sleepable invalidation takes after its zap):
   * ms, or "uniform:a:b", "normal:mean:sd", "pareto:scale:shape"
   */
  invalidateLatencyMs?: number | string;
  /** hca: a slow page-fault work queue: ms between hmm_range_fault and the re-check */
  npfDelayMs?: number;
  /** kvm: how its mmu_lock is held for a range zap (MMLAB_MMU_LOCK; default spin) */
  mmuLock?: MmuLockMode;
  /** kvm: a slow guest fault (test hook): ms between resolving the page and mmu_notifier_retry() */
  faultDelayMs?: number;
}

export interface ServiceSpec {
  instance: string;
  app: 'mm' | 'cpu' | 'observer' | 'hca' | 'kvm';
  env: Record<string, string>;
}

export const repoRoot = (): string => {
  let d = __dirname;
  while (!existsSync(path.join(d, 'nest-cli.json'))) {
    const up = path.dirname(d);
    if (up === d) throw new Error('cannot find the mmlab repository root');
    d = up;
  }
  return d;
};

/**
 * The node arguments that start an app as a lab process: the launcher (libs/runtime/src/
 * launch.ts: V8's code cache, source maps read when a trace is printed) and the app's bundle
 * (scripts/bundle.mjs, part of `npm run build`). Extra arguments follow the bundle.
 */
export function serviceCommand(app: string): string[] {
  const dist = path.join(repoRoot(), 'dist');
  const bundle = path.join(dist, 'bundle', 'apps', app, 'src', 'main.js');
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run npm run build`);
  return [path.join(dist, 'libs', 'runtime', 'src', 'launch.js'), bundle];
}

/**
 * The services a config asks for, with their environment: the one list compose mirrors.
 * httpPorts: MMLAB_HTTP_PORT (/metrics, /health) per mm, cpu and hca instance; an instance
 * without one serves no HTTP.
 */
/** The environment every service of cfg runs with (and an external device is given). */
export function labCommonEnv(cfg: LabConfig): Record<string, string> {
  return {
    MMLAB_MODE: cfg.mode,
    MMLAB_FRAMES: String(cfg.frames),
    ...(cfg.swapSlots ? { MMLAB_SWAP_SLOTS: String(cfg.swapSlots) } : {}),
    ...(cfg.thp ? { MMLAB_THP: cfg.thp } : {}),
    ...(cfg.hugePageOrder !== undefined
      ? { MMLAB_HUGE_PAGE_ORDER: String(cfg.hugePageOrder) }
      : {}),
    ...(cfg.hugetlbPages ? { MMLAB_HUGETLB_PAGES: String(cfg.hugetlbPages) } : {}),
    ...(cfg.watermarks
      ? {
          MMLAB_WATERMARK_LOW: String(cfg.watermarks.low),
          MMLAB_WATERMARK_HIGH: String(cfg.watermarks.high),
        }
      : {}),
    ...(cfg.memlockPages !== undefined ? { MMLAB_MEMLOCK_PAGES: String(cfg.memlockPages) } : {}),
    ...(cfg.leaseTtlMs ? { MMLAB_LEASE_TTL_MS: String(cfg.leaseTtlMs) } : {}),
    ...(cfg.softlockupMs ? { MMLAB_SOFTLOCKUP_MS: String(cfg.softlockupMs) } : {}),
    ...(cfg.faultDeadlineMs ? { MMLAB_FAULT_DEADLINE_MS: String(cfg.faultDeadlineMs) } : {}),
    ...(cfg.dispatch ? { MMLAB_DISPATCH: cfg.dispatch } : {}),
    ...(cfg.inject?.length ? { MMLAB_INJECT: cfg.inject.join(',') } : {}),
    ...(cfg.seed !== undefined ? { MMLAB_SEED: String(cfg.seed) } : {}),
    ...cfg.env,
  };
}

/** The external subscribers of cfg (kind external): devices the user runs. */
export const externalDevices = (cfg: LabConfig): string[] =>
  (cfg.subscribers ?? []).filter((s) => s.kind === 'external').map((s) => s.name);

export function labServices(
  cfg: LabConfig,
  observerPort: number,
  httpPorts: Readonly<Record<string, number>> = {},
): ServiceSpec[] {
  const common = labCommonEnv(cfg);
  const http = (instance: string): Record<string, string> =>
    httpPorts[instance] ? { MMLAB_HTTP_PORT: String(httpPorts[instance]) } : {};
  const out: ServiceSpec[] = [];
  if (cfg.observer !== false)
    out.push({
      instance: 'observer',
      app: 'observer',
      env: {
        ...common,
        MMLAB_OBSERVER_PORT: String(observerPort),
        ...(cfg.token ? { MMLAB_LAB_TOKEN: cfg.token } : {}),
      },
    });
  for (let i = 0; i < cfg.mmReplicas; i++)
    out.push({ instance: `mm-${i}`, app: 'mm', env: { ...common, ...http(`mm-${i}`) } });
  for (let i = 0; i < cfg.cpus; i++)
    out.push({
      instance: `cpu${i}`,
      app: 'cpu',
      env: { ...common, MMLAB_CPU_ID: String(i), ...http(`cpu${i}`) },
    });
  for (const sub of cfg.subscribers ?? []) {
    if (sub.kind === 'external') continue;
    out.push({
      instance: sub.name,
      app: sub.kind,
      env: {
        ...common,
        ...http(sub.name),
        MMLAB_INVALIDATE_LATENCY: String(sub.invalidateLatencyMs ?? 0),
        ...(sub.npfDelayMs ? { MMLAB_NPF_DELAY_MS: String(sub.npfDelayMs) } : {}),
        ...(sub.faultDelayMs ? { MMLAB_NPF_DELAY_MS: String(sub.faultDelayMs) } : {}),
        ...(sub.mmuLock ? { MMLAB_MMU_LOCK: sub.mmuLock } : {}),
      },
    });
  }
  return out;
}

export interface LabStartOptions {
  /** use these servers instead of starting new ones */
  natsUrl?: string;
  redisUrl?: string;
  /** where each service's stdout/stderr go (default: discarded) */
  logDir?: string;
  /** preferred ports (scripts/lab.sh: 4222, 6379, 8080); a busy one is replaced by a free one */
  ports?: { nats?: number; redis?: number; observer?: number };
  /**
   * NATS credentials ("user:password") per service kind, as the compose lab gives them
   * (deploy/nats/nats.conf); `readyUser` is what the runner itself connects as.
   */
  natsUsers?: Partial<Record<ServiceSpec['app'], string>>;
  readyUser?: string;
  /**
   * Redis ACL users (libs/model acl.ts), default true: the Redis this lab starts gets one user
   * per kind with a fresh random password (newRedisUsers), its default user is off, each
   * service connects as its kind (the observer, which uses no Redis, gets no URL) and
   * lab.redisUrl is the operator's (the lab user). false: no ACL, everyone is the default user.
   */
  redisAcl?: boolean;
  /** with redisUrl: each kind's URL on it (a Redis Cluster with ACL users: ClusterHandle.urls) */
  redisUsers?: Partial<Record<RedisKind, string>>;
  /** extra node flags for every service process (bench:profile: --cpu-prof, not allowed in NODE_OPTIONS) */
  nodeArgs?: string[];
  /**
   * Every mm, cpu, hca and kvm instance serves /metrics and /health on a free port of its own
   * (default true: `mmlab up`, scripts/lab.sh). false: none does (MMLAB_HTTP_PORT unset, a plain
   * NATS microservice; the observer serves its API as always), for a lab nobody scrapes:
   * `mmlab run --local` and the integration tests that read no instance's HTTP side. Each HTTP
   * side (Express, Terminus, the metrics registry) costs about 0.2 CPU-seconds at start.
   */
  http?: boolean;
}

/** nats://host:port with user:password put in. */
export const natsUrlWithUser = (url: string, user?: string): string =>
  user ? url.replace(/^nats:\/\//, `nats://${user}@`) : url;

/** A free port for every mm, cpu and hca instance of cfg (distinct, and not in `taken`). */
async function httpPortsFor(
  cfg: LabConfig,
  taken: readonly number[],
): Promise<Record<string, number>> {
  const used = new Set(taken);
  const out: Record<string, number> = {};
  for (const s of labServices(cfg, 0))
    if (s.app !== 'observer') {
      let p = await freePort();
      while (used.has(p)) p = await freePort();
      used.add(p);
      out[s.instance] = p;
    }
  return out;
}

/** Each Redis kind's instance names in cfg (cpu0, hca0, ...): their liveness-lease keys. */
function instancesOf(cfg: LabConfig): Partial<Record<RedisKind, string[]>> {
  const out: Partial<Record<RedisKind, string[]>> = {};
  for (const s of labServices(cfg, 0))
    if (s.app !== 'observer') (out[s.app] ??= []).push(s.instance);
  const devs = externalDevices(cfg);
  if (devs.length > 0) out.dev = devs;
  return out;
}

/** The preferred port when it is free, else any free port. */
async function portOr(preferred: number | undefined): Promise<number> {
  if (preferred === undefined) return freePort();
  return (await isPortFree(preferred)) ? preferred : freePort();
}

export class LocalLab {
  private readonly procs = new Map<string, ChildProcess>();
  /** targets SIGSTOPped by signal() and not SIGCONTinued, killed or restarted since */
  private readonly paused = new Set<string>();
  private constructor(
    readonly cfg: LabConfig,
    /**
     * The lab's NATS, as its owner (user `lab`, credentials in the URL) when the lab started its
     * own server: what `mmlab run`, the tests and a user's tools connect with.
     */
    readonly natsUrl: string,
    /** the NATS server itself (no credentials) */
    private readonly natsServerUrl: string,
    readonly redisUrl: string,
    readonly observerUrl: string | null,
    readonly specs: ServiceSpec[],
    private readonly servers: ServerHandle[],
    private readonly logDir: string | undefined,
    private readonly users: Pick<
      LabStartOptions,
      'natsUsers' | 'readyUser' | 'nodeArgs' | 'redisUsers'
    > & {
      /** "user:password" per instance: the identities this lab made for its own NATS */
      creds?: Record<string, string>;
    } = {},
  ) {}

  static async start(given: LabConfig, opts: LabStartOptions = {}): Promise<LocalLab> {
    // every lab has a token: without one its observer would refuse POST /reset to everyone
    const cfg: LabConfig = given.token ? given : { ...given, token: newLabToken() };
    const servers: ServerHandle[] = [];
    let lab: LocalLab | undefined;
    try {
      // a lab with its own NATS server: one identity per instance (nats-identities.ts)
      const ids = opts.natsUrl ? null : labIdentities(labServices(cfg, 0), externalDevices(cfg));
      const nats = ids ? await startNats(await portOr(opts.ports?.nats), ids.authorization) : null;
      if (nats) servers.push(nats);
      const redisUsers =
        opts.redisUrl || opts.redisAcl === false ? undefined : newRedisUsers(instancesOf(cfg));
      const redis = opts.redisUrl
        ? null
        : await startRedis(await portOr(opts.ports?.redis), [], { aclFile: redisUsers?.aclFile });
      if (redis) servers.push(redis);
      const redisUrls = redis && redisUsers ? redisUrlsFor(redis.url, redisUsers) : opts.redisUsers;
      const observerPort = await portOr(opts.ports?.observer);
      const httpPorts =
        opts.http === false
          ? {}
          : await httpPortsFor(cfg, [observerPort, ...servers.map((s) => s.port)]);
      const specs = labServices(cfg, observerPort, httpPorts);
      lab = new LocalLab(
        cfg,
        opts.natsUrl ?? natsUrlWithUser(nats!.url, ids!.creds[LAB_USER]),
        opts.natsUrl ?? nats!.url,
        opts.redisUrl ?? redisUrls?.lab ?? redis!.url,
        cfg.observer !== false ? `http://127.0.0.1:${observerPort}` : null,
        specs,
        servers,
        opts.logDir,
        {
          natsUsers: opts.natsUsers,
          readyUser: opts.readyUser,
          nodeArgs: opts.nodeArgs,
          redisUsers: redisUrls,
          creds: ids?.creds,
        },
      );
      if (opts.logDir) mkdirSync(opts.logDir, { recursive: true });
      // mm first: the first replica formats physical memory.
      for (const s of specs) lab.spawn(s);
      await lab.waitReady(specs.map((s) => s.instance));
      return lab;
    } catch (e) {
      // A service that failed to start must not leave the others running (lab.stop stops the servers too).
      if (lab) await lab.stop();
      else await Promise.all(servers.map((s) => s.stop()));
      throw e;
    }
  }

  /**
   * The lab's NATS as one of its service instances (its own identity: user and password), for a
   * test that plays a service gone rogue. Throws when this lab made no identities (a NATS server
   * given by URL).
   */
  natsUrlAs(instance: string): string {
    const c = this.users.creds?.[instance];
    if (!c) throw new Error(`no NATS identity ${instance} in this lab`);
    return natsUrlWithUser(this.natsServerUrl, c);
  }

  /**
   * What an external device (a subscriber of kind external) connects with: its own NATS
   * identity (kind dev), the Redis user `dev`, and the environment the lab's services run with
   * (libs/subscriber DeviceCreds; `mmlab up --byo` writes it to a private file).
   */
  deviceCreds(name: string): {
    name: string;
    natsUrl: string;
    redisUrl: string;
    env: Record<string, string>;
  } {
    if (!externalDevices(this.cfg).includes(name))
      throw new Error(`${name} is not an external subscriber of this lab`);
    return {
      name,
      natsUrl: this.natsUrlAs(name),
      redisUrl: this.redisUrlFor('dev'),
      env: labCommonEnv(this.cfg),
    };
  }

  /** The lab's token (what mutating HTTP requests to its observer must carry). */
  get token(): string {
    return this.cfg.token!;
  }

  get instances(): string[] {
    return this.specs.map((s) => s.instance);
  }

  /**
   * Everything a fault can hit: every service instance, then 'nats' and 'redis' when this lab
   * started those servers (a lab given their URLs cannot restart them).
   */
  get targets(): string[] {
    const servers = (['nats', 'redis'] as const).filter((k) => this.server(k));
    return [...this.instances, ...servers];
  }

  /** Where an instance serves HTTP: /metrics and /health (the observer: its whole API). */
  httpUrl(instance: string): string {
    const s = this.specs.find((x) => x.instance === instance);
    if (!s) throw new Error(`no such instance ${instance}`);
    if (s.app === 'observer' && this.observerUrl) return this.observerUrl;
    const port = s.env.MMLAB_HTTP_PORT;
    if (!port) throw new Error(`${instance} serves no HTTP`);
    return `http://127.0.0.1:${port}`;
  }

  /** The nats-server or redis-server this lab started (undefined: it was given a URL). */
  server(kind: ServerKind): ServerHandle | undefined {
    return this.servers.find((s) => s.kind === kind);
  }

  /**
   * The Redis URL of a kind (acl.ts): its own user's when this lab has ACL users; else the one
   * URL everyone uses. A kind without a user here (the observer) gets ''.
   */
  redisUrlFor(kind: RedisKind | ServiceSpec['app']): string {
    const urls = this.users.redisUsers;
    if (!urls) return this.redisUrl;
    return (urls as Partial<Record<string, string>>)[kind] ?? '';
  }

  /** The current process of a target (a service instance, 'nats' or 'redis'). */
  proc(target: string): ChildProcess {
    const srv = this.serverTarget(target);
    if (srv) return srv.proc;
    const p = this.procs.get(target);
    if (!p) throw this.noTarget(target);
    return p;
  }

  private noTarget(target: string): MmlabError {
    return new MmlabError('EINVAL', `no target ${target} in this lab (${this.targets.join(', ')})`);
  }

  /** The server a target names, if it is 'nats' or 'redis' (EINVAL when this lab did not start it). */
  private serverTarget(target: string): ServerHandle | undefined {
    if (target !== 'nats' && target !== 'redis') return undefined;
    const srv = this.server(target);
    if (!srv) throw this.noTarget(target);
    return srv;
  }

  private spawn(s: ServiceSpec): ChildProcess {
    const args = [...(this.users.nodeArgs ?? []), ...serviceCommand(s.app)];
    const proc = spawn(process.execPath, args, {
      env: {
        ...process.env,
        ...s.env,
        NATS_URL: natsUrlWithUser(
          this.natsServerUrl,
          this.users.natsUsers?.[s.app] ?? this.users.creds?.[s.instance],
        ),
        REDIS_URL: this.redisUrlFor(s.app),
        MMLAB_INSTANCE: s.instance,
      },
      stdio: ['ignore', this.logDir ? 'pipe' : 'ignore', this.logDir ? 'pipe' : 'ignore'],
    });
    if (this.logDir) {
      const log = createWriteStream(path.join(this.logDir, `${s.instance}.log`), { flags: 'a' });
      proc.stdout?.pipe(log);
      proc.stderr?.pipe(log);
    }
    this.procs.set(s.instance, proc);
    return proc;
  }

  /**
   * Wait until every named instance answers ping. Each round gathers pongs until as many arrived
   * as this lab has instances running (the named ones are among them) or 300 ms passed: a round
   * in which everyone answers ends at the last answer, not at the 300 ms (a lab start and every
   * restart used to wait out that whole timer once, and up to 400 ms more between rounds).
   */
  async waitReady(instances: string[], timeoutMs = 60_000): Promise<void> {
    const nc = await connectNats(
      this.users.readyUser
        ? natsUrlWithUser(this.natsServerUrl, this.users.readyUser)
        : this.natsUrl,
      'lab-ready',
    );
    const rpc = new RpcClient(nc);
    const deadline = Date.now() + timeoutMs;
    // Services of another lab on the same NATS (a given natsUrl) answer ping too: once one has,
    // rounds wait the whole 300 ms (their pongs could otherwise fill every round's count).
    let foreign = false;
    try {
      for (;;) {
        for (const i of instances) {
          const p = this.procs.get(i);
          if (p && p.exitCode !== null)
            throw new Error(`${i} exited with code ${p.exitCode} while starting`);
        }
        // Who can answer: every instance running (the named ones, and the others of a restart).
        const expect = foreign
          ? undefined
          : new Set([...this.runningInstances(), ...instances]).size;
        const replies: Array<{ instance: string }> = await rpc.gather(
          'ping',
          {},
          { expect, timeoutMs: 300 },
        );
        const seen = new Set(replies.map((r) => r.instance));
        foreign ||= replies.some((r) => !this.specs.some((s) => s.instance === r.instance));
        if (instances.every((i) => seen.has(i))) return;
        if (Date.now() > deadline)
          throw new Error(
            `not ready after ${timeoutMs} ms: ${instances.filter((i) => !seen.has(i)).join(', ')}`,
          );
        await sleep(50);
      }
    } finally {
      await nc.close();
    }
  }

  /** Send sig to a target: SIGSTOP pauses a service or a server, SIGCONT resumes it. */
  signal(target: string, sig: NodeJS.Signals): void {
    const srv = this.serverTarget(target);
    const p = srv ? null : this.proc(target);
    if (sig === 'SIGSTOP') this.paused.add(target);
    else if (sig === 'SIGCONT') this.paused.delete(target);
    if (srv) srv.signal(sig);
    else if (p && p.exitCode === null && p.signalCode === null) p.kill(sig);
  }

  /** Kill (SIGKILL) a target and wait for the exit; start() or restart() brings it back. */
  async kill(target: string): Promise<void> {
    this.paused.delete(target);
    const srv = this.serverTarget(target);
    if (srv) return srv.kill();
    const p = this.proc(target);
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }

  /**
   * Start a killed target again (a running one is left alone). A server comes back on the same
   * port with the same data; after NATS, this waits until every running instance answers ping
   * again (they reconnect on their own); a service waits until it answers ping.
   */
  async start(target: string): Promise<void> {
    const srv = this.serverTarget(target);
    if (srv) {
      await srv.start();
      if (target === 'nats') await this.waitReady(this.runningInstances());
      return;
    }
    const s = this.specs.find((x) => x.instance === target);
    if (!s) throw this.noTarget(target);
    const p = this.proc(target);
    if (p.exitCode === null && p.signalCode === null) return;
    this.spawn(s);
    await this.waitReady([target]);
  }

  /**
   * Stop (SIGTERM, then SIGKILL) a target if it runs, and start it again (see start). `env`
   * changes a service's environment for this start and every later one (e.g. MMLAB_DISPATCH:
   * the benchmarks' shared labs switch their mm replicas between runs); not for servers.
   */
  async restart(target: string, env?: Record<string, string>): Promise<void> {
    this.paused.delete(target);
    const srv = this.serverTarget(target);
    if (srv) {
      if (env) throw new MmlabError('EINVAL', `${target} is a server: it takes no environment`);
      await srv.restart();
      if (target === 'nats') await this.waitReady(this.runningInstances());
      return;
    }
    const s = this.specs.find((x) => x.instance === target);
    if (!s) throw this.noTarget(target);
    await stopProcess(this.proc(target));
    if (env) Object.assign(s.env, env);
    this.spawn(s);
    await this.waitReady([target]);
  }

  /** Instances whose process is alive and not paused (a SIGSTOPped one cannot answer ping). */
  /** The service instances running now: not paused, not exited. */
  runningInstances(): string[] {
    return this.instances.filter((i) => {
      if (this.paused.has(i)) return false;
      const p = this.procs.get(i);
      return p && p.exitCode === null && p.signalCode === null;
    });
  }

  async stop(): Promise<void> {
    await Promise.all([...this.procs.values()].map((p) => stopProcess(p)));
    await Promise.all(this.servers.map((s) => s.stop()));
  }
}
