/**
 * `npm run bench:profile [-- SECONDS]`: where the CPU time of a CPU-driven write fault goes.
 *
 * Starts a lab (patched, 4 CPU agents, 2 mm replicas, observer on: fault-throughput's target
 * point) whose every service runs under V8's sampling profiler (--cpu-prof through LocalLab's
 * nodeArgs), drives one stream of stores to fresh pages per
 * CPU for the window, stops the lab cleanly (each process writes its .cpuprofile on exit) and
 * sums every profile's self time by where the code lives: the NATS client, ioredis, Nest and
 * rxjs, zod, OpenTelemetry, node's own internals (sockets, timers), GC, and mmlab's libs and
 * apps. Printed per service kind as CPU milliseconds per fault, with the top functions; the
 * JSON goes to bench/results/profile.json. docs/performance.md reads these figures.
 *
 * Only the samples taken during the drive window count (V8 stamps them on the monotonic clock
 * process.hrtime reads): start-up (module loading) and shutdown are left out. Busy time is
 * everything but (idle); per fault it is busy time over the window's faults.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PAGE_SIZE } from '@mmlab/protocol';
import { startTestLab } from '@mmlab/testing';
import { round } from './lib/harness';

interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }>;
  samples: number[];
  timeDeltas: number[];
  /** µs, on the monotonic clock process.hrtime reads */
  startTime: number;
}

/** The monotonic clock of V8's profile timestamps, in µs. */
const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** Where a sampled frame's code lives. */
export function categoryOf(functionName: string, url: string): string {
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(program)') return 'V8/native (program)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
  if (nm) {
    if (nm === 'nats' || nm.startsWith('@nats-io')) return 'NATS client';
    if (nm === 'ioredis' || nm === 'redis-parser' || nm === '@ioredis/commands') return 'ioredis';
    if (nm.startsWith('@nestjs') || nm === 'rxjs' || nm === 'reflect-metadata')
      return 'Nest + rxjs';
    if (nm === 'zod') return 'zod';
    if (nm.startsWith('@opentelemetry')) return 'OpenTelemetry';
    return 'other libraries';
  }
  const own = /dist\/(libs|apps)\/([^/]+)\//.exec(url);
  if (own) return `mmlab ${own[1] === 'libs' ? 'lib' : 'app'} ${own[2]}`;
  if (url.startsWith('node:') || url === '') return 'node internals + builtins';
  return 'other';
}

interface Summary {
  instance: string;
  totalMs: number;
  busyMs: number;
  byCategory: Record<string, number>;
  top: Array<{ fn: string; ms: number }>;
}

/** Self time per category of the samples taken in [fromUs, toUs] (the drive window only). */
export function summarize(instance: string, p: CpuProfile, fromUs: number, toUs: number): Summary {
  const byNode = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const d = p.timeDeltas[i] ?? 0;
    t += d;
    if (t < fromUs || t > toUs) continue;
    byNode.set(p.samples[i], (byNode.get(p.samples[i]) ?? 0) + d / 1000);
  }
  const byCategory: Record<string, number> = {};
  const byFn = new Map<string, number>();
  let totalMs = 0;
  for (const n of p.nodes) {
    const ms = byNode.get(n.id) ?? 0;
    if (ms === 0) continue;
    totalMs += ms;
    const c = categoryOf(n.callFrame.functionName, n.callFrame.url);
    byCategory[c] = (byCategory[c] ?? 0) + ms;
    if (c !== 'idle') {
      const where = n.callFrame.url.replace(/^.*\/(node_modules|dist)\//, '');
      const fn = `${n.callFrame.functionName || '(anonymous)'} ${where}:${n.callFrame.lineNumber + 1}`;
      byFn.set(fn, (byFn.get(fn) ?? 0) + ms);
    }
  }
  const top = [...byFn.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12)
    .map(([fn, ms]) => ({ fn, ms: round(ms, 1) }));
  return { instance, totalMs, busyMs: totalMs - (byCategory.idle ?? 0), byCategory, top };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 10);
  const cpus = 4;
  const profDir = mkdtempSync(path.join(tmpdir(), 'mmlab-prof-'));
  const pagesPerStream = 20_000;
  const env = await startTestLab(
    { mode: 'patched', frames: cpus * pagesPerStream + 1024, cpus, mmReplicas: 2, observer: true },
    { trace: false, rpcTimeoutMs: 30_000, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] },
  );
  const pids = new Map<number, string>();
  for (const i of env.lab.instances) {
    const pid = env.lab.proc(i).pid;
    if (pid) pids.set(pid, i);
  }
  let faults = 0;
  let fromUs = 0;
  let toUs = 0;
  try {
    const { rpc } = env;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: cpus * pagesPerStream, prot: 'rw' });
    fromUs = monoUs();
    const end = performance.now() + seconds * 1000;
    await Promise.all(
      Array.from({ length: cpus }, async (_x, s) => {
        for (let i = 0; i < pagesPerStream && performance.now() < end; i++) {
          const a = addr + (s * pagesPerStream + i) * PAGE_SIZE;
          await rpc.call('cpuAccess', { pid, addr: a, op: 'write', value: 1 }, { id: s });
          faults++;
        }
      }),
    );
    toUs = monoUs();
    await rpc.call('munmap', { pid, addr, pages: cpus * pagesPerStream });
  } finally {
    await env.stop();
  }
  const summaries: Summary[] = [];
  for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
    const pid = Number(/\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(f)?.[1]);
    const instance = pids.get(pid) ?? `pid ${pid}`;
    const profile = JSON.parse(readFileSync(path.join(profDir, f), 'utf8')) as CpuProfile;
    summaries.push(summarize(instance, profile, fromUs, toUs));
  }
  rmSync(profDir, { recursive: true, force: true });
  // per service kind (mm-0 + mm-1 → mm), per fault
  const kindOf = (i: string) => i.replace(/-?\d+$/, '');
  const kinds = new Map<string, Summary[]>();
  for (const s of summaries)
    kinds.set(kindOf(s.instance), [...(kinds.get(kindOf(s.instance)) ?? []), s]);
  const out: Record<string, unknown> = { seconds, cpus, mmReplicas: 2, faults, kinds: {} };
  console.log(
    `${faults} CPU-driven write faults in ${seconds} s (${round(faults / seconds, 0)}/s)\n`,
  );
  let allBusy = 0;
  for (const [kind, ss] of [...kinds.entries()].sort()) {
    const busy = ss.reduce((a, s) => a + s.busyMs, 0);
    allBusy += busy;
    const cat: Record<string, number> = {};
    for (const s of ss)
      for (const [c, ms] of Object.entries(s.byCategory))
        if (c !== 'idle') cat[c] = (cat[c] ?? 0) + ms;
    const rows = Object.entries(cat)
      .sort((a, b) => b[1] - a[1])
      .map(([c, ms]) => ({
        category: c,
        msPerFault: round(ms / Math.max(1, faults), 3),
        share: round(ms / busy, 3),
      }));
    (out.kinds as Record<string, unknown>)[kind] = {
      instances: ss.map((s) => s.instance),
      busyMsPerFault: round(busy / Math.max(1, faults), 3),
      categories: rows,
      top: ss
        .flatMap((s) => s.top)
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 10),
    };
    console.log(
      `${kind} (${ss.map((s) => s.instance).join(', ')}): ${round(busy / Math.max(1, faults), 3)} ms CPU per fault`,
    );
    for (const r of rows.slice(0, 8))
      console.log(
        `  ${(r.share * 100).toFixed(1).padStart(5)}%  ${r.msPerFault.toFixed(3)} ms  ${r.category}`,
      );
  }
  out.busyMsPerFault = round(allBusy / Math.max(1, faults), 3);
  console.log(`\nall services: ${round(allBusy / Math.max(1, faults), 3)} ms CPU per fault`);
  const dir = path.join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'profile.json'), JSON.stringify(out, null, 2) + '\n');
}

if (require.main === module)
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
