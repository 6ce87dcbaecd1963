/**
 * `mmlab up`: the whole lab natively — nats-server, redis-server and every service as its own
 * process — on the usual ports when they are free, until Ctrl-C. scripts/lab.sh runs this.
 * Beside it, the lab API (apps/lab/src/api) on LAB_API_PORT: a nemesis on this very lab, so
 * `mmlab chaos` can pause, kill and restart its processes and break its subscribers.
 */
import { LatencySpec, MmlabError, MmuLockMode, Mode } from '@mmlab/protocol';
import { EnvSchema, RpcClient, connectNats, newLabToken } from '@mmlab/runtime';
import { LAB_PORTS, type LabConfig, LocalLab } from '@mmlab/runner';
import { parsePort } from './api/api-command';
import { LAB_API_PORT, serveLabApi } from './api/lab-api';
import {
  portOf,
  removeDeviceCredsFile,
  removeNatsUrlFile,
  writeDeviceCredsFile,
  removeTokenFile,
  writeNatsUrlFile,
  writeTokenFile,
} from './token-file';

export interface UpOptions {
  mode: string;
  frames: string;
  /** slots of the swap device (MMLAB_SWAP_SLOTS); default none */
  swapSlots?: string;
  cpus: string;
  mmReplicas: string;
  /** HCA subscribers hca0..hca(n-1) */
  hca: string;
  /** KVM subscribers kvm0..kvm(n-1) */
  kvm: string;
  /** how the KVMs hold mmu_lock for a range zap: spin (v3.7, the service's default), sleep, generation */
  mmuLock?: string;
  /** every subscriber's invalidation latency: ms or a distribution ("uniform:a:b", ...) */
  invalidateLatency?: string;
  apiPort: string;
  /** any free ports instead of 4222, 6379, 8080 (and 8081 unless --api-port is given) */
  freePorts?: boolean;
  logs: string;
  /** check the options, print the lab they describe, start nothing (scripts/lab.sh, before a build) */
  check?: boolean;
  /**
   * external subscribers (bring your own device): the lab makes each one's NATS identity and
   * Redis user and writes them to a private file (deviceCredsFile) the device reads (--creds)
   */
  byo?: string[];
}

const DEVICE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const RESERVED = /^(observer|mm-\d+|cpu\d+|hca\d+|kvm\d+|lab|lab-api|mm|cpu)$/;

/** --byo NAME[,NAME]: checked names of the external subscribers. */
export function byoNames(given: readonly string[] | undefined): string[] {
  const names = (given ?? []).flatMap((g) => g.split(',')).filter((n) => n !== '');
  for (const n of names) {
    if (!DEVICE_NAME.test(n))
      throw new MmlabError('EINVAL', `--byo ${n}: a device name is 1-64 letters, digits, _ or -`);
    if (RESERVED.test(n))
      throw new MmlabError('EINVAL', `--byo ${n}: that name is taken by a service of the lab`);
  }
  if (new Set(names).size !== names.length)
    throw new MmlabError('EINVAL', `--byo: a device name given twice (${names.join(', ')})`);
  return names;
}

/** "12" → 12, "uniform:1:5" stays a string; checked as LatencySpec. */
export function latencyOf(s: string): number | string {
  const v = /^\s*\d+(\.\d+)?\s*$/.test(s) ? Number(s) : s;
  const r = LatencySpec.safeParse(v);
  if (!r.success)
    throw new MmlabError(
      'EINVAL',
      `--invalidate-latency: ${r.error.issues.map((i) => i.message).join('; ')}`,
    );
  return v;
}

/** The LabConfig the options ask for (throws EINVAL on a bad option, naming it in one line). */
export function upConfig(opts: UpOptions): LabConfig {
  const mode = Mode.safeParse(opts.mode);
  const n = (s: string, what: string, min: number): number => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < min)
      throw new MmlabError('EINVAL', `--${what} must be an integer ≥ ${min}, got ${s}`);
    return v;
  };
  if (!mode.success)
    throw new MmlabError('EINVAL', `--mode must be patched or legacy, got ${opts.mode}`);
  const latency =
    opts.invalidateLatency === undefined ? undefined : latencyOf(opts.invalidateLatency);
  const kvms = n(opts.kvm ?? '0', 'kvm', 0);
  let mmuLock: MmuLockMode | undefined;
  if (opts.mmuLock !== undefined) {
    const m = MmuLockMode.safeParse(opts.mmuLock);
    if (!m.success)
      throw new MmlabError(
        'EINVAL',
        `--mmu-lock must be ${MmuLockMode.options.join(', ')}, got ${opts.mmuLock}`,
      );
    if (kvms === 0) throw new MmlabError('EINVAL', '--mmu-lock is for KVMs: give --kvm n too');
    mmuLock = m.data;
  }
  return {
    mode: mode.data,
    frames: n(opts.frames, 'frames', 1),
    ...(opts.swapSlots !== undefined && { swapSlots: n(opts.swapSlots, 'swap-slots', 0) }),
    cpus: n(opts.cpus, 'cpus', 1),
    mmReplicas: n(opts.mmReplicas, 'mm-replicas', 1),
    subscribers: [
      ...Array.from({ length: n(opts.hca, 'hca', 0) }, (_, i) => ({
        name: `hca${i}`,
        kind: 'hca' as const,
        ...(latency !== undefined && { invalidateLatencyMs: latency }),
      })),
      ...Array.from({ length: kvms }, (_, i) => ({
        name: `kvm${i}`,
        kind: 'kvm' as const,
        ...(mmuLock !== undefined && { mmuLock }),
        ...(latency !== undefined && { invalidateLatencyMs: latency }),
      })),
      ...byoNames(opts.byo).map((name) => ({ name, kind: 'external' as const })),
    ],
  };
}

/** "2 HCAs", "1 HCA, 2 KVMs (mmu_lock sleep)": the subscribers of cfg, for a summary line. */
export function subscribersSummary(cfg: LabConfig): string {
  const subs = cfg.subscribers ?? [];
  const hcas = subs.filter((s) => s.kind === 'hca').length;
  const kvms = subs.filter((s) => s.kind === 'kvm');
  const byo = subs.filter((s) => s.kind === 'external').map((s) => s.name);
  const plural = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
  const ext = byo.length > 0 ? `, external ${byo.join(' ')}` : '';
  if (kvms.length === 0) return plural(hcas, 'HCA') + ext;
  return `${plural(hcas, 'HCA')}, ${plural(kvms.length, 'KVM')} (mmu_lock ${kvms[0].mmuLock ?? 'spin'})${ext}`;
}

/** This lab's token: MMLAB_LAB_TOKEN when set (checked), else a new random one. */
export function labTokenOf(env: NodeJS.ProcessEnv): string {
  const r = EnvSchema.shape.MMLAB_LAB_TOKEN.safeParse(env.MMLAB_LAB_TOKEN);
  if (!r.success)
    throw new Error(`MMLAB_LAB_TOKEN: ${r.error.issues.map((i) => i.message).join('; ')}`);
  return r.data ?? newLabToken();
}

export async function upCommand(opts: UpOptions): Promise<number> {
  const token = labTokenOf(process.env);
  const cfg = { ...upConfig(opts), token };
  // --free-ports: the API too, unless --api-port names one
  const apiPort =
    opts.freePorts && opts.apiPort === String(LAB_API_PORT)
      ? 0
      : parsePort(opts.apiPort, 'api-port');
  if (opts.check) {
    console.log(
      `options ok: ${cfg.mode}, ${cfg.frames} frames, ${cfg.cpus} CPUs, ${cfg.mmReplicas} mm replicas, ${subscribersSummary(cfg)}`,
    );
    return 0;
  }
  const lab = await LocalLab.start(cfg, {
    logDir: opts.logs,
    ...(!opts.freePorts && { ports: LAB_PORTS }),
  });
  let stopLab = () => lab.stop();
  try {
    const nc = await connectNats(lab.natsUrl, 'mmlab-up');
    const api = await serveLabApi({
      lab,
      rpc: new RpcClient(nc),
      port: apiPort,
      host: EnvSchema.shape.MMLAB_HTTP_HOST.parse(process.env.MMLAB_HTTP_HOST),
      token,
      log: (l) => console.log(l),
    }).catch(async (e: unknown) => {
      await nc.close();
      throw e;
    });
    const boundPort = portOf(api.url)!;
    let whereTheCliFindsIt: string;
    try {
      whereTheCliFindsIt = `mmlab chaos/heal read ${writeTokenFile(boundPort, token)}`;
    } catch (e) {
      // the lab runs all the same; the CLI then needs the token given
      whereTheCliFindsIt = `no token file (${e instanceof Error ? e.message : String(e)}): give mmlab chaos/heal MMLAB_LAB_TOKEN or --token`;
    }
    // the lab owner's NATS credentials, for `mmlab run` against this lab (docs/security.md)
    const natsPort = Number(new URL(lab.natsUrl.replace(/^nats:/, 'http:')).port);
    let natsCreds: string;
    try {
      natsCreds = `credentials of user lab in ${writeNatsUrlFile(natsPort, lab.natsUrl)}`;
    } catch (e) {
      natsCreds = `no credentials file (${e instanceof Error ? e.message : String(e)}): NATS_URL=${lab.natsUrl}`;
    }
    const natsServer = lab.natsUrl.replace(/\/\/[^@/]+@/, '//');
    // each external device's credentials (its NATS identity, the dev Redis user), for --creds
    const devices = (cfg.subscribers ?? []).filter((s) => s.kind === 'external');
    const deviceFiles = devices.map((d) => {
      const creds = JSON.stringify(lab.deviceCreds(d.name));
      return { name: d.name, creds, file: writeDeviceCredsFile(d.name, creds) };
    });
    stopLab = async () => {
      removeTokenFile(boundPort, token);
      removeNatsUrlFile(natsPort, lab.natsUrl);
      for (const d of deviceFiles) removeDeviceCredsFile(d.name, d.creds);
      // every window healed first: no process left stopped, no subscriber left broken
      await api.close().catch((e: unknown) => console.error(`mmlab: ${String(e)}`));
      await nc.close();
      await lab.stop();
    };
    const subs = (cfg.subscribers ?? []).map((s) => s.name);
    const lines = [
      `mmlab is up (${cfg.mode}, ${cfg.frames} frames, ${cfg.cpus} CPUs, ${cfg.mmReplicas} mm replicas, ${subscribersSummary(cfg)})`,
      `  NATS      ${natsServer}   (${natsCreds})`,
      `  Redis     ${lab.redisUrl}`,
      `  dashboard ${lab.observerUrl}/   (observer API: /api, /events, /invariants, /metrics)`,
      `  lab API   ${api.url}   (the nemesis: /chaos, /heal, /targets; OpenAPI: /api)`,
      `  services  ${lab.instances.join(' ')}   (logs in ${opts.logs})`,
      `  token     ${token}`,
      `            (POST/PUT/DELETE need it: Authorization: Bearer <token>; ${whereTheCliFindsIt})`,
      '',
      'Run a scenario against it:',
      `  NATS_URL=${natsServer} MMLAB_OBSERVER_URL=${lab.observerUrl} npx mmlab run examples/anon-basic.yaml`,
      ...(deviceFiles.length > 0
        ? [
            'Bring your own device (not started by the lab: run it, then check it):',
            ...deviceFiles.flatMap((d) => [
              `  node dist/examples/byo/toy-gpu.js --creds ${d.file}`,
              `  NATS_URL=${natsServer} MMLAB_OBSERVER_URL=${lab.observerUrl} npx mmlab conform --subscriber ${d.name}`,
            ]),
          ]
        : []),
      'Break it:',
      `  export MMLAB_LAB_URL=${api.url}`,
      ...(subs.length ? [`  npx mmlab chaos ${subs[0]} drop-ack; npx mmlab heal ${subs[0]}`] : []),
      '  npx mmlab chaos cpu0 pause --ms 5000; npx mmlab chaos status',
      '',
      'Ctrl-C stops everything.',
    ];
    console.log(lines.join('\n'));
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    console.log('stopping the lab');
    // a second Ctrl-C must not kill this process before its children are stopped
    const patience = () => console.log('still stopping the lab (healing, then every process)');
    process.on('SIGINT', patience);
    process.on('SIGTERM', patience);
  } finally {
    await stopLab();
  }
  return 0;
}
