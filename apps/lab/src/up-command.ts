/**
 * `mmlab up`: the whole lab natively — nats-server, redis-server and every service as its own
 * process — on the usual ports when they are free, until Ctrl-C. scripts/lab.sh runs this.
 */
import { Mode } from '@mmlab/protocol';
import { LAB_PORTS, LocalLab } from '@mmlab/testing';

export interface UpOptions {
  mode: string;
  frames: string;
  cpus: string;
  mmReplicas: string;
  logs: string;
}

export async function upCommand(opts: UpOptions): Promise<number> {
  const mode = Mode.safeParse(opts.mode);
  const n = (s: string, what: string, min: number): number => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < min)
      throw new Error(`--${what} must be an integer ≥ ${min}, got ${s}`);
    return v;
  };
  if (!mode.success) throw new Error(`--mode must be patched or legacy, got ${opts.mode}`);
  const cfg = {
    mode: mode.data,
    frames: n(opts.frames, 'frames', 1),
    cpus: n(opts.cpus, 'cpus', 1),
    mmReplicas: n(opts.mmReplicas, 'mm-replicas', 1),
  };
  const lab = await LocalLab.start(cfg, {
    logDir: opts.logs,
    ports: LAB_PORTS,
  });
  const lines = [
    `mmlab is up (${cfg.mode}, ${cfg.frames} frames, ${cfg.cpus} CPUs, ${cfg.mmReplicas} mm replicas)`,
    `  NATS      ${lab.natsUrl}`,
    `  Redis     ${lab.redisUrl}`,
    `  dashboard ${lab.observerUrl}/   (observer API: /api, /events, /invariants, /metrics)`,
    `  services  ${lab.instances.join(' ')}   (logs in ${opts.logs})`,
    '',
    'Run a scenario against it:',
    `  NATS_URL=${lab.natsUrl} MMLAB_OBSERVER_URL=${lab.observerUrl} npm run mmlab -- run examples/anon-basic.yaml`,
    '',
    'Ctrl-C stops everything.',
  ];
  console.log(lines.join('\n'));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  console.log('stopping the lab');
  await lab.stop();
  return 0;
}
