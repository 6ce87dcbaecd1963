/**
 * The scenario vocabulary of the notifier issue: subscribers, dispatch and inject in the
 * config; fork, mprotect, mremap, madvise, exit, the hca.* verbs, parallel and sleep steps;
 * and the static checks that come with them (MR bindings, configured HCAs, branch scopes).
 */
import { describe, expect, it } from 'vitest';
import { parseScenario } from './parse';
import type { LocatedStep, Scenario } from './schema';

/** A scenario with one HCA; line N (1-based) is lines[N - 1]: lines 1-6 are the header. */
const scenario = (...steps: string[]): string =>
  [
    'name: t',
    'config:',
    '  cpus: 2',
    '  subscribers: [{ name: hca0, kind: hca, invalidateLatencyMs: 200 }]',
    'steps:',
    '  - { op: process.create, as: p }',
    ...steps,
    '',
  ].join('\n');

/** `file:line:col` of the first `token` on `line` of `text`. */
function at(text: string, line: number, token: string): string {
  const col = text.split('\n')[line - 1].indexOf(token) + 1;
  if (col === 0) throw new Error(`no ${token} on line ${line}`);
  return `t.yaml:${line}:${col}`;
}

function ok(text: string): Scenario {
  const r = parseScenario(text, 't.yaml');
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.scenario;
}

function errorsOf(text: string): string[] {
  const r = parseScenario(text, 't.yaml');
  if (r.ok) throw new Error('expected errors, the scenario parsed');
  return r.errors;
}

describe('config: subscribers, dispatch, inject', () => {
  it('parses them, and leaves them out when not given', () => {
    const s = ok(
      [
        'name: c',
        'seed: 7',
        'config:',
        '  subscribers:',
        '    - { name: hca0, kind: hca, invalidateLatencyMs: 200 }',
        '    - { name: hca_1, kind: hca, invalidateLatencyMs: "pareto:50:1.5" }',
        '    - { name: h-2, kind: hca, npfDelayMs: 40 }',
        '  dispatch: serial',
        '  inject: [free-before-invalidate-page, skip-seq-recheck]',
        'steps:',
        '  - { op: sleep, ms: 0 }',
      ].join('\n'),
    );
    expect(s.seed).toBe(7);
    expect(s.config).toEqual({
      mode: 'patched',
      frames: 256,
      cpus: 2,
      mmReplicas: 2,
      subscribers: [
        { name: 'hca0', kind: 'hca', invalidateLatencyMs: 200 },
        { name: 'hca_1', kind: 'hca', invalidateLatencyMs: 'pareto:50:1.5' },
        { name: 'h-2', kind: 'hca', npfDelayMs: 40 },
      ],
      dispatch: 'serial',
      inject: ['free-before-invalidate-page', 'skip-seq-recheck'],
    });
    expect(ok('name: d\nsteps: [{ op: sleep, ms: 1 }]\n').config).toEqual({
      mode: 'patched',
      frames: 256,
      cpus: 2,
      mmReplicas: 2,
    });
  });

  it('accepts every latency distribution', () => {
    for (const l of ['0', '12.5', '"uniform:10:20"', '"normal:100:15"', '"pareto:50:2"'])
      ok(
        `name: l\nconfig: { subscribers: [{ name: h, kind: hca, invalidateLatencyMs: ${l} }] }\nsteps: [{ op: sleep, ms: 1 }]\n`,
      );
  });

  it('reports a bad, reserved or duplicate subscriber name at its line', () => {
    const text = [
      'name: c', // 1
      'config:', // 2
      '  subscribers:', // 3
      '    - { name: hca0, kind: hca }', // 4
      '    - { name: "hca 1", kind: hca }', // 5
      '    - { name: hca0, kind: hca }', // 6
      '    - { name: cpu0, kind: hca }', // 7
      '    - { name: xen0, kind: xen }', // 8
      '    - { name: hca9, kind: hca, mmuLock: spin }', // 9
      '    - { name: kvm0, kind: kvm, npfDelayMs: 5 }', // 10
      'steps: [{ op: sleep, ms: 1 }]', // 11
    ].join('\n');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '"hca 1"')}: config.subscribers[1].name: expected a subscriber name of letters, digits, _ or -`,
      `${at(text, 6, 'hca0')}: config.subscribers[2].name: subscriber "hca0" is already configured by config.subscribers[0]`,
      `${at(text, 7, 'cpu0')}: config.subscribers[3].name: this name is taken by a service of the lab (observer, mm-N, cpuN)`,
      `${at(text, 8, 'xen }')}: config.subscribers[4].kind: expected "hca" | "kvm" | "external", got the string "xen"`,
      `${at(text, 9, 'spin }')}: config.subscribers[5].mmuLock: mmuLock belongs to a subscriber of kind kvm, not hca`,
      `${at(text, 10, '5 }')}: config.subscribers[6].npfDelayMs: npfDelayMs belongs to a subscriber of kind hca, not kvm`,
    ]);
  });

  it('reports a bad latency, dispatch or inject mode', () => {
    const text = [
      'name: c', // 1
      'config:', // 2
      '  subscribers:', // 3
      '    - { name: a, kind: hca, invalidateLatencyMs: -1 }', // 4
      '    - { name: b, kind: hca, invalidateLatencyMs: "uniform:20:10" }', // 5
      '    - { name: c, kind: hca, invalidateLatencyMs: "gauss:1:2" }', // 6
      '    - { name: d, kind: hca, invalidateLatencyMs: "pareto:0:1" }', // 7
      '    - { name: e, kind: hca, invalidateLatencyMs: "normal:1" }', // 8
      '    - { name: f, kind: hca, invalidateLatencyMs: [1] }', // 9
      '  dispatch: broadcast', // 10
      '  inject: [range-end-mismatch, lie]', // 11
      'steps: [{ op: sleep, ms: 1 }]', // 12
    ].join('\n');
    const spec = '(expected "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape" with numbers)';
    expect(errorsOf(text)).toEqual([
      `${at(text, 4, '-1')}: config.subscribers[0].invalidateLatencyMs: expected a latency of at least 0 ms, got -1`,
      `${at(text, 5, '"uniform')}: config.subscribers[1].invalidateLatencyMs: bad latency "uniform:20:10": uniform needs 0 <= a <= b`,
      `${at(text, 6, '"gauss')}: config.subscribers[2].invalidateLatencyMs: bad latency "gauss:1:2" ${spec}`,
      `${at(text, 7, '"pareto')}: config.subscribers[3].invalidateLatencyMs: bad latency "pareto:0:1": pareto needs scale > 0 and shape > 0`,
      `${at(text, 8, '"normal')}: config.subscribers[4].invalidateLatencyMs: bad latency "normal:1" ${spec}`,
      `${at(text, 9, '[1]')}: config.subscribers[5].invalidateLatencyMs: expected a latency: milliseconds, or "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape"`,
      `${at(text, 10, 'broadcast')}: config.dispatch: expected "parallel" | "serial", got the string "broadcast"`,
      expect.stringMatching(
        new RegExp(
          `^${at(text, 11, 'lie')}: config\\.inject\\[1\\]: expected "free-before-invalidate-page" \\| .*got the string "lie"$`,
        ),
      ),
    ]);
  });
});

describe('process steps: fork, mprotect, mremap, madvise, exit', () => {
  it('parses them with their defaults and bindings', () => {
    const s = ok(
      scenario(
        '  - { op: mmap, process: p, pages: 8, prot: rw, flags: [shared], as: buf }', // 7
        '  - { op: fork, process: p, as: child }', // 8
        '  - { op: cpu.read, cpu: 0, process: child, addr: buf }', // 9
        '  - { op: mprotect, process: p, addr: buf, page: 2, pages: 2, prot: r }', // 10
        '  - { op: mremap, process: p, addr: buf, pages: 8, newPages: 16, as: moved }', // 11
        '  - { op: madvise, process: p, addr: moved, pages: 16, advice: dontneed }', // 12
        '  - { op: exit, process: child }', // 13
        '  - { op: mremap, process: p, addr: "0x10000000", pages: 1 }', // 14
      ),
    );
    expect(s.steps.map((x) => [x.op, x.line])).toEqual([
      ['process.create', 6],
      ['mmap', 7],
      ['fork', 8],
      ['cpu.read', 9],
      ['mprotect', 10],
      ['mremap', 11],
      ['madvise', 12],
      ['exit', 13],
      ['mremap', 14],
    ]);
    expect(s.steps[1]).toMatchObject({ flags: ['shared'] });
    expect(s.steps[2]).toEqual({ op: 'fork', process: 'p', as: 'child', line: 8 });
    expect(s.steps[4]).toEqual({
      op: 'mprotect',
      process: 'p',
      addr: 'buf',
      page: 2,
      pages: 2,
      prot: 'r',
      line: 10,
    });
    expect(s.steps[5]).toEqual({
      op: 'mremap',
      process: 'p',
      addr: 'buf',
      page: 0,
      pages: 8,
      newPages: 16,
      as: 'moved',
      line: 11,
    });
    expect(s.steps[6]).toMatchObject({ op: 'madvise', advice: 'dontneed', page: 0 });
    expect(s.steps[7]).toEqual({ op: 'exit', process: 'child', line: 13 });
    expect(s.steps[8]).toMatchObject({ addr: 0x10000000, page: 0 });
  });

  it('reports their schema errors at their lines', () => {
    const text = scenario(
      '  - { op: madvise, process: p, addr: 0, pages: 1, advice: free }', // 7
      '  - { op: mprotect, process: p, addr: 0, pages: 1 }', // 8
      '  - { op: exit, process: p, pages: 1 }', // 9
      '  - { op: mremap, process: p, addr: 0, pages: 1, newPages: 0 }', // 10
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 7, 'free')}: steps[1].advice: expected "dontneed", got the string "free"`,
      `${at(text, 8, '{')}: steps[2].prot: missing (expected "none" | "r" | "rw")`,
      `${at(text, 9, 'pages')}: steps[3].pages: unknown key`,
      `${at(text, 10, '0 }')}: steps[4].newPages: expected a number > 0, got 0`,
    ]);
  });

  it('checks the kinds of fork and mremap bindings', () => {
    const text = scenario(
      '  - { op: fork, process: p, as: c }', // 7
      '  - { op: mremap, process: c, addr: 0, pages: 1, as: m }', // 8
      '  - { op: munmap, process: m, addr: c, pages: 1 }', // 9
      '  - { op: fork, process: nobody, as: c }', // 10
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 9, 'm,')}: steps[3].process: "m" is an address (bound by steps[2]), expected a process`,
      `${at(text, 9, 'c,')}: steps[3].addr: "c" is a process (bound by steps[1]), expected an address`,
      `${at(text, 10, 'nobody')}: steps[4].process: unknown binding "nobody" (no earlier step binds it with as: nobody)`,
      `${at(text, 10, 'c }')}: steps[4].as: binding "c" is already bound by steps[1]`,
    ]);
  });
});

describe('hca steps', () => {
  const mr =
    '  - { op: hca.reg_mr, hca: hca0, process: p, addr: buf, page: 1, pages: 4, odp: true, access: [read, write], as: m }';
  const buf = '  - { op: mmap, process: p, pages: 8, prot: rw, as: buf }';

  it('parses reg_mr, rdma_write, rdma_read, prefetch and dereg_mr with their defaults', () => {
    const s = ok(
      scenario(
        buf, // 7
        mr, // 8
        '  - { op: hca.rdma_write, mr: m, value: 5 }', // 9
        '  - { op: hca.rdma_read, mr: m, page: 1, expect: 5 }', // 10
        '  - { op: hca.rdma_read, mr: m, addr: buf, page: 2, expectError: EFAULT }', // 11
        '  - { op: hca.prefetch, mr: m, pages: 4 }', // 12
        '  - { op: hca.prefetch, mr: m, addr: 0x10002000, pages: 1, write: true }', // 13
        '  - { op: hca.dereg_mr, mr: m }', // 14
      ),
    );
    expect(s.steps.slice(2)).toEqual([
      {
        op: 'hca.reg_mr',
        hca: 'hca0',
        process: 'p',
        addr: 'buf',
        page: 1,
        pages: 4,
        odp: true,
        access: ['read', 'write'],
        as: 'm',
        line: 8,
      },
      { op: 'hca.rdma_write', mr: 'm', page: 0, value: 5, line: 9 },
      { op: 'hca.rdma_read', mr: 'm', page: 1, expect: 5, line: 10 },
      {
        op: 'hca.rdma_read',
        mr: 'm',
        addr: 'buf',
        page: 2,
        expectError: 'EFAULT',
        line: 11,
      },
      { op: 'hca.prefetch', mr: 'm', page: 0, pages: 4, write: false, line: 12 },
      { op: 'hca.prefetch', mr: 'm', addr: 0x10002000, page: 0, pages: 1, write: true, line: 13 },
      { op: 'hca.dereg_mr', mr: 'm', line: 14 },
    ]);
  });

  it('reports an hca that is not a configured subscriber, with its line', () => {
    const text = scenario(
      buf, // 7
      '  - { op: hca.reg_mr, hca: hca1, process: p, addr: buf, pages: 1, odp: false, access: [read] }', // 8
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 8, 'hca1')}: steps[2].hca: hca "hca1" is not a configured subscriber of kind hca (config.subscribers has: hca0)`,
    ]);
    const none = [
      'name: t',
      'steps:',
      '  - { op: process.create, as: p }',
      '  - { op: hca.reg_mr, hca: hca0, process: p, addr: 0, pages: 1, odp: true, access: [read] }',
    ].join('\n');
    expect(errorsOf(none)).toEqual([
      `${at(none, 4, 'hca0')}: steps[1].hca: hca "hca0" is not a configured subscriber of kind hca (config.subscribers has none)`,
    ]);
  });

  it('reports MR bindings of the wrong kind or unknown, in both directions', () => {
    const text = scenario(
      buf, // 7
      mr, // 8
      '  - { op: hca.rdma_write, mr: p, value: 1 }', // 9
      '  - { op: hca.dereg_mr, mr: buf }', // 10
      '  - { op: cpu.write, cpu: 0, process: m, addr: m, value: 1 }', // 11
      '  - { op: hca.prefetch, mr: nope, pages: 1 }', // 12
      '  - { op: hca.rdma_read, mr: m, addr: p }', // 13
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 9, 'p,')}: steps[3].mr: "p" is a process (bound by steps[0]), expected a memory region`,
      `${at(text, 10, 'buf')}: steps[4].mr: "buf" is an address (bound by steps[1]), expected a memory region`,
      `${at(text, 11, 'm,')}: steps[5].process: "m" is a memory region (bound by steps[2]), expected a process`,
      `${at(text, 11, 'm, value')}: steps[5].addr: "m" is a memory region (bound by steps[2]), expected an address`,
      `${at(text, 12, 'nope')}: steps[6].mr: unknown binding "nope" (no earlier step binds it with as: nope)`,
      `${at(text, 13, 'p }')}: steps[7].addr: "p" is a process (bound by steps[0]), expected an address`,
    ]);
  });

  it('reports the schema errors of hca steps', () => {
    const text = scenario(
      buf, // 7
      '  - { op: hca.reg_mr, hca: hca0, process: p, addr: buf, pages: 1, odp: yes, access: [], as: m }', // 8
      '  - { op: hca.rdma_read, mr: m, expect: 1, expectError: EFAULT }', // 9
      '  - { op: hca.rdma_write, mr: m }', // 10
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 8, 'yes')}: steps[2].odp: expected a boolean, got the string "yes"`,
      `${at(text, 8, '[]')}: steps[2].access: expected at least 1 item(s)`,
      // m is still known (of unknown kind): no "unknown binding" for it below
      `${at(text, 9, '1,')}: steps[3].expect: expect and expectError exclude each other (a failed read returns no value)`,
      `${at(text, 10, '{')}: steps[4].value: missing (expected a number)`,
    ]);
  });
});

describe('parallel and sleep', () => {
  it('parses nested branches with the line of every step', () => {
    const s = ok(
      scenario(
        '  - op: parallel', // 7
        '    branches:', // 8
        '      - - { op: mmap, process: p, pages: 1, prot: rw, as: a }', // 9
        '        - { op: cpu.write, cpu: 0, process: p, addr: a, value: 1 }', // 10
        '      - - { op: sleep, ms: 5 }', // 11
        '        - op: parallel', // 12
        '          branches: [[{ op: mmap, process: p, pages: 1, prot: r, as: b }]]', // 13
        '  - { op: cpu.read, cpu: 1, process: p, addr: a, expect: 1 }', // 14
        '  - { op: munmap, process: p, addr: b, pages: 1 }', // 15
      ),
    );
    const par = s.steps[1] as Extract<LocatedStep, { op: 'parallel' }>;
    expect(par.op).toBe('parallel');
    expect(par.line).toBe(7);
    const lines = (b: LocatedStep[][]): unknown =>
      b.map((steps) =>
        steps.map((x) =>
          x.op === 'parallel' ? [x.op, x.line, lines(x.branches)] : [x.op, x.line],
        ),
      );
    expect(lines(par.branches)).toEqual([
      [
        ['mmap', 9],
        ['cpu.write', 10],
      ],
      [
        ['sleep', 11],
        ['parallel', 12, [[['mmap', 13]]]],
      ],
    ]);
    expect(par.branches[1][0]).toEqual({ op: 'sleep', ms: 5, line: 11 });
    expect(s.steps.slice(2).map((x) => x.line)).toEqual([14, 15]);
  });

  it('reports a name bound in two branches at the second', () => {
    const text = scenario(
      '  - op: parallel', // 7
      '    branches:', // 8
      '      - [{ op: mmap, process: p, pages: 1, prot: rw, as: a }]', // 9
      '      - [{ op: mmap, process: p, pages: 1, prot: rw, as: a }]', // 10
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 10, 'a }')}: steps[1].branches[1][0].as: binding "a" is also bound by steps[1].branches[0][0]: branches run concurrently, so a name may be bound in one branch only`,
    ]);
  });

  it('reports a branch using a binding of another branch', () => {
    const text = scenario(
      '  - op: parallel', // 7
      '    branches:', // 8
      '      - [{ op: cpu.read, cpu: 0, process: p, addr: late }]', // 9
      '      - [{ op: mmap, process: p, pages: 1, prot: rw, as: late }]', // 10
      '      - [{ op: cpu.read, cpu: 0, process: p, addr: late }]', // 11
    );
    const msg =
      'steps[1].branches[%].addr: "late" is bound by steps[1].branches[1][0], in another branch of a parallel step: branches run concurrently, so one cannot use another\'s bindings';
    expect(errorsOf(text)).toEqual([
      `${at(text, 9, 'late')}: ${msg.replace('%', '0][0')}`,
      `${at(text, 11, 'late')}: ${msg.replace('%', '2][0')}`,
    ]);
  });

  it('reports expectError on a parallel step, an empty block, and a bad sleep', () => {
    const text = scenario(
      '  - { op: parallel, expectError: EFAULT, branches: [[{ op: sleep, ms: 1 }]] }', // 7
      '  - { op: parallel, branches: [] }', // 8
      '  - { op: parallel, branches: [[]] }', // 9
      '  - { op: sleep, ms: -1 }', // 10
      '  - { op: sleep }', // 11
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 7, 'EFAULT')}: steps[1].expectError: a parallel step does not fail by itself: put expectError on the steps inside its branches`,
      `${at(text, 8, '[]')}: steps[2].branches: expected at least 1 item(s)`,
      `${at(text, 9, '[]')}: steps[3].branches[0]: expected at least 1 item(s)`,
      `${at(text, 10, '-1')}: steps[4].ms: expected a number >= 0, got -1`,
      `${at(text, 11, '{')}: steps[5].ms: missing (expected a number)`,
    ]);
  });

  it('reports errors inside branches at their lines, and keeps their bindings known', () => {
    const text = scenario(
      '  - op: parallel', // 7
      '    branches:', // 8
      '      - - { op: mmap, process: p, pages: x, prot: rw, as: a }', // 9
      '        - { op: cpu.write, cpu: 2, process: p, addr: a, value: 1 }', // 10
      '      - - { op: hca.rdma_write, mr: q, value: 1 }', // 11
      '        - { op: forkk }', // 12
      '  - { op: cpu.read, cpu: 0, process: p, addr: a }', // 13
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 9, 'x,')}: steps[1].branches[0][0].pages: expected a number, got the string "x"`,
      `${at(text, 10, '2,')}: steps[1].branches[0][1].cpu: cpu 2 does not exist: config.cpus is 2 (cpus 0..1)`,
      `${at(text, 11, 'q,')}: steps[1].branches[1][0].mr: unknown binding "q" (no earlier step binds it with as: q)`,
      expect.stringMatching(
        new RegExp(
          `^${at(text, 12, 'forkk')}: steps\\[1\\]\\.branches\\[1\\]\\[1\\]\\.op: unknown op "forkk"`,
        ),
      ),
    ]);
  });
});

describe('mm.stall', () => {
  it('parses, and reports a stall that is not a positive number of ms at its line', () => {
    expect(ok(scenario('  - { op: mm.stall, ms: 500 }')).steps[1]).toEqual({
      op: 'mm.stall',
      ms: 500,
      line: 7,
    });
    const text = scenario('  - { op: mm.stall, ms: 0 }', '  - { op: mm.stall, ms: 500, cpu: 1 }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 7, '0')}: steps[1].ms: expected a number > 0, got 0`,
      `${at(text, 8, 'cpu')}: steps[2].cpu: unknown key`,
    ]);
  });
});

describe('chaos, heal, chaos.schedule and the workloads', () => {
  it('parses them, and names the processes of the lab when a target is not one of them', () => {
    const good = ok(
      scenario(
        '  - { op: chaos, target: hca0, fault: pause, ms: 100 }',
        '  - { op: chaos, target: mm-1, fault: kill }',
        '  - { op: chaos, target: mm, fault: kill }',
        '  - { op: chaos, target: redis, fault: restart }',
        "  - { op: chaos, target: hca0, fault: latency, distribution: 'pareto:5:1.5', jitterMs: 3, callbacks: [invalidate_range_start] }",
        '  - { op: chaos, target: hca0, fault: drop-ack }',
        '  - { op: heal, target: mm-1 }',
        '  - { op: heal }',
      ),
    );
    expect(good.steps.slice(1).map((s) => s.op)).toEqual([
      ...Array<string>(6).fill('chaos'),
      'heal',
      'heal',
    ]);
    const text = scenario(
      '  - { op: chaos, target: cpu7, fault: pause }', // 7
      '  - { op: chaos, target: hca0, fault: freeze }', // 8
      '  - { op: chaos, target: cpu0, fault: drop-ack }', // 9
      '  - { op: chaos, target: hca0, fault: latency }', // 10
      '  - { op: chaos, target: hca0, fault: pause, callbacks: [release] }', // 11
    );
    const errors = errorsOf(text);
    expect(errors[0]).toBe(
      `${at(text, 7, 'cpu7')}: steps[1].target: no process "cpu7" in this lab (it runs: mm, mm-0, mm-1, cpu0, cpu1, hca0, nats, redis)`,
    );
    expect(errors[1]).toMatch(
      /^t\.yaml:8:\d+: steps\[2\]\.fault: expected "latency" \| .*"restart", got the string "freeze"$/,
    );
    expect(errors.slice(2)).toEqual([
      `${at(text, 9, 'cpu0')}: steps[3].target: drop-ack is a subscriber's callback fault: "cpu0" is not a subscriber of this lab (it has: hca0)`,
      `${at(text, 10, '{')}: steps[4].distribution: a latency fault needs a distribution`,
      `${at(text, 11, '[')}: steps[5].callbacks: callbacks belong to a subscriber's callback fault, not pause`,
    ]);
  });

  it("checks a schedule's faults and a workload's CPUs, bindings and length", () => {
    const good = ok(
      scenario(
        '  - { op: mmap, process: p, pages: 8, prot: rw, as: buf }',
        '  - { op: workload, cpus: [0, 1], process: p, addr: buf, pages: 8, ops: 10 }',
        '  - { op: chaos.schedule, seed: 1, intervalMs: 100, durationMs: 1000, faults: [{ target: hca0, fault: dup-ack }, { target: nats, fault: pause }] }',
      ),
    );
    expect(good.steps[2]).toMatchObject({ op: 'workload', writeRatio: 0.5, page: 0 });
    const text = scenario(
      '  - { op: mmap, process: p, pages: 8, prot: rw, as: buf }', // 7
      '  - { op: workload, cpus: [0, 2], process: p, addr: buf, pages: 8, ops: 10 }', // 8
      '  - { op: workload, cpus: [0], process: p, addr: nope, pages: 8, ops: 10, durationMs: 5 }', // 9
      '  - { op: chaos.schedule, intervalMs: 100, durationMs: 1000, faults: [{ target: hca1, fault: hang }] }', // 10
      '  - { op: hca.workload, mr: buf, pages: 1, ops: 1 }', // 11
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 8, '[')}: steps[2].cpus: cpu 2 does not exist: config.cpus is 2 (cpus 0..1)`,
      `${at(text, 9, '10')}: steps[3].ops: give exactly one of ops and durationMs`,
      `${at(text, 10, 'hca1')}: steps[4].faults[0].target: hang is a subscriber's callback fault: "hca1" is not a subscriber of this lab (it has: hca0)`,
      `${at(text, 11, 'buf')}: steps[5].mr: "buf" is an address (bound by steps[1]), expected a memory region`,
    ]);
  });
});

describe('kvm steps', () => {
  const kvmScenario = (...steps: string[]): string =>
    [
      'name: t',
      'config:',
      '  subscribers: [{ name: hca0, kind: hca }, { name: kvm0, kind: kvm, mmuLock: sleep }]',
      'steps:',
      '  - { op: process.create, as: p }', // 5
      '  - { op: mmap, process: p, pages: 8, prot: rw, as: ram }', // 6
      ...steps,
      '',
    ].join('\n');

  it('parses create_vm, guest_write, guest_read and destroy_vm with their defaults', () => {
    const s = ok(
      kvmScenario(
        '  - { op: kvm.create_vm, kvm: kvm0, process: p, memslots: [{ gfn: 0, pages: 4, addr: ram, page: 2 }], as: vm }', // 7
        '  - { op: kvm.guest_write, vm: vm, gfn: 1, value: 5 }', // 8
        '  - { op: kvm.guest_read, vm: vm, vcpu: 0, gfn: 1, expect: 5 }', // 9
        '  - { op: kvm.destroy_vm, vm: vm }', // 10
      ),
    );
    expect(s.config.subscribers?.[1]).toEqual({ name: 'kvm0', kind: 'kvm', mmuLock: 'sleep' });
    expect(s.steps.slice(2)).toEqual([
      {
        op: 'kvm.create_vm',
        kvm: 'kvm0',
        process: 'p',
        memslots: [{ gfn: 0, pages: 4, addr: 'ram', page: 2 }],
        vcpus: 1,
        as: 'vm',
        line: 7,
      },
      { op: 'kvm.guest_write', vm: 'vm', vcpu: 0, gfn: 1, value: 5, line: 8 },
      { op: 'kvm.guest_read', vm: 'vm', vcpu: 0, gfn: 1, expect: 5, line: 9 },
      { op: 'kvm.destroy_vm', vm: 'vm', line: 10 },
    ]);
  });

  it('takes a KVM instance as a chaos target: callback faults, process faults, a schedule', () => {
    const s = ok(
      kvmScenario(
        "  - { op: chaos, target: kvm0, fault: latency, distribution: 'uniform:1:5', callbacks: [invalidate_range_start] }",
        '  - { op: chaos, target: kvm0, fault: pause, ms: 100 }',
        '  - { op: chaos.schedule, seed: 1, intervalMs: 100, durationMs: 1000, faults: [{ target: kvm0, fault: drop-ack }, { target: kvm0, fault: kill }] }',
        '  - { op: heal, target: kvm0 }',
      ),
    );
    expect(s.steps.slice(2).map((x) => [x.op, 'target' in x ? x.target : undefined])).toEqual([
      ['chaos', 'kvm0'],
      ['chaos', 'kvm0'],
      ['chaos.schedule', undefined],
      ['heal', 'kvm0'],
    ]);
    const text = kvmScenario('  - { op: chaos, target: kvm1, fault: hang }'); // 7
    expect(errorsOf(text)).toEqual([
      `${at(text, 7, 'kvm1')}: steps[2].target: hang is a subscriber's callback fault: "kvm1" is not a subscriber of this lab (it has: hca0, kvm0)`,
    ]);
  });

  it('reports a kvm that is not a configured kvm, a VM binding used as another kind and the reverse', () => {
    const text = kvmScenario(
      '  - { op: kvm.create_vm, kvm: hca0, process: p, memslots: [{ gfn: 0, pages: 4, addr: ram }], as: vm }', // 7
      '  - { op: kvm.guest_read, vm: ram, gfn: 0 }', // 8
      '  - { op: munmap, process: vm, addr: ram, pages: 1 }', // 9
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 7, 'hca0')}: steps[2].kvm: kvm "hca0" is not a configured subscriber of kind kvm (config.subscribers has: kvm0)`,
      `${at(text, 8, 'ram')}: steps[3].vm: "ram" is an address (bound by steps[1]), expected a VM`,
      `${at(text, 9, 'vm,')}: steps[4].process: "vm" is a VM (bound by steps[2]), expected a process`,
    ]);
  });

  it('parses kvm.workload with its defaults; checks its VM binding and its length', () => {
    const s = ok(
      kvmScenario(
        '  - { op: kvm.create_vm, kvm: kvm0, process: p, memslots: [{ gfn: 0, pages: 8, addr: ram }], vcpus: 2, as: vm }', // 7
        '  - { op: kvm.workload, vm: vm, vcpus: 2, gfn: 0, pages: 8, durationMs: 500 }', // 8
      ),
    );
    expect(s.steps[3]).toEqual({
      op: 'kvm.workload',
      vm: 'vm',
      vcpus: 2,
      gfn: 0,
      pages: 8,
      durationMs: 500,
      writeRatio: 0.5,
      line: 8,
    });
    const text = kvmScenario(
      '  - { op: kvm.create_vm, kvm: kvm0, process: p, memslots: [{ gfn: 0, pages: 8, addr: ram }], as: vm }', // 7
      '  - { op: kvm.workload, vm: ram, gfn: 0, pages: 8, ops: 10 }', // 8
      '  - { op: kvm.workload, vm: vm, gfn: 0, pages: 8, ops: 10, durationMs: 5 }', // 9
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 8, 'ram')}: steps[3].vm: "ram" is an address (bound by steps[1]), expected a VM`,
      `${at(text, 9, '10')}: steps[4].ops: give exactly one of ops and durationMs`,
    ]);
  });
});
