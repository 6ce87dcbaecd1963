/**
 * Observer intake under load: does the observer keep up with 20,000 trace events per second
 * for a minute without losing one?
 *
 * Starts a real nats-server and the observer as its own process (node dist/apps/observer),
 * publishes realistic TraceEvents (the shapes of a real odp-munmap trace, ids, times, pids,
 * addresses and frames varied) at a paced rate from several publisher connections, one per
 * pretend service instance (batches every 10 ms tick, then a flush per connection:
 * backpressure), samples the observer's backlog once a second (GET /stats), and at the end
 * waits for observerSync (everything delivered is stored) and reads GET /stats. Prints JSON:
 * sent, stored, rejected, dropped, lost = sent - stored, the achieved rate, the largest
 * backlog seen, how long the final sync took, the observer's CPU and memory, the machine load.
 *
 *   node dist/bench/observer-intake.js [--seconds 60] [--rate 20000] [--publishers 4]
 *                                      [--trace-file PATH] [--max-events N]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import type { NatsConnection } from 'nats';
import { TraceEvent, traceSubject } from '@mmlab/protocol';
import { RpcClient, connectNats, newLabToken, now, sleep } from '@mmlab/runtime';
import { freePort, serviceCommand, startNats, stopProcess } from '@mmlab/runner';

const TICK_MS = 10;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function positiveInt(name: string, fallback: number): number {
  const v = Number(arg(name, String(fallback)));
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a positive integer`);
  return v;
}

/**
 * Shapes copied from a real trace.jsonl (examples/odp-munmap.yaml); id, ts, instance and the
 * varying fields are filled in per event by `makeEvent`.
 */
const TEMPLATES: Record<string, unknown>[] = [
  { service: 'mm', kind: 'fault.begin', pid: 1, addr: 268435456, access: 'write', agent: 'hca0' },
  { service: 'mm', kind: 'frame.alloc', pfn: 1, gen: 1 },
  {
    service: 'mm',
    kind: 'pte.set',
    pid: 1,
    addr: 268435456,
    pfn: 1,
    gen: 1,
    writable: true,
    lock: 'ptl:128',
    token: null,
  },
  {
    service: 'mm',
    kind: 'fault.end',
    pid: 1,
    addr: 268435456,
    access: 'write',
    agent: 'hca0',
    result: 'ok',
    how: 'anon',
    pfn: 1,
    gen: 1,
    durMs: 4.325927734375,
    retries: 0,
  },
  {
    service: 'hca',
    kind: 'smap.set',
    agent: 'hca0',
    pid: 1,
    addr: 268435456,
    pfn: 1,
    gen: 1,
    writable: true,
  },
  {
    service: 'hca',
    kind: 'npf.end',
    agent: 'hca0',
    pid: 1,
    addr: 268435456,
    retries: 0,
    result: 'ok',
    durMs: 10.5263671875,
  },
  {
    service: 'cpu',
    kind: 'tlb.fill',
    agent: 'cpu0',
    pid: 1,
    addr: 268455936,
    pfn: 2,
    gen: 1,
    writable: true,
  },
  {
    service: 'cpu',
    kind: 'access',
    agent: 'cpu0',
    pid: 1,
    addr: 268455936,
    rw: 'read',
    value: 15,
    pfn: 2,
    gen: 1,
    frameGen: 1,
    frameFree: false,
    tStart: 1795561472897.7097,
    tEnd: 1795561472899.5994,
  },
  {
    service: 'mm',
    kind: 'mn.range_start',
    pid: 1,
    start: 268435456,
    end: 268468224,
    event: 'unmap',
    inv: 'mm-1/munmap#2~1',
  },
  {
    service: 'mm',
    kind: 'mn.send',
    pid: 1,
    subscriber: 'hca0',
    callback: 'invalidate_range_start',
    inv: 'mm-1/munmap#2~1',
    attempt: 1,
    ptl: null,
  },
  {
    service: 'hca',
    kind: 'mn.recv',
    agent: 'hca0',
    pid: 1,
    callback: 'invalidate_range_start',
    inv: 'mm-1/munmap#2~1',
    start: 268435456,
    end: 268468224,
  },
  {
    service: 'mm',
    kind: 'mn.ack',
    pid: 1,
    subscriber: 'hca0',
    callback: 'invalidate_range_start',
    inv: 'mm-1/munmap#2~1',
    waitedMs: 207.80712890625,
  },
  {
    service: 'mm',
    kind: 'ptl.acquire',
    pid: 1,
    lock: 'ptl:128',
    owner: 'mm-1/mm-1/munmap#2',
    token: 3,
    waitMs: 0.62841796875,
  },
  {
    service: 'mm',
    kind: 'pte.clear',
    pid: 1,
    addr: 268435456,
    pfn: 1,
    gen: 1,
    lock: 'ptl:128',
    token: 3,
  },
  {
    service: 'cpu',
    kind: 'tlb.flush',
    agent: 'cpu0',
    pid: 1,
    start: 268435456,
    end: 268468224,
    entries: 1,
  },
  {
    service: 'mm',
    kind: 'ptl.release',
    pid: 1,
    lock: 'ptl:128',
    owner: 'mm-1/mm-1/munmap#2',
    token: 3,
    heldMs: 5.4208984375,
    released: true,
  },
  { service: 'mm', kind: 'frame.free', pfn: 1, gen: 1 },
];

/** Which pretend instance publishes a template, per service. */
const INSTANCES: Record<string, string[]> = {
  mm: ['mm-0', 'mm-1'],
  cpu: ['cpu0', 'cpu1'],
  hca: ['hca0'],
};

/** The k-th event of the run: template k mod n, with its fields varied by k. */
function makeEvent(k: number, seqs: Map<string, number>): { subject: string; json: string } {
  const t = TEMPLATES[k % TEMPLATES.length];
  const service = t.service as string;
  const choices = INSTANCES[service];
  const instance = choices[Math.floor(k / TEMPLATES.length) % choices.length];
  const seq = (seqs.get(instance) ?? 0) + 1;
  seqs.set(instance, seq);
  const round = Math.floor(k / TEMPLATES.length);
  const page = round % 4096;
  const e: Record<string, unknown> = {
    ...t,
    id: `${instance}:${seq}`,
    ts: now(),
    instance,
    op: `${instance}/op#${round}`,
  };
  if ('pid' in t) e.pid = 1 + (round % 64);
  if ('addr' in t) e.addr = 0x10000000 + page * 4096;
  if ('pfn' in t) e.pfn = 1 + (round % 65_536);
  if ('gen' in t) e.gen = 1 + Math.floor(round / 65_536);
  if ('inv' in t) e.inv = `${instance}/munmap#${round}~1`;
  if ('token' in t && t.token !== null) e.token = round + 1;
  return { subject: traceSubject(service, instance), json: JSON.stringify(e) };
}

async function getJson(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.json();
}

interface Stats {
  events: number;
  rejected: number;
  dropped: number;
  cap: number;
  lastRejected: string[];
}

/** The observer's CPU seconds (user + system) and resident memory, from /proc. */
function procUsage(pid: number): { cpuS: number; rssMB: number; hwmMB: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    // utime and stime are fields 14 and 15 of stat, in clock ticks (100 a second on Linux).
    return {
      cpuS: (Number(f[11]) + Number(f[12])) / 100,
      rssMB: kb('VmRSS') / 1024,
      hwmMB: kb('VmHWM') / 1024,
    };
  } catch {
    return null;
  }
}

async function startObserver(
  natsUrl: string,
  logFile: string,
  env: Record<string, string>,
): Promise<{ proc: ChildProcess; url: string }> {
  const port = await freePort();
  const proc = spawn(process.execPath, serviceCommand('observer'), {
    env: {
      ...process.env,
      ...env,
      NATS_URL: natsUrl,
      MMLAB_OBSERVER_PORT: String(port),
      MMLAB_INSTANCE: 'observer',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile);
  proc.stdout?.pipe(log);
  proc.stderr?.pipe(log);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null)
      throw new Error(`observer exited with ${proc.exitCode}, see ${logFile}`);
    try {
      await getJson(`${url}/stats`);
      return { proc, url };
    } catch {
      if (Date.now() > deadline) throw new Error(`observer not up after 30 s, see ${logFile}`);
      await sleep(100);
    }
  }
}

async function main(): Promise<void> {
  const seconds = positiveInt('seconds', 60);
  const rate = positiveInt('rate', 20_000);
  const publishers = positiveInt('publishers', 4);
  const traceFile = arg('trace-file', '');
  const maxEvents = arg('max-events', '');

  // Every template must be a valid TraceEvent, or "rejected" would measure the bench.
  const probe = new Map<string, number>();
  for (let k = 0; k < TEMPLATES.length; k++) {
    const r = TraceEvent.safeParse(JSON.parse(makeEvent(k, probe).json));
    if (!r.success) throw new Error(`template ${k} is not a TraceEvent: ${r.error.message}`);
  }

  const dir = mkdtempSync(path.join(tmpdir(), 'mmlab-bench-observer-'));
  const nats = await startNats();
  let observer: ChildProcess | null = null;
  const conns: NatsConnection[] = [];
  try {
    const token = newLabToken();
    const obs = await startObserver(nats.url, path.join(dir, 'observer.log'), {
      MMLAB_LAB_TOKEN: token,
      ...(traceFile ? { MMLAB_TRACE_FILE: traceFile } : {}),
      ...(maxEvents ? { MMLAB_OBSERVER_MAX_EVENTS: maxEvents } : {}),
    });
    observer = obs.proc;
    for (let i = 0; i < publishers; i++) conns.push(await connectNats(nats.url, `bench-pub-${i}`));
    const control = await connectNats(nats.url, 'bench-control');
    conns.push(control);
    const rpc = new RpcClient(control);
    // Start from an empty store and zero counters.
    const reset = await fetch(`${obs.url}/reset`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: '{}',
    });
    if (!reset.ok) throw new Error(`POST /reset: HTTP ${reset.status}`);

    const load0 = loadavg();
    const usage0 = procUsage(observer.pid!);
    const total = rate * seconds;
    const seqs = new Map<string, number>();
    let sent = 0;
    let maxLag = 0;
    let maxLagAt = 0;
    const lagSamples: Array<{ t: number; backlog: number; statsMs: number }> = [];
    let sampling = true;
    const t0 = now();

    // Once a second: the backlog (sent and flushed, not yet stored) as the observer reports it.
    const sampler = (async () => {
      while (sampling) {
        await sleep(1000);
        const flushed = sent;
        const s0 = now();
        try {
          const st = (await getJson(`${obs.url}/stats`)) as Stats;
          const t = (now() - t0) / 1000;
          // Events published after the snapshot may already be stored: a backlog below 0 is 0.
          const backlog = Math.max(0, flushed - st.events);
          lagSamples.push({ t, backlog, statsMs: now() - s0 });
          if (backlog > maxLag) [maxLag, maxLagAt] = [backlog, t];
        } catch {
          /* a missed sample is not a failure of the intake */
        }
      }
    })();

    // Paced publishing: every tick, publish what the schedule says is due (bounded to one
    // second's worth), spread over the publishers, then flush each (wait for the server).
    for (let tick = 1; sent < total; tick++) {
      const due = Math.min(total, Math.floor(((now() - t0) / 1000) * rate));
      const n = Math.min(due - sent, rate);
      for (let i = 0; i < n; i++) {
        const { subject, json } = makeEvent(sent + i, seqs);
        conns[(sent + i) % publishers].publish(subject, json);
      }
      if (n > 0) await Promise.all(conns.slice(0, publishers).map((c) => c.flush()));
      sent += n;
      const wait = t0 + tick * TICK_MS - now();
      if (wait > 0) await sleep(wait);
    }
    const publishS = (now() - t0) / 1000;
    sampling = false;
    await sampler;

    const s0 = now();
    await rpc.call('observerSync', {}, { timeoutMs: 300_000 });
    const syncMs = now() - s0;
    const st = (await getJson(`${obs.url}/stats`)) as Stats;
    const usage1 = procUsage(observer.pid!);
    const load1 = loadavg();
    // The bench's own events only (the observer may trace itself), counted where they are kept.
    let stored = 0;
    for (const instance of Object.values(INSTANCES).flat()) {
      const q = new URLSearchParams({ instance, limit: '0' });
      stored += ((await getJson(`${obs.url}/events?${q.toString()}`)) as { total: number }).total;
    }
    const out = {
      seconds,
      targetRate: rate,
      publishers,
      traceFile: traceFile || null,
      sent,
      publishSeconds: publishS,
      achievedRate: sent / publishS,
      stored,
      rejected: st.rejected,
      dropped: st.dropped,
      lost: sent - stored,
      storeCap: st.cap,
      maxBacklogEvents: maxLag,
      maxBacklogAtS: maxLagAt,
      finalSyncMs: syncMs,
      observer: usage0 &&
        usage1 && {
          cpuPercent: ((usage1.cpuS - usage0.cpuS) / (publishS + syncMs / 1000)) * 100,
          rssMB: usage1.rssMB,
          peakRssMB: usage1.hwmMB,
        },
      machine: { cpus: cpus().length, loadavgBefore: load0, loadavgAfter: load1 },
      lastRejected: st.lastRejected,
      /** per second: events sent and not yet stored, and how long GET /stats took (ms) */
      backlogPerSecond: lagSamples.map((s) => s.backlog).join(' '),
      statsMsPerSecond: lagSamples.map((s) => Math.round(s.statsMs)).join(' '),
      logs: dir,
    };
    console.log(
      JSON.stringify(
        out,
        (_k, v: unknown) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v),
        2,
      ),
    );
    if (out.lost !== 0) process.exitCode = 1;
  } finally {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    if (observer) await stopProcess(observer);
    await nats.stop();
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
