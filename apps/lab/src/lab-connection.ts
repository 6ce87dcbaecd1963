/**
 * The lab a scenario runs against: either one started here for this run (`--local`, the same
 * LocalLab the integration tests use) or an already running one found through NATS_URL and
 * MMLAB_OBSERVER_URL (compose, scripts/lab.sh, a cluster), and REDIS_URL for the fsck after the run.
 */
import type { NatsConnection } from 'nats';
import { MmlabError, type ServiceConfig } from '@mmlab/protocol';
import { EnvSchema, RpcClient, connectNats } from '@mmlab/runtime';
import type { ScenarioConfig, SubscriberSpec } from '@mmlab/scenario';
import { type LabConfig, LocalLab } from '@mmlab/runner';
import { natsUrlWithCredentials } from './token-file';

/** A NATS URL fit to print: its password masked. */
const shown = (url: string): string => url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');

export const DEFAULT_OBSERVER_URL = 'http://127.0.0.1:8080';

export interface LabConnection {
  readonly rpc: RpcClient;
  readonly observerUrl: string;
  /** every service instance (mm-0, cpu1, observer ...): each must answer the flush barrier */
  readonly instances: readonly string[];
  /** the lab's Redis, for mmlab fsck after the run (null: not known) */
  readonly redisUrl: string | null;
  /** the lab started for this run, for steps that kill or pause its processes */
  readonly local: LocalLab | null;
  /** what the lab runs with (a running lab's as it reported it): what results.json records */
  readonly config: ScenarioConfig;
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
    ...(config.swapSlots ? { swapSlots: config.swapSlots } : {}),
    ...(config.thp && { thp: config.thp }),
    ...(config.hugePageOrder !== undefined && { hugePageOrder: config.hugePageOrder }),
    ...(config.hugetlbPages ? { hugetlbPages: config.hugetlbPages } : {}),
    ...(config.watermarks && { watermarks: config.watermarks }),
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
      ...(s.mmuLock !== undefined && { mmuLock: s.mmuLock }),
      ...(s.faultDelayMs !== undefined && { faultDelayMs: s.faultDelayMs }),
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
  // No instance serves /metrics or /health: nothing could find their ports in a lab that lives
  // for one run (the observer serves its API as always).
  const lab = await LocalLab.start(labConfigOf(config, seed), { logDir, http: false });
  try {
    const { nc, rpc } = await open(lab.natsUrl, 'mmlab-run');
    if (!lab.observerUrl) throw new Error('the local lab has no observer');
    return {
      rpc,
      observerUrl: lab.observerUrl,
      instances: lab.instances,
      // the fsck after the run reads as the read-only fsck user (libs/model acl.ts)
      redisUrl: lab.redisUrlFor('fsck') || lab.redisUrl,
      local: lab,
      config,
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

/** A running lab whose config is not the scenario's: the run is refused (verdict unknown). */
export class LabMismatch extends MmlabError {
  constructor(
    readonly differences: readonly string[],
    /** what the lab runs with: results.json records this, never a config that did not run */
    readonly labConfig: ScenarioConfig,
  ) {
    super(
      'EINVAL',
      `the running lab is not the scenario's (${differences.join('; ')}): nothing was run; ` +
        "start a lab with the scenario's config, or run it with --local",
    );
  }
}

/** The environment's default of a variable (what a lab started without it runs with). */
const envDefault = <K extends keyof typeof EnvSchema.shape>(k: K) =>
  EnvSchema.shape[k].parse(undefined) as ReturnType<(typeof EnvSchema.shape)[K]['parse']>;

/** "250" → 250, "uniform:1:5" stays a string: as a scenario writes a latency. */
const latencyValue = (s: string): number | string => (/^\d+(\.\d+)?$/.test(s) ? Number(s) : s);

/**
 * A running lab's config as a scenario config, from what every instance answers to
 * mmlab.ctl.config and the frames memory really has (meminfo). Instances of one service that
 * disagree are reported in `mixed` (a lab half restarted with other settings).
 */
export function runningConfig(
  configs: readonly ServiceConfig[],
  frames: number,
): { config: ScenarioConfig; mixed: string[] } {
  const mixed: string[] = [];
  const mms = configs.filter((c) => c.service === 'mm');
  const ref = mms[0] ?? configs[0];
  const keys = [
    'mode',
    'leaseTtlMs',
    'softlockupMs',
    'dispatch',
    'callbackTimeoutMs',
    'subscriberLeaseMs',
    'memlockPages',
    'thp',
    'hugePageOrder',
    'hugetlbPages',
  ] as const;
  for (const k of keys)
    for (const c of mms)
      if (c[k] !== ref[k])
        mixed.push(`${k}: ${ref.instance} runs ${String(ref[k])}, ${c.instance} ${String(c[k])}`);
  for (const c of configs)
    if (c.inject.join(',') !== ref.inject.join(','))
      mixed.push(
        `inject: ${ref.instance} runs [${ref.inject.join(', ')}], ${c.instance} [${c.inject.join(', ')}]`,
      );
  const subscribers: SubscriberSpec[] = configs
    .filter((c) => c.service === 'hca' || c.service === 'kvm' || c.service === 'dev')
    .map((c) =>
      c.service === 'dev'
        ? { name: c.instance, kind: 'external' as const }
        : c.service === 'kvm'
          ? {
              name: c.instance,
              kind: 'kvm' as const,
              invalidateLatencyMs: latencyValue(c.invalidateLatency),
              mmuLock: c.mmuLock ?? 'spin',
              faultDelayMs: c.npfDelayMs,
            }
          : {
              name: c.instance,
              kind: 'hca' as const,
              invalidateLatencyMs: latencyValue(c.invalidateLatency),
              npfDelayMs: c.npfDelayMs,
            },
    );
  return {
    config: {
      mode: ref.mode,
      frames,
      ...(ref.swapSlots ? { swapSlots: ref.swapSlots } : {}),
      ...(ref.thp && { thp: ref.thp }),
      ...(ref.hugePageOrder !== undefined && { hugePageOrder: ref.hugePageOrder }),
      ...(ref.hugetlbPages ? { hugetlbPages: ref.hugetlbPages } : {}),
      ...(ref.watermarks?.low ? { watermarks: ref.watermarks } : {}),
      cpus: configs.filter((c) => c.service === 'cpu').length,
      mmReplicas: mms.length,
      leaseTtlMs: ref.leaseTtlMs,
      softlockupMs: ref.softlockupMs,
      ...(subscribers.length > 0 && { subscribers }),
      subscriberLeaseMs: ref.subscriberLeaseMs,
      callbackTimeoutMs: ref.callbackTimeoutMs,
      dispatch: ref.dispatch,
      inject: ref.inject,
      memlockPages: ref.memlockPages,
    },
    mixed,
  };
}

/**
 * What a scenario's config asks for that the running lab does not run with (memlockPages included); none of it can be
 * changed for one run. A setting the scenario leaves out is compared with its default (what
 * `--local` would start). More CPUs than the scenario's, another number of mm replicas and
 * subscribers the scenario does not use change nothing the scenario can see: not differences.
 */
export function configDifferences(want: ScenarioConfig, lab: ScenarioConfig): string[] {
  const out: string[] = [];
  const cmp = (what: string, scenario: unknown, running: unknown) => {
    const s = JSON.stringify(scenario);
    const r = JSON.stringify(running);
    if (s !== r) out.push(`${what}: the scenario asks for ${s}, the lab runs ${r}`);
  };
  cmp('mode', want.mode, lab.mode);
  cmp('frames', want.frames, lab.frames);
  cmp('swapSlots', want.swapSlots ?? 0, lab.swapSlots ?? 0);
  cmp('thp', want.thp ?? 'never', lab.thp ?? 'never');
  cmp('hugePageOrder', want.hugePageOrder ?? 3, lab.hugePageOrder ?? 3);
  cmp('hugetlbPages', want.hugetlbPages ?? 0, lab.hugetlbPages ?? 0);
  cmp('watermarks', want.watermarks ?? null, lab.watermarks ?? null);
  if (lab.cpus < want.cpus)
    out.push(`cpus: the scenario asks for ${want.cpus}, the lab has ${lab.cpus}`);
  cmp('leaseTtlMs', want.leaseTtlMs ?? envDefault('MMLAB_LEASE_TTL_MS'), lab.leaseTtlMs);
  cmp('softlockupMs', want.softlockupMs ?? envDefault('MMLAB_SOFTLOCKUP_MS'), lab.softlockupMs);
  cmp(
    'subscriberLeaseMs',
    want.subscriberLeaseMs ?? envDefault('MMLAB_SUBSCRIBER_LEASE_MS'),
    lab.subscriberLeaseMs,
  );
  cmp(
    'callbackTimeoutMs',
    want.callbackTimeoutMs ?? envDefault('MMLAB_CALLBACK_TIMEOUT_MS'),
    lab.callbackTimeoutMs,
  );
  cmp('dispatch', want.dispatch ?? envDefault('MMLAB_DISPATCH'), lab.dispatch);
  cmp('memlockPages', want.memlockPages ?? Math.floor(want.frames / 4), lab.memlockPages);
  cmp('inject', [...(want.inject ?? [])].sort(), [...(lab.inject ?? [])].sort());
  for (const sub of want.subscribers ?? []) {
    const running = (lab.subscribers ?? []).find((s) => s.name === sub.name);
    if (!running) {
      out.push(`subscriber ${sub.name}: not in the lab`);
      continue;
    }
    if (sub.kind === 'external' || running.kind === 'external') {
      // a device the user runs: its latency and knobs are its own business
      cmp(`${sub.name}.kind`, sub.kind, running.kind);
      continue;
    }
    cmp(
      `${sub.name}.invalidateLatencyMs`,
      String(sub.invalidateLatencyMs ?? 0),
      String(running.invalidateLatencyMs ?? 0),
    );
    cmp(`${sub.name}.kind`, sub.kind, running.kind);
    if (sub.kind === 'kvm') {
      cmp(`${sub.name}.mmuLock`, sub.mmuLock ?? 'spin', running.mmuLock ?? 'spin');
      cmp(`${sub.name}.faultDelayMs`, sub.faultDelayMs ?? 0, running.faultDelayMs ?? 0);
    } else cmp(`${sub.name}.npfDelayMs`, sub.npfDelayMs ?? 0, running.npfDelayMs ?? 0);
  }
  return out;
}

/**
 * Connect to a running lab. The instances that answer ping are the ones the flush barrier
 * waits for. The lab's config is read from the lab itself (every instance answers
 * mmlab.ctl.config; meminfo gives the frames): a scenario that asks for anything else is
 * refused (LabMismatch: verdict unknown, the differences listed), since a run on another
 * mode or latency would be judged against the wrong lab. What only differs in scale (more
 * CPUs, another number of mm replicas) is passed to `warn`.
 */
export async function connectLab(
  config: ScenarioConfig,
  env: NodeJS.ProcessEnv,
  warn: (msg: string) => void,
): Promise<LabConnection> {
  // a lab `mmlab up` started: its owner's credentials from the file it left (token-file.ts)
  const natsUrl = natsUrlWithCredentials(EnvSchema.shape.NATS_URL.parse(env.NATS_URL), env);
  const observerUrl = env.MMLAB_OBSERVER_URL || DEFAULT_OBSERVER_URL;
  const { nc, rpc } = await open(natsUrl, 'mmlab-run').catch((e: unknown) => {
    throw new Error(
      `cannot reach NATS at ${shown(natsUrl)}: ${e instanceof Error ? e.message : String(e)}`,
    );
  });
  try {
    const pongs = await rpc.gather('ping', {}, { timeoutMs: 1000 });
    if (pongs.length === 0)
      throw new Error(`no service of the lab answers ping on ${shown(natsUrl)}`);
    if (!pongs.some((p) => p.service === 'observer'))
      warn('no observer answers ping: the event fetch will likely fail');
    const configs = await rpc.gather('config', {}, { expect: pongs.length, timeoutMs: 2000 });
    const silent = pongs.filter((p) => !configs.some((c) => c.instance === p.instance));
    if (silent.length > 0)
      throw new Error(
        `${silent.map((p) => p.instance).join(', ')} answer ping but not mmlab.ctl.config: their configuration cannot be compared`,
      );
    const mem = await rpc.call('meminfo', {});
    const running = runningConfig(configs, mem.frames);
    const differences = [...running.mixed, ...configDifferences(config, running.config)];
    if (differences.length > 0) throw new LabMismatch(differences, running.config);
    if (running.config.cpus > config.cpus)
      warn(`the lab has ${running.config.cpus} CPUs, the scenario uses ${config.cpus}`);
    if (running.config.mmReplicas !== config.mmReplicas)
      warn(
        `the lab has ${running.config.mmReplicas} mm replica(s), the scenario asks for ${config.mmReplicas}`,
      );
    return {
      rpc,
      observerUrl,
      instances: pongs.map((p) => p.instance),
      redisUrl: env.REDIS_URL || null,
      local: null,
      config: running.config,
      close: () => nc.close(),
    };
  } catch (e) {
    await nc.close();
    throw e;
  }
}
