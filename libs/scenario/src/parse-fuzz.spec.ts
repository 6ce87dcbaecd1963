/**
 * Scenario-file fuzzer (issue 15): parseScenario, what `mmlab run` loads, fed generated YAML and
 * JSON documents — every example of examples/ mutated (a line dropped, duplicated or cut, a
 * value replaced by a hostile one, a key renamed, bytes spliced in, the document re-serialised
 * as JSON with a field changed), plus random text and YAML-specific attacks (alias bombs, deep
 * nesting, tags, several documents). Every document gives a scenario or errors that each name
 * the file, a line and a column; nothing escapes as an exception. The seed is printed
 * (MMLAB_FUZZ_SEED replays a run).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseScenario } from './parse';

const EXAMPLES = path.join(__dirname, '../../../examples');
const RUNS = 250;
/** each document is parsed whole (YAML, schema, static checks): milliseconds each */
const TIMEOUT_MS = 120_000;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? yamlFiles(p) : p.endsWith('.yaml') ? [p] : [];
  });
}
const examples = yamlFiles(EXAMPLES).map((f) => readFileSync(f, 'utf8'));

const env = process.env.MMLAB_FUZZ_SEED;
const seed = env !== undefined && /^-?\d+$/.test(env) ? Number(env) : Date.now() % 2 ** 31;

/** Values that break a field of any type. */
const hostileScalar = fc.oneof(
  fc.constantFrom(
    '-1',
    '0',
    '1e999',
    '-.inf',
    '.nan',
    '18446744073709551616',
    '0x',
    '0xffffffffffffffffff',
    '"0x10000001"',
    'null',
    '~',
    'true',
    '[]',
    '{}',
    '"\\ud800"',
    "'",
    '"',
    '*nosuch',
    '&a x',
    '!!binary aGVsbG8=',
    '!!js/function "f"',
    '!custom x',
    '? complex',
    'x'.repeat(10_000),
    '|\n  block',
  ),
  fc.string({ maxLength: 12 }),
  fc.integer().map(String),
  fc.double().map(String),
);

const lines = (s: string) => s.split('\n');

/** One mutation of an example's text. */
const mutatedExample = fc
  .tuple(fc.constantFrom(...examples), fc.nat(), fc.nat(), hostileScalar, fc.nat({ max: 7 }))
  .map(([text, a, b, value, how]) => {
    const ls = lines(text);
    const i = a % ls.length;
    const j = b % ls.length;
    switch (how) {
      case 0: // drop a line
        return ls.filter((_, k) => k !== i).join('\n');
      case 1: // duplicate a line (a duplicate key, or a step twice)
        return [...ls.slice(0, i + 1), ls[i], ...ls.slice(i + 1)].join('\n');
      case 2: // replace the value after a key on that line
        return ls.map((l, k) => (k === i ? l.replace(/:\s*[^,}\]]*/, `: ${value}`) : l)).join('\n');
      case 3: // cut the document short
        return text.slice(0, (a * 7919) % Math.max(1, text.length));
      case 4: // rename a key
        return ls.map((l, k) => (k === i ? l.replace(/(\w+):/, 'bogus_$1:') : l)).join('\n');
      case 5: // re-indent a line
        return ls.map((l, k) => (k === i ? ' '.repeat(b % 5) + l.trimStart() : l)).join('\n');
      case 6: // swap two lines
        return ls.map((l, k) => (k === i ? ls[j] : k === j ? ls[i] : l)).join('\n');
      default: // splice text in
        return text.slice(0, a % text.length) + value + text.slice(a % text.length);
    }
  });

/** An example as JSON (YAML's subset), with one field of the data replaced. */
const mutatedJson = fc
  .tuple(fc.constantFrom(...examples), fc.nat(), fc.jsonValue({ maxDepth: 2 }))
  .map(([text, a, value]) => {
    const doc = parseYaml(text) as Record<string, unknown>;
    const steps = Array.isArray(doc.steps) ? (doc.steps as Array<Record<string, unknown>>) : [];
    if (steps.length > 0) {
      const step = { ...steps[a % steps.length] };
      const keys = Object.keys(step);
      step[keys[a % keys.length]] = value;
      steps[a % steps.length] = step;
    } else doc.config = value;
    return JSON.stringify(doc, null, a % 2 === 0 ? 2 : undefined);
  });

/** YAML's own hazards. */
const yamlAttacks = fc.oneof(
  fc.nat({ max: 12 }).map(
    (n) =>
      `a: &a [x, x, x, x, x, x, x, x, x]\n` +
      Array.from(
        { length: n },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(', ')}]`,
      ).join('\n') +
      `\nname: bomb\nsteps: [{ op: process.create, as: p }]\n`,
  ),
  fc
    .integer({ min: 1, max: 20_000 })
    .map((n) => `name: deep\nsteps: ${'['.repeat(n)}${']'.repeat(n)}\n`),
  fc
    .integer({ min: 1, max: 5_000 })
    .map((n) => `name: deep\nsteps:\n  - ${'{a: '.repeat(n)}1${'}'.repeat(n)}\n`),
  fc.constantFrom(
    'name: x\nsteps: []\n---\nname: y\n',
    '%YAML 1.1\n---\nname: x\nsteps: [{ op: process.create, as: p }]\n',
    '<<: {name: x}\nsteps: [{ op: process.create, as: p }]\n',
    '__proto__: {polluted: 1}\nname: x\nsteps: [{ op: process.create, as: p }]\n',
    'name: x\nsteps: [{ op: process.create, as: __proto__ }]\n',
    '? [a, b]\n: c\nname: x\nsteps: [{ op: process.create, as: p }]\n',
    '\ufeffname: x\nsteps: [{ op: process.create, as: p }]\n',
    '\u0000',
    '',
    '\t',
  ),
  fc.string({ maxLength: 200 }),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString('utf8')),
);

const figures = { documents: 0, parsed: 0, refused: 0, errors: 0 };

/** The property: a scenario, or errors each naming file:line:col; never an exception. */
function check(text: string): void {
  const r = parseScenario(text, 'fz.yaml');
  figures.documents++;
  if (r.ok) {
    figures.parsed++;
    expect(r.scenario.steps.length).toBeGreaterThan(0);
    return;
  }
  figures.refused++;
  figures.errors += r.errors.length;
  expect(r.errors.length).toBeGreaterThan(0);
  for (const e of r.errors) expect(e).toMatch(/^fz\.yaml:\d+:\d+: \S/);
}

describe('scenario-file fuzzer', () => {
  afterAll(() => {
    console.log(
      `scenario fuzz: seed ${seed} (MMLAB_FUZZ_SEED=${seed} replays): ${figures.documents} documents from ${examples.length} examples and random text, ${figures.parsed} parsed, ${figures.refused} refused with ${figures.errors} located errors`,
    );
  });

  it('has examples to mutate', () => {
    expect(examples.length).toBeGreaterThan(10);
    for (const text of examples) expect(parseScenario(text, 'ex.yaml').ok).toBe(true);
  });

  it(
    'mutated examples: a scenario or located errors, never an exception',
    () => {
      fc.assert(fc.property(mutatedExample, check), { seed, numRuns: RUNS * 2 });
    },
    TIMEOUT_MS,
  );

  it(
    'examples as JSON with a field replaced: a scenario or located errors',
    () => {
      fc.assert(fc.property(mutatedJson, check), { seed, numRuns: RUNS });
    },
    TIMEOUT_MS,
  );

  it(
    "YAML's hazards (alias bombs, deep nesting, tags, several documents) and random text",
    () => {
      fc.assert(fc.property(yamlAttacks, check), { seed, numRuns: RUNS });
    },
    TIMEOUT_MS,
  );

  it('an alias bomb is a located error, not a ReferenceError (regression)', () => {
    const bomb =
      'a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n' +
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\nname: x\nsteps: [{ op: process.create, as: p }]\n';
    const r = parseScenario(bomb, 'fz.yaml');
    expect(r).toEqual({ ok: false, errors: [expect.stringMatching(/^fz\.yaml:1:1: .*alias/)] });
  });
});
