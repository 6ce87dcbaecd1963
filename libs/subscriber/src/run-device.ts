/**
 * runDevice(device): a Device as a lab process — what apps/hca/src/main.ts does for the HCA,
 * for any device written on the SDK (device.ts). It answers:
 *
 *   mmlab.dev.<name>.attach / access / detach   (devAttach, devAccess, devDetach)
 *   mmlab.sub.<name>.*                          the notifier callbacks from mm, and subChaos
 *   mmlab.ctl.*                                 ping, config, flush (the lab's barrier)
 *
 * Where it connects, in this order: `--creds FILE` (or MMLAB_DEV_CREDS=FILE), the file
 * `mmlab up --byo NAME` writes (DeviceCreds: its NATS identity, its Redis user, and the
 * environment the lab's services run with); else NATS_URL, REDIS_URL and MMLAB_INSTANCE.
 * SIGTERM / SIGINT: detach from every pid, drain, drop the lease, exit 0.
 */
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { Controller, type DynamicModule, Logger, Module } from '@nestjs/common';
import { z } from 'zod';
import { type ReqParsed, SubscriberName } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import {
  type MmlabServerNats,
  OpIds,
  Rpc,
  RpcClient,
  Tracer,
  connectNats,
  controlController,
  loadEnv,
  runService,
  startMicroservice,
} from '@mmlab/runtime';
import { type Device, DeviceHost } from './device';
import { isCallbackSubjectOf, notifierController } from './notifier.controller';

/** The credentials file of an external subscriber (`mmlab up --byo NAME` writes it, mode 0600). */
export const DeviceCreds = z.strictObject({
  /** the subscriber name: its instance, its NATS user, the {id} of its subjects */
  name: SubscriberName,
  /** NATS with the device's own user and password */
  natsUrl: z.string().min(1),
  /** Redis with the `dev` ACL user */
  redisUrl: z.string().min(1),
  /** the environment the lab's services run with (MMLAB_MODE, MMLAB_FRAMES, ...) */
  env: z.record(z.string(), z.string()).default({}),
});
export type DeviceCreds = z.infer<typeof DeviceCreds>;

/** A clean stop gives the detaches and the open invalidations this long. */
const SHUTDOWN_QUIESCE_MS = 1500;

/** The device's own RPCs (mmlab.dev.<name>.*). */
function deviceController(host: DeviceHost) {
  @Controller()
  class DeviceController {
    @Rpc('devAttach', host.name)
    attach(req: ReqParsed<'devAttach'>) {
      return host.attach(req.pid);
    }

    @Rpc('devAccess', host.name)
    access(req: ReqParsed<'devAccess'>) {
      return host.access(req);
    }

    @Rpc('devDetach', host.name)
    detach(req: ReqParsed<'devDetach'>) {
      return host.detach(req.pid);
    }
  }
  return DeviceController;
}

@Module({})
class DeviceModule {
  static register(host: DeviceHost, tracer: Tracer): DynamicModule {
    return {
      module: DeviceModule,
      controllers: [
        deviceController(host),
        notifierController(host.notifier),
        controlController(tracer),
      ],
    };
  }
}

/** `--creds FILE` or MMLAB_DEV_CREDS: the file's credentials put into the environment. */
export function applyCreds(argv: readonly string[], env: NodeJS.ProcessEnv): DeviceCreds | null {
  const i = argv.indexOf('--creds');
  const file = i >= 0 ? argv[i + 1] : env.MMLAB_DEV_CREDS;
  if (!file) return null;
  const creds = DeviceCreds.parse(JSON.parse(readFileSync(file, 'utf8')));
  Object.assign(env, creds.env, {
    NATS_URL: creds.natsUrl,
    REDIS_URL: creds.redisUrl,
    MMLAB_INSTANCE: creds.name,
  });
  return creds;
}

/** Run device as a lab process until SIGTERM / SIGINT. */
export function runDevice(device: Device): void {
  applyCreds(process.argv, process.env);
  const name = process.env.MMLAB_INSTANCE ?? 'dev0';
  runService(
    async (onShutdown) => {
      const env = loadEnv();
      const log = new Logger(name);
      const store = new Store(env.REDIS_URL);
      const nc = await connectNats(env.NATS_URL, name);
      const tracer = new Tracer(nc, 'dev', name);
      const host = new DeviceHost(
        {
          name,
          store,
          tracer,
          ids: new OpIds(name),
          leaseMs: env.MMLAB_SUBSCRIBER_LEASE_MS,
          seed: env.MMLAB_SEED,
          log: { warn: (m) => log.warn(m) },
          spanPrefix: 'dev_mmu_notifier_',
          rpc: new RpcClient(nc, env.MMLAB_FAULT_DEADLINE_MS + env.MMLAB_RPC_TIMEOUT_MS),
          faultTimeoutMs: env.MMLAB_NPF_TIMEOUT_MS,
        },
        device,
      );
      await host.start();
      let server: MmlabServerNats | undefined;
      const app = await startMicroservice(DeviceModule.register(host, tracer), {
        natsUrl: env.NATS_URL,
        name,
        onServer: (s) => (server = s),
      });
      log.log(`${name} up: ${device.constructor.name}, callbacks ${host.callbacks.join(' ')}`);
      onShutdown(() => server?.stopTaking(isCallbackSubjectOf(name)));
      onShutdown(async () => {
        await host.detachAll();
        await host.notifier.quiesce(SHUTDOWN_QUIESCE_MS);
      });
      onShutdown(() => app.close());
      onShutdown(() => host.notifier.drop());
      onShutdown(() => tracer.close());
      onShutdown(() => nc.drain());
      onShutdown(() => store.quit());
    },
    { service: 'dev', instance: name, telemetry: false },
  );
}
