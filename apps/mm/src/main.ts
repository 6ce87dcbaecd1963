/** The mm service: one replica of the kernel's memory-management code. */
import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { KERNEL_OF_MODE } from '@mmlab/protocol';
import { LivenessLease, Store } from '@mmlab/model';
import {
  RpcClient,
  hostInstance,
  Tracer,
  connectNats,
  loadEnv,
  runService,
  sleep,
  startMicroservice,
} from '@mmlab/runtime';
import { type MmContext, createContext, newIncarnation } from './kernel/context';
import { OrphanRangeReaper } from './kernel/orphan_ranges';
import { hugetlbReservePool } from './kernel/hugetlb';
import { MmModule } from './mm.module';

/**
 * How long a clean stop waits for the invalidations in flight once the requests in flight
 * were answered or refused (SHUTDOWN_GRACE_MS, 1.5 s): a restart SIGKILLs at 3 s.
 */
const SHUTDOWN_QUIESCE_MS = 1000;

/** Until no invalidation of this process has been open for 100 ms, or timeoutMs. */
async function quiesce(ctx: MmContext, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let quietSince = Date.now();
  while (Date.now() < deadline) {
    if (ctx.openRanges.size > 0) quietSince = Date.now();
    else if (Date.now() - quietSince >= 100) return;
    await sleep(10);
  }
}

runService(async (onShutdown) => {
  const env = loadEnv();
  const instance = env.MMLAB_INSTANCE ?? hostInstance('mm');
  // Named after the replica (CLIENT LIST): what a count of its Redis calls tells apart.
  const store = new Store(env.REDIS_URL, { connectionName: instance });
  // The first replica to start formats physical memory; the others find it formatted.
  const frames = await store.memFormat(env.MMLAB_FRAMES, env.MMLAB_SWAP_SLOTS);
  const nc = await connectNats(env.NATS_URL, instance);
  const ctx = createContext({
    env,
    instance,
    store,
    tracer: new Tracer(nc, 'mm', instance),
    rpc: new RpcClient(nc, env.MMLAB_RPC_TIMEOUT_MS),
  });
  // hugetlb_hstate_alloc_pages(): the hugetlbfs pool (hugetlbPages huge pages of
  // 2^hugePageOrder frames) is reserved as memory is formatted, before anything is allocated
  const hugePages = await hugetlbReservePool(ctx);
  const log = new Logger('mm');
  // This incarnation's liveness lease, taken before it serves anything (so every invalidation
  // it starts has an owner that is alive) and renewed on its own timer; the reaper finishes
  // the invalidations of incarnations whose lease expired (kernel/orphan_ranges.ts). It lives
  // 3/4 of the lease TTL, so that the caller of an operation this replica dies in is answered
  // within one TTL of the death (orphan_ranges.ts).
  const livenessTtl = Math.max(1, Math.floor((env.MMLAB_LEASE_TTL_MS * 3) / 4));
  const livenessOf = (incarnation: string) =>
    new LivenessLease(
      {
        subscriberAlive: (name, ttlMs) => store.mmAlive(name, ttlMs),
        unfence: async () => undefined, // an mm is never fenced: its writes are (PT-lock tokens)
        isFenced: async () => false,
      },
      incarnation,
      livenessTtl,
      log,
    );
  let liveness = livenessOf(ctx.incarnation);
  await liveness.start();
  // Found dead and fenced off an address space (it was stopped past its lease): serve on as a
  // new incarnation. What the old one still runs is fenced wherever it was taken over.
  let reincarnating = false;
  ctx.onFenced = () => {
    if (reincarnating || ctx.closing) return;
    reincarnating = true;
    const was = ctx.incarnation;
    const next = newIncarnation(instance);
    const lease = livenessOf(next);
    void lease
      .start()
      .then(() => {
        liveness.stop();
        liveness = lease;
        ctx.incarnation = next;
        log.warn(`${was} was taken for dead and fenced: ${next} serves from now on`);
      })
      .catch((e: unknown) => log.warn(`${was}: no new incarnation: ${String(e)}`))
      .finally(() => (reincarnating = false));
  };
  const reaper = new OrphanRangeReaper(ctx, log);
  reaper.start();
  const app = await startMicroservice(
    MmModule.register(ctx),
    { natsUrl: env.NATS_URL, name: instance, fast: MmModule.fast(ctx) },
    {
      port: env.MMLAB_HTTP_PORT,
      host: env.MMLAB_HTTP_HOST,
      tracer: ctx.tracer,
      nats: nc,
      redis: store.redis,
      extraMetrics: (m) =>
        m.trackMemory(async () => {
          const [mem, swap] = await Promise.all([store.memInfo(), store.swapInfo()]);
          return { free: mem.free, swapUsed: swap.slots - swap.free };
        }),
    },
  );
  log.log(
    `${ctx.incarnation} up: ${frames} frames (${hugePages} huge pages), kernel ${KERNEL_OF_MODE[env.MMLAB_MODE]} (mode ${env.MMLAB_MODE})`,
  );
  // A clean stop (SIGTERM): no new requests (the other replicas of the queue group take them);
  // those in flight are answered, or refused with ESHUTDOWN past SHUTDOWN_GRACE_MS
  // (MmlabServerNats.close), never left to their caller's timeout.
  onShutdown(() => app.close());
  onShutdown(async () => {
    // A clean stop (a restart): let the invalidations in flight send their ends while NATS is
    // still up, then refuse new ones; what is still open after that is finished by the other
    // replicas once the lease is dropped.
    await quiesce(ctx, SHUTDOWN_QUIESCE_MS);
    ctx.closing = true;
    // drain_local_pages(): the batch goes back (one call), its installs reported.
    await ctx.pcp.drain(ctx).catch((e: unknown) => log.warn(`batch not given back: ${String(e)}`));
    await reaper.stop();
    liveness.stop();
    await store.mmLivenessDrop(ctx.incarnation);
  });
  onShutdown(() => ctx.tracer.close()); // its last batch goes out before the drain
  onShutdown(() => nc.drain());
  onShutdown(() => store.quit());
});
