/**
 * fault-floor: a write fault on an untouched page taken through a CPU agent (cpuAccess store:
 * TLB miss, page walk, fault to mm, retry, the store), against the floor measured in the same
 * run: one raw NATS request-reply (an echo responder on the same nats-server) plus one Redis
 * script call (EVALSHA of the page walk, on the same redis-server). The three are measured in
 * interleaved rounds (A/B/C/A/B/C...), so load that comes and goes hits them alike. A direct
 * fault (bench → mm, no CPU agent) is measured beside them for reference, and the cost of a
 * CPU-driven fault in Redis commands and NATS messages is counted in a phase of its own — all
 * clients together (INFO commandstats), and the mm replicas' own calls per fault kind (Redis
 * MONITOR: a write fault on an untouched page, a read fault of the zero page, a direct write
 * fault), which the per-replica batch of frames brings to one script each.
 *
 * Models the path of a user-mode store to an untouched anonymous page: the MMU's walk misses,
 * handle_mm_fault() → do_anonymous_page(), then the store retries through the new PTE.
 */
import { PAGE_SIZE } from '@mmlab/protocol';
import { RedisMonitor, startTestLab } from '@mmlab/testing';
import {
  type BenchResult,
  type Benchmark,
  NatsCounter,
  pct,
  redisCommandStats,
  round,
  timed,
  withLab,
} from '../lib/harness';
import { barPlot } from '../lib/plot';

const TARGET = 2.5;

export const faultFloor: Benchmark = {
  name: 'fault-floor',
  measures: 'fault p50/p99 through a CPU agent vs raw NATS request-reply + one EVALSHA',
  target: `p50 ≤ ${TARGET}× the floor`,
  async run(opts): Promise<BenchResult> {
    const { quick, log } = opts;
    const rounds = quick ? 2 : 20;
    const perRound = quick ? 10 : 100;
    const countN = quick ? 10 : 200;
    const n = rounds * perRound;
    const frames = 2 * n + 2 * countN + 256;
    const own = () =>
      startTestLab(
        { mode: 'patched', frames, cpus: 1, mmReplicas: 2, observer: true },
        { trace: false },
      );
    const need = { mode: 'patched' as const, frames, cpus: 1, mmReplicas: 2, observer: true };
    return withLab(opts, need, own, async ({ rpc, nc, store, lab }) => {
      const echo = nc.subscribe('bench.echo', { callback: (_e, m) => m.respond(m.data) });
      await nc.flush();
      const { pid } = await rpc.call('processCreate', {});
      const { addr } = await rpc.call('mmap', {
        pid,
        pages: 2 * n + 2 * countN + 200,
        prot: 'rw',
      });
      const payload = '{"id":"1","pattern":"bench.echo","data":{}}';
      let page = 0;
      const cpuStore = () =>
        rpc.call(
          'cpuAccess',
          { pid, addr: addr + page++ * PAGE_SIZE, op: 'write', value: 1 },
          { id: 0 },
        );
      const cpuLoad = () =>
        rpc.call('cpuAccess', { pid, addr: addr + page++ * PAGE_SIZE, op: 'read' }, { id: 0 });
      const mmFault = () =>
        rpc.call('fault', {
          pid,
          addr: addr + page++ * PAGE_SIZE,
          access: 'write',
          agent: 'bench',
        });
      // warm-up: JIT, connections, script cache
      const warm = quick ? 5 : 50;
      await timed(warm, () => nc.request('bench.echo', payload));
      await timed(warm, (i) => store.walk(pid, i, 'bench'));
      await timed(warm, cpuStore);
      const nats: number[] = [];
      const script: number[] = [];
      const cpu: number[] = [];
      const direct: number[] = [];
      const scripts0 = store.scriptCalls.get('walk') ?? 0;
      for (let r = 0; r < rounds; r++) {
        nats.push(...(await timed(perRound, () => nc.request('bench.echo', payload))));
        script.push(...(await timed(perRound, (i) => store.walk(pid, i, 'bench'))));
        cpu.push(...(await timed(perRound / 2, cpuStore)));
        direct.push(...(await timed(perRound / 2, mmFault)));
        log?.(`fault-floor: round ${r + 1}/${rounds}`);
      }
      const walkCalls = (store.scriptCalls.get('walk') ?? 0) - scripts0;
      echo.unsubscribe();

      // Costs of one CPU-driven fault of each kind, counted apart from the timing.
      const cost = async (access: () => Promise<unknown>) => {
        const counter = new NatsCounter(nc);
        await counter.start();
        const r0 = await redisCommandStats(store.redis);
        await timed(countN, access);
        const r1 = await redisCommandStats(store.redis);
        const msgs = await counter.stop();
        return {
          nats: msgs.total / countN,
          trace: msgs.trace / countN,
          rpc: (msgs.request + msgs.reply) / countN,
          redis: (r1.calls - r0.calls) / countN,
          scripts: (r1.scripts - r0.scripts) / countN,
        };
      };
      const w = await cost(cpuStore);
      const rd = await cost(cpuLoad);
      // The mm replicas' own Redis calls per fault of each kind (MONITOR: counted, not timed).
      const mon = await RedisMonitor.start(lab.redisUrl);
      const mmCost = async (access: () => Promise<unknown>) => {
        const calls = await mon.mmCalls(() => timed(countN, access));
        const by: Record<string, number> = {};
        for (const c of calls) by[c] = round((by[c] ?? 0) + 1 / countN, 3);
        return { perFault: round(calls.length / countN, 3), by };
      };
      const mmW = await mmCost(cpuStore);
      const mmR = await mmCost(cpuLoad);
      const mmD = await mmCost(mmFault);
      mon.stop();
      log?.(
        `fault-floor: Redis calls from mm per fault: write ${mmW.perFault}, read ${mmR.perFault}, direct write ${mmD.perFault}`,
      );

      const floor = pct(nats, 50) + pct(script, 50);
      const ratio = pct(cpu, 50) / floor;
      const rows = [
        {
          path: 'NATS request-reply',
          samples: nats.length,
          p50Ms: pct(nats, 50),
          p99Ms: pct(nats, 99),
        },
        {
          path: 'EVALSHA (walk)',
          samples: script.length,
          p50Ms: pct(script, 50),
          p99Ms: pct(script, 99),
        },
        { path: 'floor (sum of p50s)', samples: null, p50Ms: floor, p99Ms: null },
        {
          path: 'fault via mm (direct)',
          samples: direct.length,
          p50Ms: pct(direct, 50),
          p99Ms: pct(direct, 99),
        },
        {
          path: 'fault via CPU agent',
          samples: cpu.length,
          p50Ms: pct(cpu, 50),
          p99Ms: pct(cpu, 99),
        },
      ].map((r) => ({
        ...r,
        p50Ms: round(r.p50Ms),
        p99Ms: r.p99Ms === null ? null : round(r.p99Ms),
        overFloorP50: round(r.p50Ms / floor, 2),
      }));
      return {
        name: this.name,
        measures: this.measures,
        quick,
        figure: {
          value: round(ratio, 2),
          unit: '× floor',
          text: `p50 ${round(ratio, 2)}× floor (${round(pct(cpu, 50), 2)} / ${round(floor, 2)} ms; p99 ${round(pct(cpu, 99) / floor, 1)}×)`,
        },
        target: { text: this.target, met: ratio <= TARGET },
        rows,
        counts: {
          writeFaultNatsMsgs: w.nats,
          writeFaultTraceMsgs: w.trace,
          writeFaultRpcMsgs: w.rpc,
          writeFaultRedisCalls: w.redis,
          writeFaultRedisScripts: w.scripts,
          readFaultNatsMsgs: rd.nats,
          readFaultTraceMsgs: rd.trace,
          readFaultRedisCalls: rd.redis,
          readFaultRedisScripts: rd.scripts,
          writeFaultMmRedisCalls: mmW.perFault,
          readFaultMmRedisCalls: mmR.perFault,
          directWriteFaultMmRedisCalls: mmD.perFault,
          baselineScriptCallsPerWalk: walkCalls / script.length,
        },
        notes: [
          'Redis calls are INFO commandstats deltas: every client, lease renewals included.',
          'NATS messages are what a `>` subscriber is delivered: requests, replies, trace events.',
          `Redis calls from mm (MONITOR, its replicas' connections, timers left out) per fault: write ${JSON.stringify(mmW.by)}, read ${JSON.stringify(mmR.by)}, direct write ${JSON.stringify(mmD.by)}.`,
        ],
        plot: barPlot({
          title: 'fault-floor: p50 and p99 per path (ms)',
          rows: rows.flatMap((r) => [
            { path: r.path, stat: 'p50', ms: r.p50Ms },
            ...(r.p99Ms === null ? [] : [{ path: r.path, stat: 'p99', ms: r.p99Ms }]),
          ]),
          x: 'path',
          y: 'ms',
          series: 'stat',
          yTitle: 'ms',
        }),
      };
    });
  },
};
