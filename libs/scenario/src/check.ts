/**
 * Static checks a schema cannot express: bindings are defined before they are used and of
 * the right kind, and every CPU named by a step exists in the configured lab.
 *
 * Runs over the steps that passed the schema; a step that did not still defines its `as`
 * name (of unknown kind), so one typo is reported once, not again at every later use.
 */
import type { Step } from './schema';

/** What a binding holds: process.create binds a pid, mmap a start address. */
export type BindingKind = 'process' | 'addr';

/** An error at a path of the scenario document (parse.ts turns the path into a line). */
export interface PathIssue {
  path: PropertyKey[];
  message: string;
}

export interface StepBindings {
  /** the name this step binds, and to what */
  defines?: { name: string; kind: BindingKind };
  /** the names this step reads: field → name and the kind the field needs */
  uses: Array<{ field: string; name: string; kind: BindingKind }>;
}

const addrUse = (addr: number | string): StepBindings['uses'] =>
  typeof addr === 'string' ? [{ field: 'addr', name: addr, kind: 'addr' }] : [];

/** Which bindings a step defines and reads. Every step kind must say (exhaustive switch). */
export function stepBindings(s: Step): StepBindings {
  switch (s.op) {
    case 'process.create':
      return { defines: s.as ? { name: s.as, kind: 'process' } : undefined, uses: [] };
    case 'mmap':
      return {
        defines: s.as ? { name: s.as, kind: 'addr' } : undefined,
        uses: [{ field: 'process', name: s.process, kind: 'process' }],
      };
    case 'munmap':
    case 'cpu.read':
    case 'cpu.write':
      return { uses: [{ field: 'process', name: s.process, kind: 'process' }, ...addrUse(s.addr)] };
  }
}

/** The CPU a step runs on, if it names one. */
function stepCpu(s: Step): number | undefined {
  switch (s.op) {
    case 'cpu.read':
    case 'cpu.write':
      return s.cpu;
    case 'process.create':
    case 'mmap':
    case 'munmap':
      return undefined;
  }
}

export interface CheckInput {
  /** every entry of `steps`: the parsed step, or the raw value when it failed the schema */
  steps: Array<{ ok: true; step: Step } | { ok: false; raw: unknown }>;
  /** config.cpus, when the config is valid */
  cpus: number | undefined;
}

export function checkSteps({ steps, cpus }: CheckInput): PathIssue[] {
  const issues: PathIssue[] = [];
  const bound = new Map<string, { kind: BindingKind | 'unknown'; index: number }>();
  steps.forEach((entry, i) => {
    if (!entry.ok) {
      const as = (entry.raw as { as?: unknown } | null)?.as;
      if (typeof as === 'string' && !bound.has(as)) bound.set(as, { kind: 'unknown', index: i });
      return;
    }
    const s = entry.step;
    const { defines, uses } = stepBindings(s);
    for (const u of uses) {
      const b = bound.get(u.name);
      if (!b)
        issues.push({
          path: ['steps', i, u.field],
          message: `unknown binding "${u.name}" (no earlier step binds it with as: ${u.name})`,
        });
      else if (b.kind !== 'unknown' && b.kind !== u.kind)
        issues.push({
          path: ['steps', i, u.field],
          message: `"${u.name}" is ${b.kind === 'process' ? 'a process' : 'an address'} (bound by steps[${b.index}]), expected ${u.kind === 'process' ? 'a process' : 'an address'}`,
        });
    }
    if (defines) {
      const prev = bound.get(defines.name);
      if (prev)
        issues.push({
          path: ['steps', i, 'as'],
          message: `binding "${defines.name}" is already bound by steps[${prev.index}]`,
        });
      else bound.set(defines.name, { kind: defines.kind, index: i });
    }
    const cpu = stepCpu(s);
    if (cpu !== undefined && cpus !== undefined && cpu >= cpus)
      issues.push({
        path: ['steps', i, 'cpu'],
        message: `cpu ${cpu} does not exist: config.cpus is ${cpus} (cpus 0..${cpus - 1})`,
      });
    if (s.op === 'cpu.read' && s.expect !== undefined && s.expectError !== undefined)
      issues.push({
        path: ['steps', i, 'expect'],
        message: 'expect and expectError exclude each other (a failed read returns no value)',
      });
  });
  return issues;
}
