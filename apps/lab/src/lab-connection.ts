/**
 * The lab a scenario runs against: either one started here for this run (`--local`, the same
 * LocalLab the integration tests use) or an already running one found through NATS_URL and
 * MMLAB_OBSERVER_URL (compose, scripts/lab.sh, a cluster).
 */
import type { NatsConnection } from 'nats';
import { EnvSchema, RpcClient, connectNats } from '@mmlab/runtime';
import type { ScenarioConfig } from '@mmlab/scenario';
import { type LabConfig, LocalLab } from '@mmlab/runner';

export const DEFAULT_OBSERVER_URL = 'http://127.0.0.1:8080';

export interface LabConnection {
  readonly rpc: RpcClient;
  readonly observerUrl: string;
  /** every service instance (mm-0, cpu1, observer ...): each must answer the flush barrier */
  readonly instances: readonly string[];
  /** the lab started for this run, for steps that kill or pause its processes */
  readonly local: LocalLab | null;
  /** Disconnect; a local lab is stopped too (its servers and every service). */
  close(): Promise<void>;
}

async function open(
  natsUrl: string,
  name: string,
): Promise<{ nc: NatsConnection; rpc: RpcClient }> {
  const nc = await connectNats(natsUrl, name);
  return { nc, rpc: new RpcClient(nc) };
}

/** The LocalLab config for a scenario: its config, with the defaults the scenario format documents. */
export function labConfigOf(config: ScenarioConfig, seed?: number): LabConfig {
  return {
    mode: config.mode,
    frames: config.frames,
    ...(config.memlockPages !== undefined && { memlockPages: config.memlockPages }),
    cpus: config.cpus,
    mmReplicas: config.mmReplicas,
    leaseTtlMs: config.leaseTtlMs,
    softlockupMs: config.softlockupMs,
    subscribers: (config.subscribers ?? []).map((s) => ({
      name: s.name,
      kind: s.kind,
      ...(s.invalidateLatencyMs !== undefined && { invalidateLatencyMs: s.invalidateLatencyMs }),
      ...(s.npfDelayMs !== undefined && { npfDelayMs: s.npfDelayMs }),
    })),
    dispatch: config.dispatch ?? 'parallel',
    env: {
      ...(config.subscriberLeaseMs !== undefined && {
        MMLAB_SUBSCRIBER_LEASE_MS: String(config.subscriberLeaseMs),
      }),
      ...(config.callbackTimeoutMs !== undefined && {
        MMLAB_CALLBACK_TIMEOUT_MS: String(config.callbackTimeoutMs),
      }),
    },
    inject: config.inject ?? [],
    ...(seed !== undefined && { seed }),
  };
}

/**
 * Start a lab exactly as the scenario's config asks (subscribers included: they are lab
 * instances, so the flush barrier waits for them too); service logs go to logDir.
 */
export async function startLocalLab(
  config: ScenarioConfig,
  logDir: string,
  seed?: number,
): Promise<LabConnection> {
  const lab = await LocalLab.start(labConfigOf(config, seed), { logDir });
  try {
    const { nc, rpc } = await open(lab.natsUrl, 'mmlab-run');
    if (!lab.observerUrl) throw new Error('the local lab has no observer');
    return {
      rpc,
      observerUrl: lab.observerUrl,
      instances: lab.instances,
      local: lab,
      close: async () => {
        await nc.close();
        await lab.stop();
      },
    };
  } catch (e) {
    await lab.stop();
    throw e;
  }
}

/**
 * Connect to a running lab. The instances that answer ping are the ones the flush barrier
 * waits for; what can be seen of its config (CPUs, mm replicas, frames, subscribers) is
 * compared with the scenario's, and every difference is passed to `warn`. The mode, dispatch
 * and injections cannot be seen from outside.
 */
export async function connectLab(
  config: ScenarioConfig,
  env: NodeJS.ProcessEnv,
  warn: (msg: string) => void,
): Promise<LabConnection> {
  const natsUrl = EnvSchema.shape.NATS_URL.parse(env.NATS_URL);
  const observerUrl = env.MMLAB_OBSERVER_URL || DEFAULT_OBSERVER_URL;
  const { nc, rpc } = await open(natsUrl, 'mmlab-run').catch((e: unknown) => {
    throw new Error(
      `cannot reach NATS at ${natsUrl}: ${e instanceof Error ? e.message : String(e)}`,
    );
  });
  try {
    const pongs = await rpc.gather('ping', {}, { timeoutMs: 1000 });
    if (pongs.length === 0) throw new Error(`no service of the lab answers ping on ${natsUrl}`);
    const count = (service: string) => pongs.filter((p) => p.service === service).length;
    if (count('cpu') !== config.cpus)
      warn(`the lab has ${count('cpu')} cpu instance(s), the scenario asks for ${config.cpus}`);
    if (count('mm') !== config.mmReplicas)
      warn(`the lab has ${count('mm')} mm replica(s), the scenario asks for ${config.mmReplicas}`);
    if (count('observer') === 0) warn('no observer answers ping: the event fetch will likely fail');
    for (const sub of config.subscribers ?? [])
      if (!pongs.some((p) => p.instance === sub.name))
        warn(`subscriber ${sub.name} (${sub.kind}) of the scenario does not answer ping`);
    try {
      const mem = await rpc.call('meminfo', {});
      if (mem.frames !== config.frames)
        warn(`the lab has ${mem.frames} frames, the scenario asks for ${config.frames}`);
    } catch (e) {
      warn(`meminfo failed, frames not compared: ${e instanceof Error ? e.message : String(e)}`);
    }
    return {
      rpc,
      observerUrl,
      instances: pongs.map((p) => p.instance),
      local: null,
      close: () => nc.close(),
    };
  } catch (e) {
    await nc.close();
    throw e;
  }
}
