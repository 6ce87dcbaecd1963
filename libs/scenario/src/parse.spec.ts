import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseScenario } from './parse';
import { STEP_OPS } from './schema';
import { INVARIANT_NAMES } from '@mmlab/checker';

const example = readFileSync(path.join(__dirname, '../../../examples/anon-basic.yaml'), 'utf8');

/** A scenario whose line N (1-based) is lines[N - 1]: lines 1-4 are the header. */
const scenario = (...steps: string[]): string =>
  [
    'name: t',
    'config: { cpus: 2 }',
    'steps:',
    '  - { op: process.create, as: p }',
    ...steps,
    '',
  ].join('\n');

/** `file:line:col` of the first `token` on `line` of `text`: where an error must point. */
function at(text: string, line: number, token: string, file = 't.yaml'): string {
  const col = text.split('\n')[line - 1].indexOf(token) + 1;
  if (col === 0) throw new Error(`no ${token} on line ${line}`);
  return `${file}:${line}:${col}`;
}

function errorsOf(text: string, file = 't.yaml'): string[] {
  const r = parseScenario(text, file);
  if (r.ok) throw new Error('expected errors, the scenario parsed');
  return r.errors;
}

describe(parseScenario.name, () => {
  it('parses examples/anon-basic.yaml with its lines, bindings and defaults', () => {
    const r = parseScenario(example, 'anon-basic.yaml');
    if (!r.ok) throw new Error(r.errors.join('\n'));
    const s = r.scenario;
    expect(s.name).toBe('anon-basic');
    expect(s.seed).toBe(1);
    expect(s.config).toEqual({ mode: 'patched', frames: 256, cpus: 2, mmReplicas: 2 });
    expect(s.expect).toEqual({ violations: [], fsck: [] });
    expect(s.steps.map((x) => x.op)).toEqual([
      'process.create',
      'mmap',
      'cpu.write',
      'cpu.read',
      'cpu.read',
      'mmap',
      'cpu.read',
      'munmap',
    ]);
    expect(s.steps.map((x) => x.line)).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
    expect(s.steps[1]).toMatchObject({
      op: 'mmap',
      process: 'p',
      pages: 16,
      prot: 'rw',
      flags: [],
      as: 'buf',
    });
    expect(s.steps[3]).toMatchObject({ op: 'cpu.read', cpu: 1, addr: 'buf', page: 3, expect: 42 });
    expect(s.steps[6]).toMatchObject({
      op: 'cpu.read',
      addr: 'guard',
      page: 0,
      expectError: 'SIGSEGV',
    });
  });

  it('fills config defaults and accepts numeric and hex addresses', () => {
    const r = parseScenario(
      [
        'name: d',
        'steps:',
        '  - { op: process.create, as: p }',
        '  - { op: cpu.read, cpu: 1, process: p, addr: 0x10000000 }',
        '  - { op: cpu.read, cpu: 1, process: p, addr: "0x10001000" }',
        '  - { op: cpu.write, cpu: 0, process: p, addr: 268443648, value: -1 }',
      ].join('\n'),
      'd.yaml',
    );
    if (!r.ok) throw new Error(r.errors.join('\n'));
    expect(r.scenario.config).toEqual({ mode: 'patched', frames: 256, cpus: 2, mmReplicas: 2 });
    expect(r.scenario.seed).toBeUndefined();
    expect(r.scenario.steps.slice(1).map((x) => 'addr' in x && x.addr)).toEqual([
      0x10000000, 0x10001000, 0x10002000,
    ]);
  });

  it('reports an unknown op at its line', () => {
    const text = scenario('  - { op: mmapp, process: p, pages: 1, prot: rw }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, 'mmapp')}: steps[1].op: unknown op "mmapp" (one of: ${STEP_OPS.join(', ')})`,
    ]);
  });

  it('reports a missing field at the step that lacks it', () => {
    const text = scenario('  - { op: mmap, process: p, prot: rw }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '{')}: steps[1].pages: missing (expected a number)`,
    ]);
  });

  it('reports a missing op', () => {
    const text = scenario('  - { process: p }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '{')}: steps[1].op: missing op (one of: ${STEP_OPS.join(', ')})`,
    ]);
  });

  it('reports a wrong type at the value, with line and column', () => {
    const text = scenario('  - op: cpu.read', '    cpu: one', '    process: p', '    addr: 4096');
    expect(errorsOf(text)).toEqual([
      't.yaml:6:10: steps[1].cpu: expected a number, got the string "one"',
    ]);
  });

  it('parses the waits and the lost lease: trace.wait with its defaults, mm.lose_lease', () => {
    const r = parseScenario(
      scenario(
        '  - { op: mm.lose_lease, at: do_wp_page.ptl_held }',
        '  - { op: trace.wait, event: npf.delay, instance: hca0 }',
        '  - { op: trace.wait, event: crash.point, count: 2, timeoutMs: 5000 }',
      ),
      't.yaml',
    );
    if (!r.ok) throw new Error(r.errors.join('\n'));
    expect(r.scenario.steps.slice(1)).toEqual([
      { op: 'mm.lose_lease', at: 'do_wp_page.ptl_held', line: 5 },
      { op: 'trace.wait', event: 'npf.delay', instance: 'hca0', count: 1, line: 6 },
      { op: 'trace.wait', event: 'crash.point', count: 2, timeoutMs: 5000, line: 7 },
    ]);
  });

  it('reports a trace.wait for an event kind that does not exist, and a malformed crash point', () => {
    const text = scenario(
      '  - { op: trace.wait, event: npf.stall }',
      '  - { op: mm.lose_lease, at: do_wp_page }',
    );
    const errs = errorsOf(text);
    expect(errs).toHaveLength(2);
    expect(errs[0]).toMatch(
      new RegExp(`^${at(text, 5, 'npf.stall')}: steps\\[1\\]\\.event: .*npf\\.delay`),
    );
    expect(errs[1]).toBe(
      `${at(text, 6, 'do_wp_page')}: steps[2].at: expected a crash point: <syscall>.<step>`,
    );
  });

  it('reports a misspelt key as unknown, at the key', () => {
    const text = scenario('  - { op: munmap, process: p, adr: 4096, addr: 4096, pages: 1 }');
    expect(errorsOf(text)).toEqual([`${at(text, 5, 'adr')}: steps[1].adr: unknown key`]);
  });

  it('reports a binding used before it is defined', () => {
    const text = scenario(
      '  - { op: cpu.write, cpu: 0, process: p, addr: buf, value: 1 }',
      '  - { op: mmap, process: p, pages: 1, prot: rw, as: buf }',
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, 'buf')}: steps[1].addr: unknown binding "buf" (no earlier step binds it with as: buf)`,
    ]);
  });

  it('reports an unknown process binding and a binding of the wrong kind', () => {
    const text = scenario(
      '  - { op: mmap, process: q, pages: 1, prot: rw, as: buf }',
      '  - { op: cpu.read, cpu: 0, process: buf, addr: p }',
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, 'q')}: steps[1].process: unknown binding "q" (no earlier step binds it with as: q)`,
      `${at(text, 6, 'buf')}: steps[2].process: "buf" is an address (bound by steps[1]), expected a process`,
      `${at(text, 6, 'p }')}: steps[2].addr: "p" is a process (bound by steps[0]), expected an address`,
    ]);
  });

  it('reports a binding defined twice', () => {
    const text = scenario('  - { op: process.create, as: p }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, 'p }')}: steps[1].as: binding "p" is already bound by steps[0]`,
    ]);
  });

  it('reports a cpu that the config does not have', () => {
    const text = scenario('  - { op: cpu.read, cpu: 2, process: p, addr: 4096 }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '2')}: steps[1].cpu: cpu 2 does not exist: config.cpus is 2 (cpus 0..1)`,
    ]);
  });

  it('reports a bad hex address', () => {
    const text = scenario('  - { op: cpu.read, cpu: 0, process: p, addr: 0x1000g }');
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '0x1000g')}: steps[1].addr: bad hex address "0x1000g" (expected 0x followed by hex digits)`,
    ]);
  });

  it('reports an invariant name that is not one of the eight', () => {
    const text = [
      'name: t',
      'steps:',
      '  - { op: process.create }',
      'expect:',
      '  violations: [paired-range, no-sleep]',
    ].join('\n');
    const errs = errorsOf(text);
    expect(errs).toHaveLength(1);
    expect(errs[0].startsWith(`${at(text, 5, 'no-sleep')}: expect.violations[1]: expected `)).toBe(
      true,
    );
    for (const n of INVARIANT_NAMES) expect(errs[0]).toContain(`"${n}"`);
    expect(errs[0]).toContain('got the string "no-sleep"');
  });

  it('reports expect together with expectError', () => {
    const text = scenario(
      '  - { op: cpu.read, cpu: 0, process: p, addr: 0, expect: 1, expectError: SIGSEGV }',
    );
    expect(errorsOf(text)).toEqual([
      `${at(text, 5, '1,')}: steps[1].expect: expect and expectError exclude each other (a failed read returns no value)`,
    ]);
  });

  it('reports an unknown error code in expectError', () => {
    const text = scenario('  - { op: process.create, expectError: SIGILL }');
    const errs = errorsOf(text);
    expect(errs).toHaveLength(1);
    expect(
      errs[0].startsWith(`${at(text, 5, 'SIGILL')}: steps[1].expectError: expected "EBADMSG" | `),
    ).toBe(true);
    expect(errs[0]).toContain('"SIGSEGV"');
  });

  it('reports every error of a file at once, in file order', () => {
    const text = [
      'name: many', // 1
      'config: { mode: pached, cpus: 1 }', // 2
      'steps:', // 3
      '  - { op: process.create, as: p }', // 4
      '  - { op: cpu.write, cpu: 1, process: p, addr: buf, value: 1 }', // 5
      '  - { op: mmap, process: p, pages: x, prot: rw }', // 6
      '  - { op: forkk }', // 7
      'expect: { violations: [bogus] }', // 8
    ].join('\n');
    const here = (line: number, token: string) => at(text, line, token, 'many.yaml');
    expect(errorsOf(text, 'many.yaml')).toEqual([
      `${here(2, 'pached')}: config.mode: expected "patched" | "legacy", got the string "pached"`,
      `${here(5, '1,')}: steps[1].cpu: cpu 1 does not exist: config.cpus is 1 (cpus 0..0)`,
      `${here(5, 'buf')}: steps[1].addr: unknown binding "buf" (no earlier step binds it with as: buf)`,
      `${here(6, 'x,')}: steps[2].pages: expected a number, got the string "x"`,
      expect.stringMatching(
        new RegExp(`^${here(7, 'forkk')}: steps\\[3\\]\\.op: unknown op "forkk"`),
      ),
      expect.stringMatching(
        new RegExp(`^${here(8, 'bogus')}: expect\\.violations\\[0\\]: expected `),
      ),
    ]);
  });

  it('reports YAML syntax errors with their line and stops there', () => {
    const errs = errorsOf('name: x\nsteps:\n  - { op: process.create\n  - { op: mmap }\n');
    expect(errs.length).toBeGreaterThan(0);
    for (const e of errs) expect(e).toMatch(/^t\.yaml:\d+:\d+: /);
    expect(errorsOf('name: x\nname: y\nsteps: []\n')).toEqual([
      't.yaml:2:1: Map keys must be unique',
    ]);
  });

  it('rejects a document that is not a mapping', () => {
    expect(errorsOf('')).toEqual(['t.yaml:1:1: expected a mapping, got null']);
    expect(errorsOf('- 1\n')).toEqual(['t.yaml:1:1: expected a mapping, got a list']);
  });
});

describe('config.kernel (the era; mode is its alias)', () => {
  const withConfig = (config: string): string =>
    ['name: k', `config: ${config}`, 'steps:', '  - { op: process.create, as: p }'].join('\n');
  const configOf = (config: string) => {
    const r = parseScenario(withConfig(config), 't.yaml');
    if (!r.ok) throw new Error(r.errors.join('\n'));
    return r.scenario.config;
  };

  it('gives kernel v3.6 the mode legacy and v3.7 patched', () => {
    expect(configOf('{ kernel: v3.6 }')).toMatchObject({ mode: 'legacy', kernel: 'v3.6' });
    expect(configOf('{ kernel: v3.7 }')).toMatchObject({ mode: 'patched', kernel: 'v3.7' });
    expect(configOf('{ mode: legacy }').mode).toBe('legacy');
    expect(configOf('{ mode: legacy, kernel: v3.6 }').mode).toBe('legacy');
  });

  it('refuses a kernel and a mode that disagree, and an unknown kernel', () => {
    expect(errorsOf(withConfig('{ mode: patched, kernel: v3.6 }')).join('\n')).toMatch(
      /kernel v3\.6 is mode legacy, but mode says patched/,
    );
    expect(errorsOf(withConfig('{ kernel: v5.19 }')).join('\n')).toMatch(/kernel/);
  });

  it('takes thp, hugePageOrder and hugetlbPages and refuses them out of range', () => {
    expect(configOf('{ thp: always, hugePageOrder: 4, hugetlbPages: 2 }')).toMatchObject({
      thp: 'always',
      hugePageOrder: 4,
      hugetlbPages: 2,
    });
    expect(errorsOf(withConfig('{ thp: sometimes }')).join('\n')).toMatch(/thp/);
    expect(errorsOf(withConfig('{ hugePageOrder: 0 }')).join('\n')).toMatch(/hugePageOrder/);
  });
});
