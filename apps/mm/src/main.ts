/** The mm service: one replica of the kernel's memory-management code. */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { Store } from '@mmlab/model';
import {
  RpcClient,
  hostInstance,
  Tracer,
  connectNats,
  loadEnv,
  runService,
  startMicroservice,
} from '@mmlab/runtime';
import { createContext } from './kernel/context';
import { MmModule } from './mm.module';

runService(async (onShutdown) => {
  const env = loadEnv();
  const instance = env.MMLAB_INSTANCE ?? hostInstance('mm');
  const store = new Store(env.REDIS_URL);
  // The first replica to start formats physical memory; the others find it formatted.
  const frames = await store.memFormat(env.MMLAB_FRAMES);
  const nc = await connectNats(env.NATS_URL, instance);
  const ctx = createContext({
    env,
    instance,
    store,
    tracer: new Tracer(nc, 'mm', instance),
    rpc: new RpcClient(nc, env.MMLAB_RPC_TIMEOUT_MS),
  });
  const app = await startMicroservice(
    MmModule.register(ctx),
    { natsUrl: env.NATS_URL, name: instance },
    {
      port: env.MMLAB_HTTP_PORT,
      tracer: ctx.tracer,
      nats: nc,
      redis: store.redis,
      extraMetrics: (m) => m.trackMemory(() => store.memInfo()),
    },
  );
  new Logger('mm').log(`${instance} up: ${frames} frames, mode ${env.MMLAB_MODE}`);
  onShutdown(() => app.close());
  onShutdown(() => nc.drain());
  onShutdown(() => store.quit());
});
