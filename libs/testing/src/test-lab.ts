/**
 * The set-up every integration test repeats: a LocalLab, a NATS connection, an RpcClient, a
 * Store on the lab's Redis and a TraceLog, and their teardown in the right order.
 */
import type { NatsConnection } from 'nats';
import type { TraceEvent } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats } from '@mmlab/runtime';
import { type LabConfig, LocalLab } from '@mmlab/runner';
import { TraceLog, until } from './trace-log';

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
  /**
   * The trace barrier: every instance flushes what it published, and this waits until the last
   * event of each has reached the TraceLog. Returns the events seen so far.
   */
  settled(): Promise<TraceEvent[]>;
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
  const rpc = new RpcClient(nc, opts.rpcTimeoutMs);
  return {
    lab,
    nc,
    rpc,
    store,
    trace,
    settled: async () => {
      const replies = await rpc.gather(
        'flush',
        {},
        { expect: lab.instances.length, timeoutMs: 3000 },
      );
      await until(
        () =>
          replies.every(
            (r) =>
              r.published === 0 ||
              trace.events.some((e) => e.id === `${r.instance}:${r.published}`),
          ),
        'every published trace event',
      );
      return trace.events;
    },
    stop: () =>
      (stopped ??= allSteps([
        () => trace.stop(),
        () => nc.close(),
        () => store.quit(),
        () => lab.stop(),
      ])),
  };
}
