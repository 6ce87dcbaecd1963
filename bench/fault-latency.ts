/**
 * Fault-path latency and throughput against its own baseline, measured in the same run:
 *   baseline = p50 of one raw NATS request-reply (through the same nats-server)
 *            + p50 of one Redis script call (EVALSHA, on the same redis-server)
 *   fault    = p50 of an mmlab.mm.fault request for a fresh page (read: zero page; write: new frame)
 * and faults per second with 16 callers through two mm replicas. Then, in a second lab (4 CPU
 * agents, 2 mm replicas, the observer on), CPU-driven faults: stores to fresh pages sent to
 * the CPUs (mmlab.cpu.<id>.access → TLB miss → mmlab.mm.fault → install → fill → store):
 *   natsMsgsPerCpuFault   every NATS message the server carried (a `>` subscription counts
 *                         them: requests, replies, trace messages), per fault, with one caller
 *                         at a time and with 16 concurrent callers
 *   cpuFaultsPerSecond    faults/s with 16 concurrent callers over the 4 CPUs (no counter)
 * Prints JSON.
 *
 *   npm run build && node dist/bench/fault-latency.js [--faults 2000] [--cpu-faults 4000]
 */
import { performance } from 'node:perf_hooks';
import { PAGE_SIZE } from '@mmlab/protocol';
import { Store } from '@mmlab/model';
import { RpcClient, connectNats, sleep } from '@mmlab/runtime';
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

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return (i >= 0 && Number(process.argv[i + 1])) || dflt;
};

/** Write faults driven through CPU agents: NATS messages per fault, and faults/s. */
async function cpuFaults(n: number): Promise<Record<string, number>> {
  const cpus = 4;
  const lab = await LocalLab.start({
    mode: 'patched',
    frames: n + 2400,
    cpus,
    mmReplicas: 2,
    observer: true,
  });
  const nc = await connectNats(lab.natsUrl, 'bench-cpu');
  const counter = await connectNats(lab.natsUrl, 'bench-count');
  const rpc = new RpcClient(nc, 30_000);
  try {
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: n + 2300, prot: 'rw' });
    let page = 0;
    const store = (i: number) =>
      rpc.call(
        'cpuAccess',
        { pid, addr: addr + page++ * PAGE_SIZE, op: 'write', value: i + 1 },
        { id: i % cpus },
      );
    /** count faults through `callers` concurrent callers */
    const run = async (count: number, callers: number): Promise<number> => {
      let next = 0;
      let faults = 0;
      await Promise.all(
        Array.from({ length: callers }, async () => {
          for (let i = next++; i < count; i = next++) {
            const r = await store(i);
            faults += r.faults;
          }
        }),
      );
      return faults;
    };
    await run(200, 4); // warm-up
    // Messages: everything the server routes, counted on a connection of its own.
    let msgs = 0;
    counter.subscribe('>', { callback: () => msgs++ });
    await counter.flush();
    const counted = async (count: number, callers: number) => {
      const before = msgs;
      const faults = await run(count, callers);
      await sleep(200); // the last trace batches (1 ms timers)
      await counter.flush();
      return (msgs - before) / faults;
    };
    const perFault1 = await counted(Math.min(n, 1000), 1);
    const perFault16 = await counted(Math.min(n, 1000), 16);
    await counter.close();
    // Throughput, without the counter.
    const t0 = performance.now();
    const faults = await run(n, 16);
    const secs = (performance.now() - t0) / 1000;
    return {
      cpuFaults: faults,
      natsMsgsPerCpuFault1Caller: perFault1,
      natsMsgsPerCpuFault16Callers: perFault16,
      cpuFaultsPerSecond16Callers: faults / secs,
    };
  } finally {
    await nc.close();
    if (!counter.isClosed()) await counter.close();
    await lab.stop();
  }
}

async function main(): Promise<void> {
  const n = arg('--faults', 2000);
  const cpuN = arg('--cpu-faults', 4000);
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
  let r: Record<string, number>;
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
    r = {
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
  } finally {
    await nc.close();
    await store.quit();
    await lab.stop();
  }
  Object.assign(r, await cpuFaults(cpuN));
  console.log(
    JSON.stringify(
      r,
      (_k, v: unknown) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v),
      2,
    ),
  );
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
