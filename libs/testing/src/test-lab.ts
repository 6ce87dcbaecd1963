/**
 * The set-up every integration test repeats: a LocalLab, a NATS connection, an RpcClient, a
 * Store on the lab's Redis and a TraceLog, and their teardown in the right order.
 */
import type { NatsConnection } from 'nats';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats } from '@mmlab/runtime';
import { type LabConfig, LocalLab } from './local-lab';
import { TraceLog } from './trace-log';

export interface TestLabOptions {
  /** the RpcClient's default reply timeout (default: RpcClient's own) */
  rpcTimeoutMs?: number;
  /** subscribe the TraceLog to every trace event (default true); false leaves it unstarted */
  trace?: boolean;
  /** run against this Redis (a `redis+cluster://` URL for a Redis Cluster) instead of a new one */
  redisUrl?: string;
}

export interface TestLab {
  lab: LocalLab;
  nc: NatsConnection;
  rpc: RpcClient;
  store: Store;
  trace: TraceLog;
  /** Tear everything down: trace, NATS, Redis, then the lab. Safe to call more than once. */
  stop(): Promise<void>;
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
  const lab = await LocalLab.start(cfg, opts.redisUrl ? { redisUrl: opts.redisUrl } : {});
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
  return {
    lab,
    nc,
    rpc: new RpcClient(nc, opts.rpcTimeoutMs),
    store,
    trace,
    stop: () =>
      (stopped ??= allSteps([
        () => trace.stop(),
        () => nc.close(),
        () => store.quit(),
        () => lab.stop(),
      ])),
  };
}
