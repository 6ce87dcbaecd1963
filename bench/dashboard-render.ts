/**
 * How fast the live dashboard draws, in headless chromium (the Debian package, driven by
 * playwright-core), against the built page (dist/dashboard) and a stand-in observer that
 * serves it and streams synthetic events (libs/diagram's syntheticTrace: the shapes real runs
 * produce) over the same SSE protocol as GET /stream.
 *
 *   render   the page is opened on a stored 10,000-event run: time from navigation to the
 *            diagram committed and painted with every event (median of --runs), and the part
 *            after the first events arrived
 *   stream   (--stream-seconds S) events streamed live at --rate per second: frame intervals
 *            (p50/p95/p99/max), long tasks, and whether the view kept up
 *
 *   npm run build:dashboard && npx tsc -p tsconfig.build.json && npx tsc-alias -p tsconfig.build.json
 *   node dist/bench/dashboard-render.js [--events 10000] [--runs 5] [--stream-seconds 10 --rate 2000]
 *                                       [--screenshot file.png]
 * Prints JSON.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import type { TraceEvent } from '@mmlab/protocol';
import { syntheticTrace } from '@mmlab/diagram';
import { repoRoot } from '@mmlab/runner';
import { launchChromium } from '@mmlab/testing';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
function argStr(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/**
 * The page's globals the bench reads. Functions passed to page.evaluate run in the browser;
 * this program is type-checked without the DOM library, so they reach it through this type.
 */
interface PageGlobals {
  __mmlabRender?: { rows: number; committedAt: number; paintedAt?: number };
  __frames: number[];
  __long: number[];
  requestAnimationFrame(cb: (t: number) => void): number;
  PerformanceObserver: new (cb: (list: { getEntries(): Array<{ duration: number }> }) => void) => {
    observe(o: { type: string; buffered: boolean }): void;
  };
  document: {
    querySelector(s: string): { querySelectorAll(s: string): { length: number } } | null;
  };
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const round = (n: number) => Math.round(n * 10) / 10;

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.css': 'text/css',
};

interface StandIn {
  url: string;
  /** what the next GET /stream replays, then streams live at `rate`/s for `seconds` */
  plan: { stored: TraceEvent[]; live: TraceEvent[]; rate: number };
  close(): Promise<void>;
}

/** The dashboard's files, GET /stream (SSE, batches of 2000 like the observer), GET /invariants. */
async function standIn(dist: string): Promise<StandIn> {
  const plan: StandIn['plan'] = { stored: [], live: [], rate: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/stream') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
      const { stored, live, rate } = plan;
      res.write(
        `event: hello\ndata: ${JSON.stringify({ stored: stored.length, replay: stored.length })}\n\n`,
      );
      for (let i = 0; i < stored.length; i += 2000) {
        const b = stored.slice(i, i + 2000);
        res.write(`event: events\nid: ${b[b.length - 1].ts}\ndata: ${JSON.stringify(b)}\n\n`);
      }
      res.write(`event: replayed\ndata: ${JSON.stringify({ events: stored.length })}\n\n`);
      if (live.length > 0) {
        // every 25 ms, the events due by then, stamped with the time they are sent
        const t0 = Date.now();
        let at = 0;
        const tick = setInterval(() => {
          const due = Math.min(live.length, Math.floor(((Date.now() - t0) / 1000) * rate));
          if (due > at) {
            const now = Date.now();
            const b = live.slice(at, due).map((e, i) => ({ ...e, ts: now + i * 0.001 }));
            at = due;
            res.write(`event: events\nid: ${now}\ndata: ${JSON.stringify(b)}\n\n`);
          }
          if (at >= live.length) {
            clearInterval(tick);
            timers.delete(tick);
          }
        }, 25);
        timers.add(tick);
        req.on('close', () => {
          clearInterval(tick);
          timers.delete(tick);
        });
      }
      return;
    }
    if (url.pathname === '/invariants') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ events: plan.stored.length, softlockupMs: 1000, verdicts: [] }));
      return;
    }
    const file = url.pathname === '/' ? 'index.html' : url.pathname.replace(/^\/+/, '');
    const full = path.join(dist, path.normalize(file));
    if (!full.startsWith(dist) || !existsSync(full)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(full)] ?? 'application/octet-stream' });
    res.end(readFileSync(full));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    plan,
    close: () =>
      new Promise<void>((r) => {
        for (const t of timers) clearInterval(t);
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

interface RenderTimes {
  /** navigation start → the diagram committed with every event */
  committedMs: number;
  /** … and painted (the next animation frame) */
  paintedMs: number;
  /** first events received → painted */
  fromFirstEventsMs: number;
  /** navigation start → the page's script ran (DOMContentLoaded) */
  domContentLoadedMs: number;
}

async function renderRun(
  browser: Browser,
  s: StandIn,
  n: number,
  shot?: string,
): Promise<RenderTimes> {
  const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await ctx.newPage();
  try {
    await page.goto(s.url);
    await page.waitForFunction(
      (want) => {
        const r = (globalThis as unknown as PageGlobals).__mmlabRender;
        return r !== undefined && r.rows === want && r.paintedAt !== undefined;
      },
      n,
      { polling: 20, timeout: 60_000 },
    );
    const t = await page.evaluate(() => {
      const r = (globalThis as unknown as PageGlobals).__mmlabRender!;
      const first = performance.getEntriesByName('mmlab:first-events')[0]?.startTime ?? NaN;
      // (the browser's entry types; node's typings know fewer)
      const nav = performance.getEntriesByType('navigation' as 'mark')[0] as unknown as {
        domContentLoadedEventEnd: number;
      };
      return {
        committed: r.committedAt,
        painted: r.paintedAt!,
        first,
        dcl: nav.domContentLoadedEventEnd,
      };
    });
    if (shot) await page.screenshot({ path: shot });
    return {
      committedMs: round(t.committed),
      paintedMs: round(t.painted),
      fromFirstEventsMs: round(t.painted - t.first),
      domContentLoadedMs: round(t.dcl),
    };
  } finally {
    await ctx.close();
  }
}

async function streamRun(browser: Browser, s: StandIn, seconds: number, rate: number) {
  const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await ctx.newPage();
  try {
    await page.goto(s.url);
    await page.waitForFunction(
      () => (globalThis as unknown as PageGlobals).__mmlabRender !== undefined,
    );
    await page.evaluate(() => {
      const w = globalThis as unknown as PageGlobals;
      w.__frames = [];
      w.__long = [];
      let last = performance.now();
      const loop = (t: number) => {
        w.__frames.push(t - last);
        last = t;
        w.requestAnimationFrame(loop);
      };
      w.requestAnimationFrame(loop);
      new w.PerformanceObserver((l) => {
        for (const e of l.getEntries()) w.__long.push(e.duration);
      }).observe({ type: 'longtask', buffered: false });
    });
    await page.waitForTimeout(seconds * 1000 + 500);
    const r = await page.evaluate(() => {
      const w = globalThis as unknown as PageGlobals;
      const el = w.document.querySelector('[data-testid=diagram]');
      return {
        frames: w.__frames.slice(5),
        long: w.__long,
        rows: w.__mmlabRender?.rows ?? 0,
        domNodes: el ? el.querySelectorAll('*').length : 0,
      };
    });
    const fps = r.frames.length / seconds;
    return {
      seconds,
      rate,
      sent: s.plan.live.length,
      shownAtEnd: r.rows,
      framesPerSecond: round(fps),
      frameMs: {
        p50: round(pct(r.frames, 50)),
        p95: round(pct(r.frames, 95)),
        p99: round(pct(r.frames, 99)),
        max: round(Math.max(...r.frames)),
      },
      framesOver50ms: r.frames.filter((f) => f > 50).length,
      longTasks: { count: r.long.length, totalMs: round(r.long.reduce((a, b) => a + b, 0)) },
      svgNodesInView: r.domNodes,
    };
  } finally {
    await ctx.close();
  }
}

async function main(): Promise<void> {
  const n = arg('events', 10_000);
  const runs = arg('runs', 5);
  const seconds = arg('stream-seconds', 0);
  const rate = arg('rate', 2000);
  const shot = argStr('screenshot');
  const dist = path.join(repoRoot(), 'dist', 'dashboard');
  if (!existsSync(path.join(dist, 'index.html')))
    throw new Error(`${dist} has no build: run npm run build:dashboard first`);
  const s = await standIn(dist);
  const browser = await launchChromium();
  try {
    s.plan.stored = syntheticTrace(n, { seed: 1, cpus: 4, subscribers: ['hca0', 'hca1'] });
    await renderRun(browser, s, n); // warm-up (disk cache, JIT of the browser itself)
    const times: RenderTimes[] = [];
    for (let i = 0; i < runs; i++)
      times.push(await renderRun(browser, s, n, i === runs - 1 ? shot : undefined));
    const med = (k: keyof RenderTimes) =>
      round(
        pct(
          times.map((t) => t[k]),
          50,
        ),
      );
    const out: Record<string, unknown> = {
      chromium: browser.version(),
      events: n,
      runs,
      render: {
        median: {
          paintedMs: med('paintedMs'),
          committedMs: med('committedMs'),
          fromFirstEventsMs: med('fromFirstEventsMs'),
          domContentLoadedMs: med('domContentLoadedMs'),
        },
        max: { paintedMs: round(Math.max(...times.map((t) => t.paintedMs))) },
        runs: times,
      },
    };
    if (seconds > 0) {
      s.plan.stored = [];
      s.plan.live = syntheticTrace(Math.round(seconds * rate), {
        seed: 2,
        cpus: 4,
        subscribers: ['hca0', 'hca1'],
      });
      s.plan.rate = rate;
      out.stream = await streamRun(browser, s, seconds, rate);
    }
    console.log(JSON.stringify(out, null, 2));
  } finally {
    await browser.close();
    await s.close();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
