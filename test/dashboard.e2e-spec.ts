/**
 * The live dashboard in a real browser (the Debian chromium package, driven by
 * playwright-core) against a real lab: mm-0/mm-1, cpu0, hca0 (200 ms device invalidations), kvm0
 * and the observer serving the built page (dist/dashboard, npm run build). The page is opened
 * first; then a scenario runs (an ODP MR read by the device, a VM's guest read of the same
 * memory, then munmap), and the invalidation it causes must appear on the mm, hca0, kvm0 and
 * cpu0 lifelines, open on a click, and list its events. Only Playwright's auto-waiting locators wait: no sleeps, no timings.
 * The Memory panel says "no reclaim yet" on that run; after a run bigger than memory (kswapd
 * between its watermarks, swap-outs and swap-ins) it draws the free frames against the
 * watermarks and counts what the trace holds.
 * The screenshot goes to results/screenshots/dashboard.png (ignored by git): the tests leave
 * the tree clean. `npm run docs:screenshots` sets MMLAB_SCREENSHOT_DIR=docs to refresh the
 * README's docs/dashboard.png, the only way it changes.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EventOf, PAGE_SIZE } from '@mmlab/protocol';
import { GLOBAL } from '@mmlab/model';
import { repoRoot } from '@mmlab/runner';
import { type TestLab, launchChromium, startTestLab, until } from '@mmlab/testing';

const HCA = 'hca0';
const KVM = 'kvm0';
const SHOT_DIR = path.resolve(
  repoRoot(),
  process.env.MMLAB_SCREENSHOT_DIR || path.join('results', 'screenshots'),
);
const SHOT = path.join(SHOT_DIR, 'dashboard.png');
const DOCS_SHOT = path.join(repoRoot(), 'docs', 'dashboard.png');
const mtimeOf = (f: string): number | null => (existsSync(f) ? statSync(f).mtimeMs : null);

describe('the live dashboard, during a running scenario', () => {
  let t: TestLab | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let observer: string;

  beforeAll(async () => {
    if (!existsSync(path.join(repoRoot(), 'dist', 'dashboard', 'index.html')))
      throw new Error('dist/dashboard is not built: npm run build (or npm run build:dashboard)');
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        // swap and kswapd, for the Memory panel's run (the first runs use a few frames)
        swapSlots: 256,
        watermarks: { low: 4, high: 8 },
        cpus: 1,
        mmReplicas: 2,
        subscribers: [
          { name: HCA, kind: 'hca', invalidateLatencyMs: 200 },
          { name: KVM, kind: 'kvm' },
        ],
      },
      { rpcTimeoutMs: 20_000 },
    );
    observer = t.lab.observerUrl!;
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
  });

  it('shows the munmap invalidation across mm, hca0, kvm0 and cpu0, and lists its events on a click', async () => {
    const { rpc, trace } = t!;
    await page.goto(`${observer}/`);
    await page.locator('[data-testid=status][data-status=live]').waitFor();
    // an empty lab says how to start a scenario on it, not a blank page
    const hint = page.getByTestId('empty-hint');
    await hint.getByText('npx mmlab run examples/anon-basic.yaml', { exact: false }).waitFor();
    expect(await hint.innerText()).toContain(`MMLAB_OBSERVER_URL=${observer}`);

    // the scenario, while the page watches
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages: 8, prot: 'rw' });
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 42 }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages: 8, odp: true, access: ['read', 'write'] },
      { id: HCA },
    );
    expect((await rpc.call('hcaRdmaRead', { mr, addr }, { id: HCA })).value).toBe(42);
    const { vm } = await rpc.call(
      'kvmCreateVm',
      { pid, memslots: [{ gfn: 0, pages: 8, addr }], vcpus: 1 },
      { id: KVM },
    );
    expect((await rpc.call('kvmGuestRead', { vm, vcpu: 0, gfn: 0 }, { id: KVM })).value).toBe(42);
    await rpc.call('munmap', { pid, addr, pages: 8 });
    const start = await trace.next<EventOf<'mn.range_start'>>(
      (e) => e.kind === 'mn.range_start' && e.pid === pid && e.event === 'unmap',
    );
    const inv = start.inv;
    const mm = start.instance;

    // a lifeline for every instance that took part (the queue group may have sent all of a
    // short run to one mm replica: the other then has nothing to draw)
    const emitters = new Set(
      (await t!.settled()).filter((e) => e.service !== 'observer').map((e) => e.instance),
    );
    expect([...emitters]).toEqual(expect.arrayContaining([mm, 'cpu0', HCA, KVM]));
    for (const id of emitters)
      await page.locator(`[data-testid=lifeline][data-instance="${id}"]`).waitFor();

    // the invalidation group appears, complete, spanning the mm replica, the HCA and the CPU
    const group = page.locator(
      `[data-testid=inv-group][data-inv="${inv}"][data-complete=true]` +
        `[data-lifelines~="${mm}"][data-lifelines~="${HCA}"][data-lifelines~="${KVM}"]` +
        '[data-lifelines~="cpu0"]',
    );
    await group.waitFor();
    expect(await group.getAttribute('data-kind')).toBe('range');

    await group.click();
    const panel = page.getByTestId('event-panel');
    await panel.getByTestId('panel-inv').getByText(inv, { exact: true }).waitFor();
    // The group is complete at mm.range_end; events of the same invalidation from other
    // instances (and mm's last send and ack) may come in a later trace batch: the panel
    // follows the store, so wait for the last of each before reading it.
    const waitRows = (instance: string, kind: string, n: number) =>
      panel
        .locator(`[data-testid=panel-event][data-instance="${instance}"][data-kind="${kind}"]`)
        .nth(n - 1)
        .waitFor();
    for (const [instance, kind, n] of [
      [mm, 'mn.send', 2],
      [mm, 'mn.ack', 2],
      [HCA, 'mn.recv', 2],
      [HCA, 'mn.done', 2],
      [KVM, 'mn.recv', 2],
      [KVM, 'mn.done', 2],
      ['cpu0', 'tlb.flush', 1],
    ] as const)
      await waitRows(instance, kind, n);
    const rows = panel.getByTestId('panel-event');
    const texts = await rows.allInnerTexts();
    const kinds: Array<string | null> = [];
    const instances: Array<string | null> = [];
    for (let i = 0; i < texts.length; i++) {
      kinds.push(await rows.nth(i).getAttribute('data-kind'));
      instances.push(await rows.nth(i).getAttribute('data-instance'));
    }
    const row = (instance: string, kind: string) =>
      texts.filter((_, i) => instances[i] === instance && kinds[i] === kind);

    // mm's side: invalidate_range_start/end of the munmap, each sent to hca0 and acked
    expect(row(mm, 'mn.range_start')).toEqual([expect.stringContaining(`unmap pid ${pid}`)]);
    expect(row(mm, 'mn.range_end')).toEqual([expect.stringContaining(`inv=${inv}`)]);
    for (const sub of [HCA, KVM])
      expect(row(mm, 'mn.send').filter((x) => x.includes(`→ ${sub} `))).toEqual([
        expect.stringContaining(`invalidate_range_start → ${sub} inv=${inv}`),
        expect.stringContaining(`invalidate_range_end → ${sub} inv=${inv}`),
      ]);
    expect(row(mm, 'mn.ack')).toHaveLength(4);
    // hca0's and kvm0's side: each callback received and done, with the same inv
    for (const sub of [HCA, KVM])
      for (const kind of ['mn.recv', 'mn.done'])
        expect(row(sub, kind)).toEqual([
          expect.stringContaining(`invalidate_range_start inv=${inv}`),
          expect.stringContaining(`invalidate_range_end inv=${inv}`),
        ]);
    expect(row(HCA, 'smap.clear').length).toBeGreaterThan(0); // the device dropped its entry
    expect(row(KVM, 'smap.clear')).toEqual([expect.stringContaining('vm')]); // and kvm0 its sPTE
    expect(row(KVM, 'kvm.mmu_lock')).toHaveLength(1); // the zap, under mmu_lock
    // cpu0's TLB shootdown, under the PT lock, inside the range
    expect(row('cpu0', 'tlb.flush')).toHaveLength(1);
    expect(row(mm, 'ptl.acquire')).toHaveLength(1);
    // in time order
    expect(kinds[0]).toBe('mn.range_start');

    // a valid run: once the checker has seen the whole invalidation, nothing is flagged
    await page.getByTestId('violations').getByText('none so far').waitFor();
    // nothing reclaimed: the Memory panel is one line
    await page.getByTestId('memory-none').getByText('no reclaim yet').waitFor();
    expect(await page.getByTestId('memory-chart').count()).toBe(0);
    // the lab is idle now: the events-per-second counter falls to 0 (it used to keep its last value)
    await page
      .getByTestId('status')
      .filter({ hasText: /· 0\/s/ })
      .waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('empty-hint').count()).toBe(0);
    const docsBefore = mtimeOf(DOCS_SHOT);
    mkdirSync(SHOT_DIR, { recursive: true });
    await page.screenshot({ path: SHOT });
    expect(existsSync(SHOT)).toBe(true);
    // the tree stays clean: docs/ changes only when asked to (npm run docs:screenshots)
    if (SHOT !== DOCS_SHOT) expect(mtimeOf(DOCS_SHOT)).toBe(docsBefore);
  });

  it('streams the stored trace over SSE and documents it in OpenAPI', async () => {
    const doc = (await (await fetch(`${observer}/api-json`)).json()) as {
      paths: Record<string, unknown>;
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/stream', '/events', '/invariants', '/', '/dashboard']),
    );
    const ac = new AbortController();
    const r = await fetch(`${observer}/stream?from=0`, { signal: ac.signal });
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const dec = new TextDecoder();
    let text = '';
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      text += dec.decode(chunk, { stream: true });
      if (text.includes('event: replayed')) break;
    }
    ac.abort();
    const ids = [...text.matchAll(/^data: (\[.*\])$/gm)].flatMap((m) =>
      (JSON.parse(m[1]) as Array<{ id: string }>).map((e) => e.id),
    );
    expect(ids.length).toBeGreaterThan(20);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expect.arrayContaining(t!.trace.events.slice(0, 10).map((e) => e.id)));
  });

  /** The observer's stored event count. */
  const stored = async (): Promise<number> =>
    ((await (await fetch(`${observer}/stats`)).json()) as { events: number }).events;

  it('a page of another site cannot wipe the trace: its form post to /reset is refused', async () => {
    const before = await stored();
    expect(before).toBeGreaterThan(0);
    // another site (localhost, not 127.0.0.1) whose page posts a form to the observer at once
    const evil: Server = createServer((_, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(
        `<form id="f" method="post" action="${observer}/reset"><input name="a" value="1"></form>` +
          '<script>document.getElementById("f").submit()</script>',
      );
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const { port } = evil.address() as AddressInfo;
      const other = await browser!.newPage();
      const answered = other.waitForResponse((r) => r.url() === `${observer}/reset`);
      await other.goto(`http://localhost:${port}/`);
      const r = await answered;
      expect(r.status()).toBe(415);
      await other.close();
    } finally {
      evil.close();
    }
    expect(await stored()).toBeGreaterThanOrEqual(before);
  });

  it('the dashboard clears the trace with the token of the page the observer served', async () => {
    expect(await page.locator('meta[name="mmlab-token"]').getAttribute('content')).toBe(
      t!.lab.token,
    );
    expect(await stored()).toBeGreaterThan(0);
    await page.getByTestId('clear-trace').click();
    await page
      .locator('[data-testid=status]')
      .getByText(/· 0 shown/)
      .waitFor();
    expect(await stored()).toBeLessThan(5); // the services keep publishing (a few pings at most)
    expect(await page.getByTestId('action-error').count()).toBe(0);
  });

  it('the Memory panel: free frames after each reclaim pass against the watermarks, swap counts, the last passes', async () => {
    const { rpc } = t!;
    // the trace was cleared (the test before): the panel starts over
    await page.getByTestId('memory-none').waitFor();
    const earlier = new Set((await t!.settled()).map((e) => e.id));
    // more pages than frames: allocations fall below the low watermark (kswapd) or find none
    // (direct reclaim); reading them back swaps them in; then one reclaim step
    const pages = 80;
    const { pid } = await rpc.call('processCreate', {});
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    const at = (i: number) => addr + i * PAGE_SIZE;
    for (let i = 0; i < pages; i++)
      await rpc.call('cpuAccess', { pid, addr: at(i), op: 'write', value: 500 + i }, { id: 0 });
    for (let i = 0; i < pages; i++)
      expect((await rpc.call('cpuAccess', { pid, addr: at(i), op: 'read' }, { id: 0 })).value).toBe(
        500 + i,
      );
    await rpc.call('reclaim', { pages: 4 });
    // kswapd runs in the background: its last pass ends before the trace is counted
    await until(
      async () => (await t!.store.redis.exists(GLOBAL.kswapd)) === 0,
      'kswapd to finish its pass',
    );
    const run = (await t!.settled()).filter((e) => !earlier.has(e.id));
    const passes = run.filter((e): e is EventOf<'reclaim'> => e.kind === 'reclaim');
    const outs = run.filter((e) => e.kind === 'swap.out').length;
    const ins = run.filter((e) => e.kind === 'swap.in').length;
    expect(passes.map((p) => p.why)).toEqual(expect.arrayContaining(['kswapd', 'request']));
    // mm says which watermarks kswapd works between
    expect(passes.every((p) => p.watermarks?.low === 4 && p.watermarks.high === 8)).toBe(true);
    expect(outs).toBeGreaterThanOrEqual(pages - 64);
    expect(ins).toBeGreaterThan(0);

    const panel = page.getByTestId('memory-panel');
    await panel.locator(`[data-testid=memory-swap-out][data-count="${outs}"]`).waitFor();
    await panel.locator(`[data-testid=memory-swap-in][data-count="${ins}"]`).waitFor();
    // one point per pass (all kept: fewer than the curve holds), the watermarks as rules
    await panel.locator(`[data-testid=memory-chart][data-points="${passes.length}"]`).waitFor();
    await panel.locator('[data-testid=memory-watermark][data-level=low][data-value="4"]').waitFor();
    await panel
      .locator('[data-testid=memory-watermark][data-level=high][data-value="8"]')
      .waitFor();
    expect(await panel.getByTestId('memory-free').getAttribute('points')).toMatch(
      new RegExp(`^([\\d.]+,[\\d.]+ ){${passes.length - 1}}[\\d.]+,[\\d.]+$`),
    );
    expect(await panel.getByTestId('memory-by-why').innerText()).toBe(
      (['kswapd', 'direct', 'request'] as const)
        .map((w) => `${w} ${passes.filter((p) => p.why === w).length}`)
        .join(' · '),
    );
    // the last passes, newest first, with what each did
    const newest = [...passes].sort((a, b) => b.ts - a.ts).slice(0, 5);
    const rows = panel.getByTestId('memory-pass');
    expect(await rows.count()).toBe(newest.length);
    for (let i = 0; i < newest.length; i++) {
      const p = newest[i];
      const row = rows.nth(i);
      expect(await row.getAttribute('data-event-id')).toBe(p.id);
      expect((await row.locator('td').allInnerTexts()).slice(1)).toEqual(
        [p.why, p.scanned, p.reclaimed, p.referenced, p.pinned, p.free].map(String),
      );
    }
    mkdirSync(SHOT_DIR, { recursive: true });
    await panel.screenshot({ path: path.join(SHOT_DIR, 'dashboard-memory.png') });
    await rpc.call('exit', { pid });
  });
});
