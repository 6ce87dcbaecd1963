/** The cpu service: one CPU agent per process (MMLAB_CPU_ID). */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { Store } from '@mmlab/model';
import {
  RpcClient,
  Tracer,
  connectNats,
  loadEnv,
  runService,
  startMicroservice,
} from '@mmlab/runtime';
import { Cpu } from './cpu';
import { CpuModule, cpuFastHandlers } from './cpu.module';

runService(async (onShutdown) => {
  const env = loadEnv();
  const store = new Store(env.REDIS_URL);
  // A CPU id from the environment (the native runner), or the next free one (replicas).
  const id = env.MMLAB_CPU_ID ?? (await store.claimCpuId());
  const instance = env.MMLAB_INSTANCE ?? `cpu${id}`;
  const nc = await connectNats(env.NATS_URL, instance);
  const tracer = new Tracer(nc, 'cpu', instance);
  const log = new Logger(instance);
  const cpu = new Cpu(
    id,
    store,
    new RpcClient(nc, env.MMLAB_FAULT_DEADLINE_MS + env.MMLAB_RPC_TIMEOUT_MS),
    tracer,
    // The CPU's liveness lease lives as long as a PT-lock lease (MMLAB_LEASE_TTL_MS).
    env.MMLAB_LEASE_TTL_MS,
    { warn: (m) => log.warn(m) },
  );
  // Online before serving: lease taken, any fence of a previous incarnation lifted.
  await cpu.start();
  const app = await startMicroservice(
    CpuModule.register(tracer),
    { natsUrl: env.NATS_URL, name: instance, fast: cpuFastHandlers(cpu) },
    { port: env.MMLAB_HTTP_PORT, host: env.MMLAB_HTTP_HOST, tracer, nats: nc, redis: store.redis },
  );
  log.log(`${instance} up`);
  onShutdown(() => app.close());
  onShutdown(() => cpu.stop());
  onShutdown(() => tracer.close()); // its last batch goes out before the drain
  onShutdown(() => nc.drain());
  onShutdown(() => store.quit());
});
