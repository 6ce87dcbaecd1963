/** The hca service: one RDMA HCA with on-demand paging per process (MMLAB_INSTANCE, default hca0). */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { Store } from '@mmlab/model';
import {
  type MmlabServerNats,
  RpcClient,
  Tracer,
  connectNats,
  loadEnv,
  runService,
  startMicroservice,
} from '@mmlab/runtime';
import { isCallbackSubjectOf } from '@mmlab/subscriber';
import { createContext } from './context';
import { Hca } from './hca';
import { HcaModule } from './hca.module';

/** A clean stop gives its teardown (unregistrations, the ends of the invalidations it acked) this long. */
const SHUTDOWN_QUIESCE_MS = 1500;

runService(async (onShutdown) => {
  const env = loadEnv();
  const name = env.MMLAB_INSTANCE ?? 'hca0';
  const log = new Logger(name);
  const store = new Store(env.REDIS_URL);
  const nc = await connectNats(env.NATS_URL, name);
  const tracer = new Tracer(nc, 'hca', name);
  const hca = new Hca(
    createContext({
      name,
      store,
      // gup may fault many pages in, each up to the fault deadline.
      rpc: new RpcClient(nc, env.MMLAB_FAULT_DEADLINE_MS + env.MMLAB_RPC_TIMEOUT_MS),
      tracer,
      env,
      log: { warn: (m) => log.warn(m) },
    }),
  );
  // A restarted device is a new device: lease first, fence lifted, then serve.
  await hca.start();
  let server: MmlabServerNats | undefined;
  const app = await startMicroservice(
    HcaModule.register(hca, tracer),
    { natsUrl: env.NATS_URL, name, onServer: (s) => (server = s) },
    { port: env.MMLAB_HTTP_PORT, host: env.MMLAB_HTTP_HOST, tracer, nats: nc, redis: store.redis },
  );
  log.log(
    `${name} up: invalidation latency ${env.MMLAB_INVALIDATE_LATENCY} ms, ` +
      `npf timeout ${env.MMLAB_NPF_TIMEOUT_MS} ms` +
      (hca.ctx.skipSeqRecheck ? ', inject skip-seq-recheck' : ''),
  );
  // A clean stop (SIGTERM): (1) no new requests from clients, those in flight answered (the
  // callbacks from mm still taken); (2) every MR torn down, unregistering everywhere (mm's
  // release is answered here), and the ends of the invalidations acked here awaited; (3) the
  // callbacks drained too; (4) the liveness lease dropped. Nothing is left for mm to fence.
  onShutdown(() => server?.stopTaking(isCallbackSubjectOf(name)));
  onShutdown(async () => {
    const t = await hca.teardown(SHUTDOWN_QUIESCE_MS);
    log.log(
      `shutdown: ${t.mrs} MRs torn down` +
        (t.failed > 0 ? `, ${t.failed} failed` : '') +
        (t.quiet ? '' : ', invalidations still open'),
    );
  });
  onShutdown(() => app.close());
  onShutdown(() => hca.drop());
  onShutdown(() => tracer.close()); // its last batch goes out before the drain
  onShutdown(() => nc.drain());
  onShutdown(() => store.quit());
});
