/**
 * Where a native lab listens: every HTTP server (the observer, each service's /metrics and
 * /health, the lab API) on 127.0.0.1 only (MMLAB_HTTP_HOST's default), not on the machine's
 * other addresses.
 *
 * SIGTERM, with real processes (the built dist/): the observer exits 0, and an mm replica
 * answers what it has in flight before it goes, or refuses it with ESHUTDOWN once its grace
 * (SHUTDOWN_GRACE_MS) is over — its caller never waits for a reply that will not come.
 *
 *   caller (test)                 mm-0                              hca0
 *   munmap ───────────────────▶  invalidate_range_start ─────────▶  (slow, or hung)
 *                     SIGTERM ─▶ drain its subscriptions: no new request
 *                                waits for munmap ... ◀──────────── ack (slow: in time)
 *   ◀──────────── {zapped, freed} (or, hung: ESHUTDOWN at the grace's end)
 *                                exit 0
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { RpcClient } from '@mmlab/runtime';
import { type TestLab, codeOf, startTestLab } from '@mmlab/testing';
import { odpMappedPage } from './support/odp-page';
// The lab API is served by the CLI (a test, not an app).
// eslint-disable-next-line no-restricted-imports
import { serveLabApi } from '../apps/lab/src/api/lab-api';

/** This machine's addresses other than loopback (IPv4 and IPv6, link-local aside). */
const otherAddresses = (): string[] =>
  Object.values(networkInterfaces())
    .flat()
    .filter((a) => a !== undefined && !a.internal && !a.address.startsWith('fe80:'))
    .map((a) => a!.address);

/** Whether a TCP connection to host:port is accepted. */
const accepts = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(5000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });

/** The local addresses the kernel says something LISTENs on at port (/proc/net/tcp, tcp6). */
function listeningOn(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const out: string[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const [, local, , st] = line.trim().split(/\s+/);
      if (!local || st !== '0A') continue; // 0A: LISTEN
      const [addr, p] = local.split(':');
      if (p !== hexPort) continue;
      out.push(
        addr.length === 8
          ? addr
              .match(/../g)!
              .reverse()
              .map((h) => parseInt(h, 16))
              .join('.')
          : addr === '0'.repeat(32)
            ? '::'
            : `v6:${addr}`,
      );
    }
  }
  return out;
}

/** The exit of a child process: its code and signal. */
const exitOf = (p: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve([p.exitCode, p.signalCode])
    : new Promise((r) => p.once('exit', (code, sig) => r([code, sig])));

describe('a native lab: where it listens, how it stops (SIGTERM)', () => {
  let e: TestLab;

  beforeAll(async () => {
    e = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 1,
        subscribers: [{ name: 'hca0', kind: 'hca', invalidateLatencyMs: 300 }],
      },
      // long enough that a reply lost on SIGTERM shows as ETIMEDOUT, not as a hung test
      { rpcTimeoutMs: 15_000, http: true },
    );
  });
  afterAll(() => e?.stop());

  it('binds every HTTP server to 127.0.0.1: reachable there, not on the other addresses', async () => {
    const api = await serveLabApi({
      lab: e.lab,
      rpc: new RpcClient(e.nc),
      port: 0,
      token: e.lab.token,
    });
    try {
      const urls = [...e.lab.instances.map((i) => e.lab.httpUrl(i)), api.url];
      expect(urls.length).toBe(5); // observer, mm-0, cpu0, hca0, the lab API
      for (const url of urls) {
        const port = Number(new URL(url).port);
        expect((await fetch(`${url}/health`)).status, url).toBe(200);
        expect(listeningOn(port), url).toEqual(['127.0.0.1']);
        for (const addr of otherAddresses())
          expect(await accepts(addr, port), `${addr}:${port}`).toBe(false);
      }
    } finally {
      await api.close();
    }
  });

  /** A page written by cpu0 and mapped by an ODP MR of hca0: unmapping it notifies hca0. */
  async function mappedPage(): Promise<{ pid: number; addr: number }> {
    const { pid, addr } = await odpMappedPage(e.rpc);
    expect(addr % PAGE_SIZE).toBe(0);
    return { pid, addr };
  }

  /** Start munmap, wait until hca0 has its invalidate_range_start, then SIGTERM mm-0. */
  async function munmapThenSigterm() {
    const { pid, addr } = await mappedPage();
    const munmap = e.rpc.call('munmap', { pid, addr, pages: 1 });
    await e.trace.next((x) => x.kind === 'mn.recv' && x.callback === 'invalidate_range_start');
    const mm = e.lab.proc('mm-0');
    const exited = exitOf(mm);
    mm.kill('SIGTERM');
    return { munmap, exited };
  }

  it('mm answers a request in flight (a slow device) before it exits 0', async () => {
    const { munmap, exited } = await munmapThenSigterm();
    expect(await munmap).toEqual({ zapped: 1, freed: 1 });
    expect(await exited).toEqual([0, null]);
    await e.lab.start('mm-0');
  });

  it('mm refuses with ESHUTDOWN what it cannot finish in its grace (a hung device), and exits 0', async () => {
    await e.rpc.call('subChaos', { faults: [{ fault: 'hang' }] }, { id: 'hca0' });
    try {
      const { munmap, exited } = await munmapThenSigterm();
      // a typed answer, not the caller's own timeout (ETIMEDOUT)
      expect(await codeOf(munmap)).toBe('ESHUTDOWN');
      expect(await exited).toEqual([0, null]);
    } finally {
      await e.rpc.call('subChaos', { faults: [] }, { id: 'hca0' });
    }
    await e.lab.start('mm-0');
    // the lab goes on: the restarted replica serves
    const { pid } = await e.rpc.call('processCreate', {});
    expect(pid).toBeGreaterThan(0);
  });

  it('a subscriber stopped mid-callback refuses it (ESHUTDOWN): mm does not take that for an ack, it fences the device', async () => {
    await e.rpc.call('subChaos', { faults: [{ fault: 'hang' }] }, { id: 'hca0' });
    const { pid, addr } = await mappedPage();
    const munmap = e.rpc.call('munmap', { pid, addr, pages: 1 });
    const recv = await e.trace.next(
      (x) => x.kind === 'mn.recv' && x.callback === 'invalidate_range_start',
    );
    const hca = e.lab.proc('hca0');
    const exited = exitOf(hca);
    hca.kill('SIGTERM');
    expect(await exited).toEqual([0, null]);
    // its lease runs out (it stopped renewing it): fenced, and the munmap goes on
    expect(await munmap).toEqual({ zapped: 1, freed: 1 });
    const inv = (recv as { inv: string }).inv;
    await e.settled();
    const mine = e.trace.events.filter((x) => 'inv' in x && x.inv === inv);
    expect(mine.filter((x) => x.kind === 'mn.ack_ignored')).toEqual([]);
    expect(
      e.trace.events.some(
        (x) => x.kind === 'mn.fenced' && (x as { subscriber?: string }).subscriber === 'hca0',
      ),
    ).toBe(true);
  });

  it('the observer exits 0 (not 143: it handles the signal, closes and exits)', async () => {
    const obs = e.lab.proc('observer');
    const exited = exitOf(obs);
    obs.kill('SIGTERM');
    expect(await exited).toEqual([0, null]);
  });
});
