/**
 * parseScenario: YAML text → a checked Scenario, or every error found, each naming the line
 * and column of the offending node: `anon-basic.yaml:7:5: steps[3].cpu: expected a number`.
 *
 * Three passes, all reported together: YAML syntax (stops here if any), the zod schema, then
 * the static checks of check.ts. Positions come from the YAML node ranges (a LineCounter
 * maps offsets to lines), found by walking the document along each issue's path.
 */
import {
  type Document,
  LineCounter,
  type Node,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
} from 'yaml';
import { type z } from 'zod';
import { checkSteps, checkSubscribers, formatPath } from './check';
import {
  ScenarioConfig,
  ScenarioSchema,
  STEP_OPS,
  type LocatedStep,
  type Scenario,
  type Step,
} from './schema';

export type ParseResult = { ok: true; scenario: Scenario } | { ok: false; errors: string[] };

interface Located {
  line: number;
  col: number;
  path: PropertyKey[];
  message: string;
}

const article = (noun: string): string => (/^[aeiou]/.test(noun) ? `an ${noun}` : `a ${noun}`);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string "${v}"`;
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

const TYPE_NAMES: Record<string, string> = { int: 'integer', object: 'mapping', array: 'list' };

/** zod issue → the message after `file:line:col: path: `. Written for scenario authors. */
function scenarioErrorMap(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type': {
      const expected = article(TYPE_NAMES[iss.expected] ?? iss.expected);
      return iss.input === undefined
        ? `missing (expected ${expected})`
        : `expected ${expected}, got ${describe(iss.input)}`;
    }
    case 'invalid_union': {
      if (!('discriminator' in iss) || iss.discriminator !== 'op') return undefined;
      const op = (iss.input as { op?: unknown } | undefined)?.op;
      const known = STEP_OPS.join(', ');
      return op === undefined
        ? `missing op (one of: ${known})`
        : `unknown op ${JSON.stringify(op)} (one of: ${known})`;
    }
    case 'invalid_value':
      if (iss.input === undefined)
        return `missing (expected ${iss.values.map((v) => JSON.stringify(v)).join(' | ')})`;
      return `expected ${iss.values.map((v) => JSON.stringify(v)).join(' | ')}, got ${describe(iss.input)}`;
    case 'unrecognized_keys':
      return `unknown key${iss.keys.length > 1 ? 's' : ''} ${iss.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'too_small':
    case 'too_big': {
      const bound = iss.code === 'too_small' ? iss.minimum : iss.maximum;
      const cmp =
        iss.code === 'too_small' ? (iss.inclusive ? '>=' : '>') : iss.inclusive ? '<=' : '<';
      if (iss.origin === 'array')
        return `expected ${iss.code === 'too_small' ? 'at least' : 'at most'} ${String(bound)} item(s)`;
      return `expected a number ${cmp} ${String(bound)}, got ${describe(iss.input)}`;
    }
    case 'custom':
    case 'invalid_element':
    case 'invalid_format':
    case 'invalid_key':
    case 'not_multiple_of':
      return undefined; // the schema's own message
  }
}

/** The deepest node of `doc` along `path` (the parent mapping when a key is missing). */
function nodeAt(doc: Document, path: readonly PropertyKey[]): Node | null {
  let node: Node | null = doc.contents;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc) ?? node;
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      // `key:` with no value: point at the key.
      if (!pair.value) return pair.key as Node;
      node = pair.value as Node;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg]) {
      node = node.items[seg] as Node;
    } else break;
  }
  return node;
}

/** The key node `key` of the mapping at `path` (for unknown keys). */
function keyAt(doc: Document, path: readonly PropertyKey[], key: string): Node | null {
  const node = nodeAt(doc, path);
  if (!isMap(node)) return node;
  const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
  return (pair?.key as Node | undefined) ?? node;
}

/** Parse and check a scenario. `fileName` is only used in messages. */
export function parseScenario(text: string, fileName: string): ParseResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const pos = (node: Node | null | undefined): { line: number; col: number } => {
    const offset = node?.range?.[0] ?? 0;
    const p = lineCounter.linePos(offset);
    return { line: Math.max(p.line, 1), col: p.col };
  };

  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((e) => {
        const p = e.linePos?.[0] ?? { line: 1, col: 1 };
        // yaml appends " at line L, column C:" and a source excerpt; we lead with the position.
        const first = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
        return `${fileName}:${p.line}:${p.col}: ${first}`;
      }),
    };
  }

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // yaml refuses a document whose aliases expand past maxAliasCount (a "billion laughs"):
    // a ReferenceError that escaped parseScenario (and mmlab run) before
    const msg = e instanceof Error ? e.message : String(e);
    return { ok: false, errors: [`${fileName}:1:1: ${msg}`] };
  }
  const found: Located[] = [];
  const add = (node: Node | null | undefined, path: PropertyKey[], message: string) =>
    found.push({ ...pos(node), path, message });

  const parsed = ScenarioSchema.safeParse(raw, { error: scenarioErrorMap });
  if (!parsed.success) {
    for (const iss of parsed.error.issues) {
      if (iss.code === 'unrecognized_keys') {
        for (const k of iss.keys) add(keyAt(doc, iss.path, k), [...iss.path, k], 'unknown key');
      } else {
        add(nodeAt(doc, iss.path), iss.path, iss.message);
      }
    }
  }

  // Static checks over whatever parsed, so schema and binding errors come out together.
  const rawObj = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const rawSteps = Array.isArray(rawObj.steps) ? (rawObj.steps as unknown[]) : [];
  // config.cpus and the subscribers' names alone, so that another bad config key does not
  // hide an out-of-range cpu or an unknown hca.
  const rawConfig = (
    typeof rawObj.config === 'object' && rawObj.config !== null ? rawObj.config : {}
  ) as Record<string, unknown>;
  const cpus = ScenarioConfig.shape.cpus.safeParse(rawConfig.cpus);
  const mm = ScenarioConfig.shape.mmReplicas.safeParse(rawConfig.mmReplicas);
  const checked = checkSteps({
    steps: rawSteps,
    cpus: cpus.success ? cpus.data : undefined,
    mmReplicas: mm.success ? mm.data : undefined,
    subscribers: subscriberNames(rawConfig.subscribers),
  });
  for (const iss of [...checkSubscribers(rawConfig.subscribers), ...checked])
    add(nodeAt(doc, iss.path), iss.path, iss.message);

  if (found.length > 0 || !parsed.success) {
    found.sort((a, b) => a.line - b.line || a.col - b.col);
    const seen = new Set<string>();
    const errors: string[] = [];
    for (const f of found) {
      const where = f.path.length > 0 ? `${formatPath(f.path)}: ` : '';
      const msg = `${fileName}:${f.line}:${f.col}: ${where}${f.message}`;
      if (!seen.has(msg)) errors.push(msg);
      seen.add(msg);
    }
    return { ok: false, errors };
  }

  /** Each step with its line; the steps of parallel branches too, recursively. */
  const locate = (s: Step, path: PropertyKey[]): LocatedStep => {
    const line = pos(nodeAt(doc, path)).line;
    if (s.op !== 'parallel') return { ...s, line };
    const branches = s.branches.map((b, bi) =>
      b.map((x, j) => locate(x, [...path, 'branches', bi, j])),
    );
    return { ...s, branches, line };
  };
  const steps = parsed.data.steps.map((s, i) => locate(s, ['steps', i]));
  return { ok: true, scenario: { ...parsed.data, steps, file: fileName } };
}

/**
 * The subscribers of a raw config as far as they can be read (an entry with a string name),
 * for the static hca check; undefined when the key is there but not a list.
 */
function subscriberNames(raw: unknown): Array<{ name: string; kind: string }> | undefined {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) return undefined;
  return raw.flatMap((x: unknown) => {
    const o = (typeof x === 'object' && x !== null ? x : {}) as { name?: unknown; kind?: unknown };
    return typeof o.name === 'string'
      ? [{ name: o.name, kind: typeof o.kind === 'string' ? o.kind : 'hca' }]
      : [];
  });
}
