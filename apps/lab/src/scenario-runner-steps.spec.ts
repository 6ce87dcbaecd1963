/**
 * The runner's step executor against a fake RPC client: which RPC each step kind sends, with
 * which request and instance id, how bindings (MRs included) resolve, and how a parallel
 * step runs its branches concurrently and reports every nested step.
 */
import { MmlabError, type RpcName } from '@mmlab/protocol';
import type { RpcClient } from '@mmlab/runtime';
import { parseScenario, type Scenario } from '@mmlab/scenario';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { LabConnection } from './lab-connection';
import { ScenarioRunner } from './scenario-runner';

interface Call {
  name: RpcName;
  req: unknown;
  id?: string | number;
}

type Handler = (req: Record<string, unknown>, id?: string | number) => unknown;

/** A LabConnection whose rpc.call answers from handlers and records every call. */
function fakeLab(handlers: Partial<Record<RpcName, Handler>>): {
  lab: LabConnection;
  calls: Call[];
} {
  const calls: Call[] = [];
  const rpc = {
    call: async (name: RpcName, req: Record<string, unknown>, opts: { id?: string | number }) => {
      calls.push({ name, req, ...(opts.id !== undefined && { id: opts.id }) });
      const h = handlers[name];
      if (!h) throw new MmlabError('ENOHANDLER', `no fake for ${name}`);
      return h(req, opts.id);
    },
  } as unknown as RpcClient;
  const lab: LabConnection = {
    rpc,
    observerUrl: 'http://127.0.0.1:1',
    instances: [],
    redisUrl: null,
    local: null,
    config: { mode: 'patched', frames: 256, cpus: 2, mmReplicas: 2 },
    close: async () => {},
  };
  return { lab, calls };
}

function parse(...steps: string[]): Scenario {
  const text = [
    'name: t',
    'config: { subscribers: [{ name: hca0, kind: hca }] }',
    'steps:',
    ...steps,
    '',
  ].join('\n');
  const r = parseScenario(text, 't.yaml');
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.scenario;
}

const BASE = 0x10000000;

describe('ScenarioRunner steps', () => {
  it('sends each process and hca step as its RPC, resolving bindings and MR addresses', async () => {
    const { lab, calls } = fakeLab({
      processCreate: () => ({ pid: 1 }),
      fork: () => ({ pid: 2 }),
      mmap: () => ({ addr: BASE }),
      mprotect: () => ({ changed: 2 }),
      mremap: () => ({ addr: BASE + 0x100000, moved: 4 }),
      madvise: () => ({ zapped: 1, freed: 1 }),
      exit: () => ({ freed: 3 }),
      hcaRegMr: () => ({ mr: 7 }),
      hcaRdmaWrite: () => ({ pfn: 3, gen: 1, npf: 1, stale: false }),
      hcaRdmaRead: () => ({ value: 42, pfn: 3, gen: 1, npf: 0, stale: false }),
      hcaPrefetch: () => ({ mapped: 2 }),
      hcaDeregMr: () => ({ dereg: true }),
      cpuAccess: () => ({ value: 0, pfn: 3, gen: 1, faults: 0, tlbHit: true, stale: false }),
    });
    const s = parse(
      '  - { op: process.create, as: p }',
      '  - { op: mmap, process: p, pages: 8, prot: rw, as: buf }',
      '  - { op: fork, process: p, as: c }',
      '  - { op: mprotect, process: c, addr: buf, page: 1, pages: 2, prot: r }',
      '  - { op: mremap, process: p, addr: buf, pages: 8, newPages: 16, as: moved }',
      '  - { op: cpu.read, cpu: 0, process: p, addr: moved, page: 1 }',
      '  - { op: hca.reg_mr, hca: hca0, process: p, addr: moved, page: 2, pages: 4, odp: true, access: [read, write], as: m }',
      '  - { op: hca.rdma_write, mr: m, value: 9 }',
      '  - { op: hca.rdma_read, mr: m, page: 1, expect: 42 }',
      '  - { op: hca.prefetch, mr: m, addr: moved, page: 3, pages: 1, write: true }',
      '  - { op: hca.dereg_mr, mr: m }',
      '  - { op: madvise, process: p, addr: moved, pages: 16, advice: dontneed }',
      '  - { op: exit, process: c }',
      '  - { op: sleep, ms: 1 }',
    );
    const results = await new ScenarioRunner(s, lab).runSteps();
    expect(results.map((r) => [r.index, r.path, r.line, r.op, r.ok])).toEqual(
      s.steps.map((x, i) => [i, `steps[${i}]`, x.line, x.op, true]),
    );
    const moved = BASE + 0x100000;
    const mrStart = moved + 2 * 4096;
    expect(calls).toEqual([
      { name: 'processCreate', req: {} },
      { name: 'mmap', req: { pid: 1, pages: 8, prot: 'rw', flags: [] } },
      { name: 'fork', req: { pid: 1 } },
      { name: 'mprotect', req: { pid: 2, addr: BASE + 4096, pages: 2, prot: 'r' } },
      { name: 'mremap', req: { pid: 1, addr: BASE, pages: 8, newPages: 16 } },
      { name: 'cpuAccess', req: { pid: 1, addr: moved + 4096, op: 'read' }, id: 0 },
      {
        name: 'hcaRegMr',
        req: { pid: 1, addr: mrStart, pages: 4, odp: true, access: ['read', 'write'] },
        id: 'hca0',
      },
      { name: 'hcaRdmaWrite', req: { mr: 7, addr: mrStart, value: 9 }, id: 'hca0' },
      { name: 'hcaRdmaRead', req: { mr: 7, addr: mrStart + 4096 }, id: 'hca0' },
      {
        name: 'hcaPrefetch',
        req: { mr: 7, addr: moved + 3 * 4096, pages: 1, write: true },
        id: 'hca0',
      },
      { name: 'hcaDeregMr', req: { mr: 7 }, id: 'hca0' },
      { name: 'madvise', req: { pid: 1, addr: moved, pages: 16, advice: 'dontneed' } },
      { name: 'exit', req: { pid: 2 } },
    ]);
    expect(results[2].value).toBe(2);
    expect(results[4].value).toEqual({ addr: moved, moved: 4 });
    expect(results[6].value).toBe(7);
    expect(results[8].value).toBe(42);
    expect(results[13].value).toBeUndefined();
  });

  it('judges hca.rdma_read against expect, and expectError on hca steps', async () => {
    const { lab } = fakeLab({
      processCreate: () => ({ pid: 1 }),
      hcaRegMr: () => ({ mr: 1 }),
      hcaRdmaRead: () => ({ value: 5, pfn: 3, gen: 1, npf: 0, stale: false }),
      hcaRdmaWrite: () => {
        throw new MmlabError('EFAULT', 'outside the MR');
      },
    });
    const s = parse(
      '  - { op: process.create, as: p }',
      '  - { op: hca.reg_mr, hca: hca0, process: p, addr: 0x10000000, pages: 1, odp: false, access: [read], as: m }',
      '  - { op: hca.rdma_read, mr: m, expect: 6 }',
      '  - { op: hca.rdma_write, mr: m, page: 1, value: 1, expectError: EFAULT }',
      '  - { op: hca.rdma_write, mr: m, value: 1 }',
    );
    const r = await new ScenarioRunner(s, lab).runSteps();
    expect(r.map((x) => [x.ok, x.reason])).toEqual([
      [true, undefined],
      [true, undefined],
      [false, 'read 5, expected 6'],
      [true, undefined],
      [false, 'failed with EFAULT'],
    ]);
  });

  it('runs branches concurrently, records nested steps, and binds after the block', async () => {
    // cpu0's access waits until cpu1's has started: only concurrent branches finish.
    let cpu1Started!: () => void;
    const started = new Promise<void>((r) => (cpu1Started = r));
    const { lab, calls } = fakeLab({
      processCreate: () => ({ pid: 1 }),
      mmap: () => ({ addr: BASE }),
      cpuAccess: async (req, id) => {
        if (id === 1) cpu1Started();
        else await started;
        if (req.value === 13) throw new MmlabError('SIGSEGV', 'no');
        return { value: 0, pfn: 3, gen: 1, faults: 0, tlbHit: false, stale: false };
      },
      munmap: () => ({ zapped: 1, freed: 1 }),
    });
    const s = parse(
      '  - { op: process.create, as: p }', // 4
      '  - op: parallel', // 5
      '    branches:', // 6
      '      - - { op: cpu.write, cpu: 0, process: p, addr: 0x10000000, value: 1 }', // 7
      '        - { op: mmap, process: p, pages: 1, prot: rw, as: b }', // 8
      '      - - { op: cpu.write, cpu: 1, process: p, addr: 0x10000000, value: 2 }', // 9
      '        - { op: cpu.write, cpu: 1, process: p, addr: 0x10000000, value: 13 }', // 10
      '  - { op: munmap, process: p, addr: b, pages: 1 }', // 11
    );
    const r = await new ScenarioRunner(s, lab).runSteps();
    expect(r.map((x) => [x.path, x.line, x.op, x.ok])).toEqual([
      ['steps[0]', 4, 'process.create', true],
      ['steps[1]', 5, 'parallel', false],
      ['steps[2]', 11, 'munmap', true],
    ]);
    const par = r[1];
    expect(par.reason).toBe('1 step(s) of its branches not ok: steps[1].branches[1][1] (line 10)');
    expect(par.value).toBeUndefined();
    expect(
      par.branches?.map((b) => b.map((x) => [x.index, x.path, x.line, x.op, x.ok, x.error?.code])),
    ).toEqual([
      [
        [0, 'steps[1].branches[0][0]', 7, 'cpu.write', true, undefined],
        [1, 'steps[1].branches[0][1]', 8, 'mmap', true, undefined],
      ],
      [
        [0, 'steps[1].branches[1][0]', 9, 'cpu.write', true, undefined],
        [1, 'steps[1].branches[1][1]', 10, 'cpu.write', false, 'SIGSEGV'],
      ],
    ]);
    expect(calls.at(-1)).toEqual({ name: 'munmap', req: { pid: 1, addr: BASE, pages: 1 } });
  });

  it('marks a step reading a binding whose step failed, inside a branch too', async () => {
    const { lab, calls } = fakeLab({
      processCreate: () => ({ pid: 1 }),
      hcaRegMr: () => {
        throw new MmlabError('ENOMEM', 'too many pins');
      },
    });
    const s = parse(
      '  - { op: process.create, as: p }',
      '  - { op: hca.reg_mr, hca: hca0, process: p, addr: 0, pages: 1, odp: false, access: [write], as: m }',
      '  - op: parallel',
      '    branches: [[{ op: hca.rdma_write, mr: m, value: 1 }], [{ op: sleep, ms: 0 }]]',
    );
    const r = await new ScenarioRunner(s, lab).runSteps();
    expect(r[1]).toMatchObject({ ok: false, error: { code: 'ENOMEM' } });
    expect(r[2].ok).toBe(false);
    expect(r[2].branches?.[0][0]).toMatchObject({
      ok: false,
      reason: '"m" is unbound: the step that binds it did not succeed',
    });
    expect(r[2].branches?.[1][0].ok).toBe(true);
    expect(calls.map((c) => c.name)).toEqual(['processCreate', 'hcaRegMr']);
  });

  it('arms every mm replica, and only those, with one lose-lease crash point', async () => {
    const { lab, calls } = fakeLab({ mmCrashPoint: () => ({ armed: true }) });
    const s = parse('  - { op: mm.lose_lease, at: do_wp_page.ptl_held }');
    const r = await new ScenarioRunner(s, {
      ...lab,
      instances: ['mm-0', 'cpu0', 'mm-1', 'hca0'],
    }).runSteps();
    expect(r[0].ok).toBe(true);
    expect(calls.map((c) => c.id)).toEqual(['mm-0', 'mm-1']);
    const [a, b] = calls.map((c) => c.req as { point: string; token: string; action: string });
    expect(a).toMatchObject({ point: 'do_wp_page.ptl_held', action: 'lose-lease' });
    expect(b).toEqual(a); // one token: the point fires once in the lab
  });

  it('trace.wait waits for the events on the observer, and fails with ETIMEDOUT when they never come', async () => {
    // A real HTTP server as the observer: each GET /events finds one more npf.delay.
    const queries: URLSearchParams[] = [];
    const server = createServer((req, res) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      queries.push(q);
      const n = Math.min(queries.length, 3);
      res.setHeader('Content-Type', 'application/json');
      res.end(
        JSON.stringify({ total: n, offset: 0, events: Array.from({ length: n }, () => ({})) }),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const { lab } = fakeLab({});
      const s = parse(
        '  - { op: trace.wait, event: npf.delay, instance: hca0, count: 2 }',
        '  - { op: trace.wait, event: npf.delay, count: 4, timeoutMs: 100 }',
      );
      const r = await new ScenarioRunner(s, {
        ...lab,
        observerUrl: `http://127.0.0.1:${port}`,
      }).runSteps();
      expect(r[0]).toMatchObject({ ok: true, value: 2 });
      expect(queries[0].get('kind')).toBe('npf.delay');
      expect(queries[0].get('instance')).toBe('hca0');
      expect(Number(queries[0].get('from'))).toBeGreaterThan(0);
      expect(r[1]).toMatchObject({ ok: false, error: { code: 'ETIMEDOUT' } });
      expect(queries.at(-1)?.has('instance')).toBe(false);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
