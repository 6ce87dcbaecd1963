/**
 * Static checks a schema cannot express: bindings are defined before they are used and of
 * the right kind, every CPU and HCA named by a step exists in the configured lab, and the
 * branches of a parallel step do not depend on each other's bindings.
 *
 * Runs over the raw steps, each checked against the Step schema on its own: a step that fails
 * it still defines its `as` name (of unknown kind), so one typo is reported once, not again at
 * every later use; a parallel step whose branches hold a bad step is still walked into.
 *
 * Scopes: steps of one list see the bindings of the steps before them (and of the enclosing
 * lists); a branch of a parallel step sees the bindings made before the parallel step and
 * earlier in the same branch, never those of another branch (branches run concurrently);
 * after the parallel step every binding made in any branch is visible, and a name bound in
 * two branches is an error.
 */
import { type ChaosFault, PROCESS_FAULTS, Step, ksmRangesOf } from './schema';

/**
 * Why `fault` cannot hit `target` in a lab of this config, or undefined. Process faults hit
 * any process of a local lab (mm-N, `mm`, cpuN, a subscriber, nats, redis); callback faults
 * only a subscriber. (The lab's HTTP API asks the same of the lab it runs.)
 */
export function faultTargetProblem(
  target: string,
  fault: ChaosFault,
  lab: { cpus: number; mmReplicas?: number; subscribers?: ReadonlyArray<{ name: string }> },
): string | undefined {
  const subs = (lab.subscribers ?? []).map((x) => x.name);
  const processes = [
    'mm',
    ...Array.from({ length: lab.mmReplicas ?? 2 }, (_, i) => `mm-${i}`),
    ...Array.from({ length: lab.cpus }, (_, i) => `cpu${i}`),
    ...subs,
    'nats',
    'redis',
  ];
  if (!(PROCESS_FAULTS as readonly string[]).includes(fault))
    return subs.includes(target)
      ? undefined
      : `${fault} is a subscriber's callback fault: "${target}" is not a subscriber of this lab (it has: ${subs.join(', ') || 'none'})`;
  return processes.includes(target)
    ? undefined
    : `no process "${target}" in this lab (it runs: ${processes.join(', ')})`;
}

/**
 * What a binding holds: a pid (process.create, fork), an address (mmap, mremap), an MR, a VM, a
 * file (file.create).
 */
export type BindingKind = 'process' | 'addr' | 'mr' | 'vm' | 'file';

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

/** `steps[3].branches[0][1].cpu` */
export function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((seg, i) =>
      typeof seg === 'number' ? `[${seg}]` : i === 0 ? String(seg) : `.${String(seg)}`,
    )
    .join('');
}

const addrUse = (addr: number | string | undefined): StepBindings['uses'] =>
  typeof addr === 'string' ? [{ field: 'addr', name: addr, kind: 'addr' }] : [];
const processUse = (name: string): StepBindings['uses'] => [
  { field: 'process', name, kind: 'process' },
];
const mrUse = (name: string): StepBindings['uses'] => [{ field: 'mr', name, kind: 'mr' }];
const vmUse = (name: string): StepBindings['uses'] => [{ field: 'vm', name, kind: 'vm' }];
const define = (name: string | undefined, kind: BindingKind): StepBindings['defines'] =>
  name === undefined ? undefined : { name, kind };

/**
 * Which bindings a step defines and reads. Every step kind must say (exhaustive switch).
 * A parallel step itself binds and reads nothing: its branches' steps do (checkSteps).
 */
export function stepBindings(s: Step): StepBindings {
  switch (s.op) {
    case 'process.create':
      return { defines: define(s.as, 'process'), uses: [] };
    case 'mmap':
      return {
        defines: define(s.as, 'addr'),
        uses: [
          ...processUse(s.process),
          ...(s.file === undefined ? [] : [{ field: 'file', name: s.file, kind: 'file' as const }]),
        ],
      };
    case 'file.create':
      return { defines: define(s.as, 'file'), uses: [] };
    case 'file.write':
    case 'file.read':
      return { uses: [{ field: 'file', name: s.file, kind: 'file' }] };
    case 'fork':
      return { defines: define(s.as, 'process'), uses: processUse(s.process) };
    case 'mremap':
      return {
        defines: define(s.as, 'addr'),
        uses: [...processUse(s.process), ...addrUse(s.addr)],
      };
    case 'hca.reg_mr':
      return { defines: define(s.as, 'mr'), uses: [...processUse(s.process), ...addrUse(s.addr)] };
    case 'munmap':
    case 'msync':
    case 'remap_file_pages':
    case 'thp.split':
    case 'thp.collapse':
    case 'workload':
    case 'cpu.read':
    case 'cpu.write':
    case 'mprotect':
    case 'madvise':
      return { uses: [...processUse(s.process), ...addrUse(s.addr)] };
    case 'exit':
      return { uses: processUse(s.process) };
    case 'hca.dereg_mr':
      return { uses: mrUse(s.mr) };
    case 'dev.attach':
    case 'dev.detach':
      return { uses: processUse(s.process) };
    case 'dev.read':
    case 'dev.write':
      return { uses: [...processUse(s.process), ...addrUse(s.addr)] };
    case 'hca.rdma_write':
    case 'hca.rdma_read':
    case 'hca.prefetch':
      return { uses: [...mrUse(s.mr), ...addrUse(s.addr)] };
    case 'hca.workload':
      return { uses: mrUse(s.mr) };
    case 'kvm.create_vm':
      return {
        defines: define(s.as, 'vm'),
        uses: [
          ...processUse(s.process),
          ...s.memslots.flatMap((m) => addrUse(m.addr)).map((u) => ({ ...u, field: 'memslots' })),
        ],
      };
    case 'kvm.destroy_vm':
    case 'kvm.guest_write':
    case 'kvm.guest_read':
    case 'kvm.workload':
      return { uses: vmUse(s.vm) };
    case 'ksm.merge':
      return {
        uses: ksmRangesOf(s).flatMap((r) =>
          [...processUse(r.process), ...addrUse(r.addr)].map((u) =>
            s.ranges ? { ...u, field: 'ranges' } : u,
          ),
        ),
      };
    case 'parallel':
    case 'chaos.schedule':
    case 'reclaim':
    case 'sleep':
    case 'mm.stall':
    case 'mm.lose_lease':
    case 'trace.wait':
    case 'chaos':
    case 'heal':
      return { uses: [] };
  }
}

/** The parts of the configured lab a step names: CPUs, an HCA, fault targets. */
function stepTargets(s: Step): {
  cpus?: number[];
  hca?: string;
  kvm?: string;
  dev?: string;
  faults?: Array<{ target: string; fault: ChaosFault; path: PropertyKey[] }>;
} {
  switch (s.op) {
    case 'cpu.read':
    case 'cpu.write':
      return { cpus: [s.cpu] };
    case 'workload':
      return { cpus: s.cpus };
    case 'hca.reg_mr':
      return { hca: s.hca };
    case 'kvm.create_vm':
      return { kvm: s.kvm };
    case 'dev.attach':
    case 'dev.detach':
    case 'dev.read':
    case 'dev.write':
      return { dev: s.dev };
    case 'kvm.destroy_vm':
    case 'kvm.guest_write':
    case 'kvm.guest_read':
    case 'process.create':
    case 'mmap':
    case 'munmap':
    case 'fork':
    case 'mprotect':
    case 'mremap':
    case 'madvise':
    case 'exit':
    case 'reclaim':
    case 'ksm.merge':
    case 'file.create':
    case 'file.write':
    case 'file.read':
    case 'msync':
    case 'remap_file_pages':
    case 'thp.split':
    case 'thp.collapse':
    case 'hca.dereg_mr':
    case 'hca.rdma_write':
    case 'hca.rdma_read':
    case 'hca.prefetch':
    case 'parallel':
    case 'sleep':
    case 'mm.stall':
    case 'mm.lose_lease':
    case 'trace.wait':
    case 'heal':
    case 'hca.workload':
    case 'kvm.workload':
      return {};
    case 'chaos':
      return { faults: [{ target: s.target, fault: s.fault, path: ['target'] }] };
    case 'chaos.schedule':
      return {
        faults: s.faults.map((f, i) => ({
          target: f.target,
          fault: f.fault,
          path: ['faults', i, 'target'],
        })),
      };
  }
}

/** The value a step's `expect` compares with, if the step has one. */
export function stepExpect(s: Step): number | undefined {
  return s.op === 'cpu.read' ||
    s.op === 'dev.read' ||
    s.op === 'hca.rdma_read' ||
    s.op === 'kvm.guest_read' ||
    s.op === 'file.read'
    ? s.expect
    : undefined;
}

/** Subscriber names are unique (they are instance names): the second use is the error. */
export function checkSubscribers(raw: unknown): PathIssue[] {
  if (!Array.isArray(raw)) return [];
  const issues: PathIssue[] = [];
  const first = new Map<string, number>();
  raw.forEach((x: unknown, i) => {
    const name = (typeof x === 'object' && x !== null ? x : {}) as { name?: unknown };
    if (typeof name.name !== 'string') return;
    const prev = first.get(name.name);
    if (prev === undefined) first.set(name.name, i);
    else
      issues.push({
        path: ['config', 'subscribers', i, 'name'],
        message: `subscriber "${name.name}" is already configured by config.subscribers[${prev}]`,
      });
  });
  return issues;
}

export interface CheckInput {
  /** config.steps as written (each entry is checked against Step here) */
  steps: readonly unknown[];
  /** config.cpus, when the config is valid */
  cpus: number | undefined;
  /** config.subscribers (name and kind), when they can be read */
  subscribers: ReadonlyArray<{ name: string; kind: string }> | undefined;
  /** config.mmReplicas, when the config is valid */
  mmReplicas?: number;
}

const KIND_NAME: Record<BindingKind, string> = {
  process: 'a process',
  addr: 'an address',
  mr: 'a memory region',
  vm: 'a VM',
  file: 'a file',
};

interface Bound {
  kind: BindingKind | 'unknown';
  path: PropertyKey[];
}
type Scope = Map<string, Bound>;

/** The raw value as { op: 'parallel', branches: unknown[][] }, if it is shaped like one. */
function rawParallel(raw: unknown): { branches: unknown[]; expectError?: unknown } | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as { op?: unknown; branches?: unknown; expectError?: unknown };
  return r.op === 'parallel' && Array.isArray(r.branches)
    ? { branches: r.branches as unknown[], expectError: r.expectError }
    : undefined;
}

/** Every `as` name written anywhere in a raw step list (nested branches included), with its step's path. */
function namesBoundIn(
  raws: readonly unknown[],
  base: PropertyKey[],
  out = new Map<string, PropertyKey[]>(),
): Map<string, PropertyKey[]> {
  raws.forEach((raw, i) => {
    const p = rawParallel(raw);
    if (p)
      p.branches.forEach((b, bi) => {
        if (Array.isArray(b)) namesBoundIn(b, [...base, i, 'branches', bi], out);
      });
    const as = (raw as { as?: unknown } | null)?.as;
    if (!p && typeof as === 'string' && !out.has(as)) out.set(as, [...base, i]);
  });
  return out;
}

export function checkSteps({ steps, cpus, subscribers, mmReplicas }: CheckInput): PathIssue[] {
  const issues: PathIssue[] = [];
  const hcas = subscribers?.filter((s) => s.kind === 'hca').map((s) => s.name);
  const kvms = subscribers?.filter((s) => s.kind === 'kvm').map((s) => s.name);
  const devs = subscribers?.filter((s) => s.kind === 'external').map((s) => s.name);

  /**
   * Check one step list in order, adding its bindings to scope. `elsewhere`: names bound in
   * the sibling branches of every enclosing parallel step (for a better message).
   */
  const checkList = (
    raws: readonly unknown[],
    base: PropertyKey[],
    scope: Scope,
    elsewhere: Map<string, PropertyKey[]>,
  ): void => {
    raws.forEach((raw, i) => {
      const path = [...base, i];
      const par = rawParallel(raw);
      if (par) {
        checkParallel(par, path, scope, elsewhere);
        return;
      }
      const parsed = Step.safeParse(raw);
      if (!parsed.success) {
        const as = (raw as { as?: unknown } | null)?.as;
        if (typeof as === 'string' && !scope.has(as)) scope.set(as, { kind: 'unknown', path });
        return;
      }
      checkStep(parsed.data, path, scope, elsewhere);
    });
  };

  const checkStep = (
    s: Step,
    path: PropertyKey[],
    scope: Scope,
    elsewhere: Map<string, PropertyKey[]>,
  ): void => {
    const { defines, uses } = stepBindings(s);
    for (const u of uses) {
      const b = scope.get(u.name);
      const other = elsewhere.get(u.name);
      if (!b && other)
        issues.push({
          path: [...path, u.field],
          message: `"${u.name}" is bound by ${formatPath(other)}, in another branch of a parallel step: branches run concurrently, so one cannot use another's bindings`,
        });
      else if (!b)
        issues.push({
          path: [...path, u.field],
          message: `unknown binding "${u.name}" (no earlier step binds it with as: ${u.name})`,
        });
      else if (b.kind !== 'unknown' && b.kind !== u.kind)
        issues.push({
          path: [...path, u.field],
          message: `"${u.name}" is ${KIND_NAME[b.kind]} (bound by ${formatPath(b.path)}), expected ${KIND_NAME[u.kind]}`,
        });
    }
    if (defines) {
      const prev = scope.get(defines.name);
      if (prev)
        issues.push({
          path: [...path, 'as'],
          message: `binding "${defines.name}" is already bound by ${formatPath(prev.path)}`,
        });
      else scope.set(defines.name, { kind: defines.kind, path });
    }
    const { cpus: named, hca, kvm, dev, faults } = stepTargets(s);
    if (dev !== undefined && devs !== undefined && !devs.includes(dev))
      issues.push({
        path: [...path, 'dev'],
        message:
          `dev "${dev}" is not a configured subscriber of kind external ` +
          (devs.length > 0
            ? `(config.subscribers has: ${devs.join(', ')})`
            : '(config.subscribers has none)'),
      });
    if (cpus !== undefined)
      for (const f of faults ?? []) {
        const problem = faultTargetProblem(f.target, f.fault, { cpus, mmReplicas, subscribers });
        if (problem) issues.push({ path: [...path, ...f.path], message: problem });
      }
    for (const cpu of named ?? [])
      if (cpus !== undefined && cpu >= cpus)
        issues.push({
          path: [...path, s.op === 'workload' ? 'cpus' : 'cpu'],
          message: `cpu ${cpu} does not exist: config.cpus is ${cpus} (cpus 0..${cpus - 1})`,
        });
    if (hca !== undefined && hcas !== undefined && !hcas.includes(hca))
      issues.push({
        path: [...path, 'hca'],
        message:
          `hca "${hca}" is not a configured subscriber of kind hca ` +
          (hcas.length > 0
            ? `(config.subscribers has: ${hcas.join(', ')})`
            : '(config.subscribers has none)'),
      });
    if (kvm !== undefined && kvms !== undefined && !kvms.includes(kvm))
      issues.push({
        path: [...path, 'kvm'],
        message:
          `kvm "${kvm}" is not a configured subscriber of kind kvm ` +
          (kvms.length > 0
            ? `(config.subscribers has: ${kvms.join(', ')})`
            : '(config.subscribers has none)'),
      });
    if (stepExpect(s) !== undefined && s.expectError !== undefined)
      issues.push({
        path: [...path, 'expect'],
        message: 'expect and expectError exclude each other (a failed read returns no value)',
      });
  };

  const checkParallel = (
    par: { branches: unknown[]; expectError?: unknown },
    path: PropertyKey[],
    scope: Scope,
    elsewhere: Map<string, PropertyKey[]>,
  ): void => {
    if (par.expectError !== undefined)
      issues.push({
        path: [...path, 'expectError'],
        message:
          'a parallel step does not fail by itself: put expectError on the steps inside its branches',
      });
    const branches = par.branches.map((b) => (Array.isArray(b) ? (b as unknown[]) : []));
    const boundIn = branches.map((b, bi) => namesBoundIn(b, [...path, 'branches', bi]));
    /** names made by the branches walked so far, with where */
    const made = new Map<string, Bound>();
    branches.forEach((branch, bi) => {
      const bpath = [...path, 'branches', bi];
      const branchScope: Scope = new Map(scope);
      // Names the other branches bind (found by a first look at their `as` keys).
      const others = new Map(elsewhere);
      boundIn.forEach((names, oi) => {
        if (oi === bi) return;
        for (const [n, where] of names) if (!others.has(n)) others.set(n, where);
      });
      checkList(branch, bpath, branchScope, others);
      for (const [name, b] of branchScope) {
        if (scope.has(name)) continue; // bound before the parallel step
        const first = made.get(name);
        if (first)
          issues.push({
            path: [...b.path, 'as'],
            message: `binding "${name}" is also bound by ${formatPath(first.path)}: branches run concurrently, so a name may be bound in one branch only`,
          });
        else made.set(name, b);
      }
    });
    for (const [name, b] of made) scope.set(name, b);
  };

  checkList(steps, ['steps'], new Map(), new Map());
  return issues;
}
