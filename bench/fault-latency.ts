/**
 * Fault-path latency and throughput against its own baseline, measured in the same run:
 *   baseline = p50 of one raw NATS request-reply (through the same nats-server)
 *            + p50 of one Redis script call (EVALSHA, on the same redis-server)
 *   fault    = p50 of an mmlab.mm.fault request for a fresh page (read: zero page; write: new frame)
 * and faults per second with 16 callers through two mm replicas. Prints JSON.
 *
 *   npm run build && node dist/bench/fault-latency.js [--faults 2000]
 */
import { performance } from 'node:perf_hooks';
import { PAGE_SIZE } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats } from '@mmlab/runtime';
import { LocalLab } from '@mmlab/runner';

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    out.push(performance.now() - t);
  }
  return out;
}

async function main(): Promise<void> {
  const n = Number(process.argv[process.argv.indexOf('--faults') + 1]) || 2000;
  const lab = await LocalLab.start({
    mode: 'patched',
    frames: 4 * n + 64,
    cpus: 1,
    mmReplicas: 2,
    observer: false,
  });
  const nc = await connectNats(lab.natsUrl, 'bench');
  const rpc = new RpcClient(nc);
  const store = new Store(lab.redisUrl);
  try {
    // Baseline: an echo responder on its own connection, and a one-key script.
    const echo = await connectNats(lab.natsUrl, 'bench-echo');
    echo.subscribe('bench.echo', { callback: (_e, m) => m.respond(m.data) });
    await echo.flush();
    const { pid } = await rpc.call('processCreate', {});
    await timed(200, () => nc.request('bench.echo', 'x')); // warm-up
    const natsRtt = await timed(n, () =>
      nc.request('bench.echo', '{"id":"1","pattern":"bench.echo","data":{}}'),
    );
    await timed(200, () => store.walk(pid, 1, 'bench'));
    const redisScript = await timed(n, (i) => store.walk(pid, i, 'bench'));
    await echo.close();

    const { addr } = await rpc.call('mmap', { pid, pages: 3 * n + 200, prot: 'rw' });
    await timed(100, (i) =>
      rpc.call('fault', { pid, addr: addr + i * PAGE_SIZE, access: 'read', agent: 'bench' }),
    );
    const readFaults = await timed(n, (i) =>
      rpc.call('fault', {
        pid,
        addr: addr + (100 + i) * PAGE_SIZE,
        access: 'read',
        agent: 'bench',
      }),
    );
    const writeFaults = await timed(n, (i) =>
      rpc.call('fault', {
        pid,
        addr: addr + (100 + n + i) * PAGE_SIZE,
        access: 'write',
        agent: 'bench',
      }),
    );
    // Throughput: 16 concurrent callers, write faults on fresh pages.
    const base = 100 + 2 * n;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < n; i = next++)
          await rpc.call('fault', {
            pid,
            addr: addr + (base + i) * PAGE_SIZE,
            access: 'write',
            agent: 'bench',
          });
      }),
    );
    const secs = (performance.now() - t0) / 1000;
    const baseline = pct(natsRtt, 50) + pct(redisScript, 50);
    const r = {
      faults: n,
      natsRttP50Ms: pct(natsRtt, 50),
      redisScriptP50Ms: pct(redisScript, 50),
      baselineP50Ms: baseline,
      readFaultP50Ms: pct(readFaults, 50),
      readFaultP99Ms: pct(readFaults, 99),
      writeFaultP50Ms: pct(writeFaults, 50),
      writeFaultP99Ms: pct(writeFaults, 99),
      readFaultOverBaseline: pct(readFaults, 50) / baseline,
      writeFaultOverBaseline: pct(writeFaults, 50) / baseline,
      faultsPerSecond16Callers: n / secs,
    };
    console.log(
      JSON.stringify(
        r,
        (_k, v: unknown) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v),
        2,
      ),
    );
  } finally {
    await nc.close();
    await store.quit();
    await lab.stop();
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
