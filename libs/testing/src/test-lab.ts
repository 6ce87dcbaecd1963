/**
 * The set-up every integration test repeats: a LocalLab, a NATS connection, an RpcClient, a
 * Store on the lab's Redis and a TraceLog, and their teardown in the right order. The teardown
 * first runs mmlab fsck on the lab's state (libs/fsck) and fails on any finding, so every
 * integration test also checks that it left the page tables and frames consistent; a test that
 * leaves a corrupt state on purpose opts out with a reason (TestLabOptions.fsck).
 */
import type { NatsConnection } from 'nats';
import type { TraceEvent } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats } from '@mmlab/runtime';
import { type LabConfig, type LabStartOptions, LocalLab } from '@mmlab/runner';
import { type FsckReport, formatFinding, fsckRedis } from '@mmlab/fsck';
import { TraceLog, until } from './trace-log';

export interface TestLabOptions {
  /** the RpcClient's default reply timeout (default: RpcClient's own) */
  rpcTimeoutMs?: number;
  /** subscribe the TraceLog to every trace event (default true); false leaves it unstarted */
  trace?: boolean;
  /** run against this Redis (a `redis+cluster://` URL for a Redis Cluster) instead of a new one */
  redisUrl?: string;
  /** with redisUrl: its ACL users' URLs, per kind (ClusterHandle.urls; LabStartOptions.redisUsers) */
  redisUsers?: LabStartOptions['redisUsers'];
  /**
   * mmlab fsck at teardown (default: on, failing stop() on any finding). `{ skip: reason }`
   * opts out, for a test that leaves a corrupt or unreadable state on purpose.
   */
  fsck?: { skip: string };
  /** extra node flags for every service process (LabStartOptions.nodeArgs) */
  nodeArgs?: string[];
  /**
   * mm, cpu, hca and kvm instances serve /metrics and /health (lab.httpUrl) (default false: a
   * test that reads them asks; LabStartOptions.http)
   */
  http?: boolean;
}

export interface TestLab {
  lab: LocalLab;
  nc: NatsConnection;
  rpc: RpcClient;
  store: Store;
  trace: TraceLog;
  /**
   * The trace barrier: every instance flushes what it published, and this waits until the last
   * event of each has reached the TraceLog. Returns the events seen so far.
   */
  settled(): Promise<TraceEvent[]>;
  /**
   * Tear everything down: fsck the lab's state (failing on findings, after the rest is torn
   * down), then trace, NATS, Redis, the lab. Safe to call more than once.
   */
  stop(): Promise<void>;
  /** fsck the lab's state now (reading again for up to settleMs until clean). */
  fsck(settleMs?: number): Promise<FsckReport>;
}

/** MMLAB_LEASE_TTL_MS's default (libs/runtime config). */
const DEFAULT_LEASE_TTL_MS = 2000;

/**
 * A lab's teardown check: mmlab fsck of its Redis finds nothing, once what a killed replica
 * left has had about two lease TTLs to be finished by the others (read again until then).
 * Throws with every finding otherwise. For tests that run a LocalLab of their own.
 */
export async function assertFsckClean(
  redisUrl: string,
  leaseTtlMs = DEFAULT_LEASE_TTL_MS,
): Promise<void> {
  const r = await fsckRedis(redisUrl, { settleMs: 3 * leaseTtlMs + 1000 });
  if (!r.ok)
    throw new Error(
      `mmlab fsck at teardown: ${r.findings.length} finding(s):\n` +
        r.findings.map((f) => `  ${formatFinding(f)}`).join('\n'),
    );
}

/**
 * A lab's other teardown check: Redis refused nothing to anyone (ACL LOG is empty on every
 * node): every command a service sent was within its user's rights (libs/model acl.ts). A test
 * that provokes refusals on purpose resets the log (ACL LOG RESET) once it has read them.
 */
export async function assertNoAclDenials(store: Store): Promise<void> {
  const r = store.redis;
  const nodes = 'nodes' in r ? r.nodes('master') : [r];
  const denials: string[] = [];
  for (const n of nodes) {
    const log = (await n.call('ACL', 'LOG')) as Array<Array<string | number>>;
    for (const e of log) {
      const f = new Map<string, string | number>();
      for (let i = 0; i + 1 < e.length; i += 2) f.set(String(e[i]), e[i + 1]);
      denials.push(
        `  ${f.get('username')}: ${f.get('reason')} ${f.get('object')} (${f.get('context')}, ×${f.get('count')})`,
      );
    }
  }
  if (denials.length > 0)
    throw new Error(
      `Redis refused ${denials.length} kind(s) of request (ACL LOG):\n${denials.join('\n')}`,
    );
}

/** Run every step, even after one fails; throw the first failure at the end. */
async function allSteps(steps: Array<() => unknown>): Promise<void> {
  let failed: { error: unknown } | undefined;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      failed ??= { error };
    }
  }
  if (failed) throw failed.error;
}

export async function startTestLab(cfg: LabConfig, opts: TestLabOptions = {}): Promise<TestLab> {
  const lab = await LocalLab.start(cfg, {
    ...(opts.redisUrl ? { redisUrl: opts.redisUrl } : {}),
    ...(opts.redisUsers ? { redisUsers: opts.redisUsers } : {}),
    ...(opts.nodeArgs ? { nodeArgs: opts.nodeArgs } : {}),
    http: opts.http ?? false,
  });
  let nc: NatsConnection;
  try {
    nc = await connectNats(lab.natsUrl, 'test');
  } catch (e) {
    await lab.stop();
    throw e;
  }
  const store = new Store(lab.redisUrl);
  const trace = new TraceLog(nc);
  if (opts.trace !== false) trace.start();
  let stopped: Promise<void> | undefined;
  const rpc = new RpcClient(nc, opts.rpcTimeoutMs);
  const ttl = cfg.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  // fsck as the fsck user (read-only, acl.ts) when the lab has ACL users, as mmlab fsck would
  const fsckUrl = lab.redisUrlFor('fsck') || lab.redisUrl;
  const check = (settleMs = 0) => fsckRedis(fsckUrl, { settleMs });
  return {
    lab,
    nc,
    rpc,
    store,
    trace,
    settled: async () => {
      // Every running instance must answer: one that a loaded machine has not run within the
      // gather's 3 s is asked again (settling without it would judge a trace missing events).
      // A round ends at the last answer it waits for: as many as instances run (one killed or
      // paused cannot answer, and counting it made every such round wait out the 3 s).
      const replies = new Map<string, { instance: string; published: number }>();
      const missing = () => lab.runningInstances().filter((i) => !replies.has(i));
      for (let round = 0; missing().length > 0; round++) {
        if (round === 10) throw new Error(`no flush answer from ${missing().join(', ')}`);
        for (const r of await rpc.gather(
          'flush',
          {},
          { expect: lab.runningInstances().length, timeoutMs: 3000 },
        ))
          replies.set(r.instance, r);
      }
      await until(
        () =>
          [...replies.values()].every(
            (r) =>
              r.published === 0 ||
              trace.events.some((e) => e.id === `${r.instance}:${r.published}`),
          ),
        'every published trace event',
      );
      return trace.events;
    },
    fsck: check,
    stop: () =>
      (stopped ??= allSteps([
        () => (opts.fsck ? undefined : assertFsckClean(fsckUrl, ttl)),
        () => (opts.fsck ? undefined : assertNoAclDenials(store)),
        () => trace.stop(),
        () => nc.close(),
        () => store.quit(),
        () => lab.stop(),
      ])),
  };
}
