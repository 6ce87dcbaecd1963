/**
 * Hostile inputs for the fuzz suites (test/fuzz-*.e2e-spec.ts), derived from the schemas the
 * boundaries declare (libs/protocol's zod request schemas), so that a subject or field added
 * there is fuzzed without an edit here.
 *
 *   validOf(schema)      a value the schema accepts (the base that hostileOf mutates)
 *   brokenOf(schema)     one leaf (or the object itself) of a valid value made wrong: another
 *                        type, missing, out of range (huge, negative, non-integer, past 2^53 and
 *                        2^64, raw 1e999), too long, an unknown enum value or key
 *   encode(value)        the request text, with the numbers JSON.stringify cannot write
 *                        (Raw: 1e999, -0, 18446744073709551616) put in raw
 *   garbage()            whole payloads that are not a request: not JSON, invalid UTF-8, JSON
 *                        that is not a packet, packets with wrong envelopes, oversized ones
 *
 * The seed of a run: MMLAB_FUZZ_SEED, else a new one, printed so that a failure replays.
 */
import fc from 'fast-check';
import type { z } from 'zod';

/** A number written into the request text as is (what JSON.stringify cannot produce). */
export class Raw {
  constructor(readonly text: string) {}
  toJSON(): string {
    return `\u0000RAW:${this.text}\u0000`;
  }
}

/** The request text of value: JSON, with every Raw written raw. */
export function encode(value: unknown): string {
  return JSON.stringify(value).replace(/"\\u0000RAW:([^"\\]*)\\u0000"/g, '$1');
}

/** The run's seed (MMLAB_FUZZ_SEED to replay one). */
export function fuzzSeed(): number {
  const env = process.env.MMLAB_FUZZ_SEED;
  return env !== undefined && /^-?\d+$/.test(env) ? Number(env) : Date.now() % 2 ** 31;
}

interface Def {
  type: string;
  checks?: Array<{ _zod: { def: Record<string, unknown> } }>;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  entries?: Record<string, string | number>;
  values?: unknown[];
  in?: z.ZodType;
  catchall?: z.ZodType;
}

const defOf = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;

interface Bounds {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  maxExclusive?: boolean;
  int: boolean;
  minLength?: number;
  maxLength?: number;
  pattern?: RegExp;
}

function boundsOf(s: z.ZodType): Bounds {
  const b: Bounds = { int: false };
  for (const c of defOf(s).checks ?? []) {
    const d = c._zod.def;
    if (d.check === 'number_format' && (d.format === 'safeint' || d.format === 'int32'))
      b.int = true;
    if (d.check === 'greater_than') {
      b.min = d.value as number;
      b.minExclusive = !d.inclusive;
    }
    if (d.check === 'less_than') {
      b.max = d.value as number;
      b.maxExclusive = !d.inclusive;
    }
    if (d.check === 'min_length') b.minLength = d.minimum as number;
    if (d.check === 'max_length') b.maxLength = d.maximum as number;
    if (d.check === 'string_format' && d.format === 'regex') b.pattern = d.pattern as RegExp;
  }
  return b;
}

/** Unwrap optional / default / nullable wrappers (and whether the key may be left out). */
function unwrap(s: z.ZodType): { inner: z.ZodType; omittable: boolean } {
  let inner = s;
  let omittable = false;
  for (;;) {
    const d = defOf(inner);
    if ((d.type === 'optional' || d.type === 'default' || d.type === 'prefault') && d.innerType) {
      omittable = true;
      inner = d.innerType;
    } else if (d.type === 'pipe' && d.in) inner = d.in;
    else return { inner, omittable };
  }
}

/** A value s accepts (mostly: refinements are not read; callers filter with safeParse). */
export function validOf(s: z.ZodType, depth = 0): fc.Arbitrary<unknown> {
  const d = defOf(s);
  switch (d.type) {
    case 'optional':
    case 'default':
    case 'prefault':
      return validOf(d.innerType!, depth);
    case 'pipe':
      return validOf(d.in!, depth);
    case 'object': {
      const shape = d.shape ?? {};
      const required = Object.keys(shape).filter((k) => !unwrap(shape[k]).omittable);
      return fc.record(
        Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, validOf(v, depth + 1)])),
        { requiredKeys: required },
      );
    }
    case 'number': {
      const b = boundsOf(s);
      const lo = Math.max(b.min ?? -(2 ** 40), Number.MIN_SAFE_INTEGER) + (b.minExclusive ? 1 : 0);
      const hi = Math.min(b.max ?? 2 ** 40, Number.MAX_SAFE_INTEGER) - (b.maxExclusive ? 1 : 0);
      return b.int
        ? fc.oneof(
            fc.integer({ min: lo, max: Math.min(hi, lo + 64) }),
            fc.integer({ min: lo, max: hi }),
          )
        : fc.double({ min: lo, max: hi, noNaN: true, noDefaultInfinity: true });
    }
    case 'string': {
      const b = boundsOf(s);
      const len = { minLength: b.minLength ?? 0, maxLength: Math.min(b.maxLength ?? 24, 24) };
      return b.pattern
        ? fc
            .stringMatching(b.pattern)
            .filter((x) => x.length >= (b.minLength ?? 0) && x.length <= (b.maxLength ?? Infinity))
        : fc.string(len);
    }
    case 'boolean':
      return fc.boolean();
    case 'enum':
      return fc.constantFrom(...Object.values(d.entries ?? { x: 'x' }));
    case 'literal':
      return fc.constantFrom(...(d.values ?? [null]));
    case 'array': {
      const b = boundsOf(s);
      const min = b.minLength ?? 0;
      return fc.array(validOf(d.element!, depth + 1), {
        minLength: min,
        maxLength: Math.max(min, Math.min(b.maxLength ?? 3, 3)),
      });
    }
    case 'union':
      return fc.oneof(...(d.options ?? []).map((o) => validOf(o, depth)));
    case 'null':
      return fc.constant(null);
    default:
      return depth > 3 ? fc.constant(null) : fc.jsonValue({ maxDepth: 2 });
  }
}

/** JSON values of every type but one (wrong types for a leaf of type `not`). */
function wrongType(not: string): fc.Arbitrary<unknown> {
  const all: Record<string, fc.Arbitrary<unknown>> = {
    number: fc.oneof(fc.integer(), fc.constant(1e300)),
    numstr: fc.constantFrom('1', '0x10', '1e3', 'NaN', 'Infinity', '-1', ''),
    string: fc.string({ maxLength: 8 }),
    boolean: fc.boolean(),
    null: fc.constant(null),
    array: fc.array(fc.integer(), { maxLength: 3 }),
    object: fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
  };
  const skip = new Set([not, not === 'enum' || not === 'literal' ? 'string' : '']);
  if (not === 'number') skip.add('number');
  if (not === 'string' || not === 'enum') skip.add('numstr');
  return fc.oneof(
    ...Object.entries(all)
      .filter(([k]) => !skip.has(k))
      .map(([, a]) => a),
  );
}

/** Numbers JSON.parse reads as Infinity, -0 or an unsafe integer: hostile in any number field. */
const RAW_NUMBERS = ['1e999', '-1e999', '18446744073709551616', '-0', '1e-400', '9007199254740993'];

/** A value that breaks the leaf schema s (another type, out of its range, too long, ...). */
export function brokenLeaf(s: z.ZodType): fc.Arbitrary<unknown> {
  const { inner } = unwrap(s);
  const d = defOf(inner);
  const b = boundsOf(inner);
  const bad: Array<fc.Arbitrary<unknown>> = [wrongType(d.type)];
  switch (d.type) {
    case 'number': {
      const edges: unknown[] = [-1, -(2 ** 53), 2 ** 53, 2 ** 64, 2 ** 64 - 4096, 1e308, 0.5, -0.5];
      if (b.min !== undefined) edges.push(b.minExclusive ? b.min : b.min - 1);
      if (b.max !== undefined) edges.push(b.maxExclusive ? b.max : b.max + 1, b.max * 2 + 1);
      bad.push(
        fc.constantFrom(...edges),
        fc.constantFrom(...RAW_NUMBERS).map((t) => new Raw(t)),
        fc.double({ noNaN: true }).filter((x) => !Number.isInteger(x)),
      );
      break;
    }
    case 'string': {
      const max = b.maxLength;
      if (max !== undefined) bad.push(fc.constant('x'.repeat(max + 1)));
      if (b.minLength) bad.push(fc.constant(''));
      if (b.pattern)
        bad.push(fc.constantFrom('../..', 'a b', 'é', 'x.y.z', '\u0000', '>'.repeat(70)));
      bad.push(fc.constant('\ud800'), fc.constant('x'.repeat(65_536)));
      break;
    }
    case 'enum':
    case 'literal':
      bad.push(fc.constantFrom('READ', 'unknown', ' ', 'rw ', '__proto__', 'constructor'));
      break;
    case 'array':
      if (b.maxLength !== undefined && b.maxLength <= 4096)
        bad.push(fc.constant(Array.from({ length: b.maxLength + 1 }, () => ({}))));
      if (b.minLength) bad.push(fc.constant([]));
      bad.push(
        fc.array(wrongType(defOf(unwrap(d.element!).inner).type), { minLength: 1, maxLength: 3 }),
      );
      break;
    case 'object':
      bad.push(fc.constant([]), fc.constant('{}'));
      break;
  }
  return fc.oneof(...bad);
}

type Path = Array<string | number>;

/** Every (path, schema) of value against s: the object and array nodes and their leaves. */
function nodes(s: z.ZodType, value: unknown, path: Path = []): Array<[Path, z.ZodType]> {
  const out: Array<[Path, z.ZodType]> = [[path, s]];
  const { inner } = unwrap(s);
  const d = defOf(inner);
  if (d.type === 'object' && typeof value === 'object' && value !== null)
    for (const [k, v] of Object.entries(d.shape ?? {}))
      out.push(...nodes(v, (value as Record<string, unknown>)[k], [...path, k]));
  if (d.type === 'array' && Array.isArray(value))
    value.forEach((v, i) => out.push(...nodes(d.element!, v, [...path, i])));
  return out;
}

function setAt(value: unknown, path: Path, leaf: unknown): unknown {
  if (path.length === 0) return leaf === DELETE ? undefined : leaf;
  const copy = (
    Array.isArray(value) ? [...(value as unknown[])] : { ...(value as object) }
  ) as Record<string | number, unknown>;
  const [head, ...rest] = path;
  if (rest.length === 0 && leaf === DELETE) delete copy[head];
  else copy[head] = setAt(copy[head], rest, leaf);
  return copy;
}
const DELETE = Symbol('delete');

/** Keys no strict object of the protocol has (and two that poison careless code). */
const ALIEN_KEYS = ['bogus', '__proto__', 'constructor', 'pid ', 'Pid'];

/**
 * A valid value of s with one node made wrong: a leaf replaced (brokenLeaf), a key deleted, an
 * unknown key added, or the whole value replaced. Not always invalid (a deleted optional key):
 * the caller classifies each with s.safeParse.
 */
export function brokenOf(s: z.ZodType): fc.Arbitrary<unknown> {
  return validOf(s).chain((base) => {
    const all = nodes(s, base);
    return fc.integer({ min: 0, max: all.length - 1 }).chain((i) => {
      const [path, leaf] = all[i];
      const ops: Array<fc.Arbitrary<unknown>> = [brokenLeaf(leaf).map((v) => setAt(base, path, v))];
      if (path.length > 0) ops.push(fc.constant(setAt(base, path, DELETE)));
      const d = defOf(unwrap(leaf).inner);
      if (d.type === 'object')
        ops.push(
          fc.tuple(fc.constantFrom(...ALIEN_KEYS), fc.jsonValue({ maxDepth: 1 })).map(([k, v]) => {
            const target = path.reduce<unknown>(
              (o, p) => (o as Record<string | number, unknown>)[p],
              base,
            );
            const obj = { ...(target as object) };
            Object.defineProperty(obj, k, { value: v, enumerable: true });
            return setAt(base, path, obj);
          }),
        );
      return fc.oneof(...ops);
    });
  });
}

/** What a payload is: for the counts a run prints. */
export type PayloadKind = 'garbage' | 'oversized' | 'broken' | 'hostile-valid';

/** Bytes with invalid UTF-8 (lone continuation bytes, overlongs, surrogates) in or around JSON. */
const invalidUtf8 = fc
  .tuple(
    fc.constantFrom(
      [0xff],
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0x80, 0x80],
      [0xf8, 0x88, 0x80, 0x80, 0x80],
      [0xfe, 0xfe, 0xff, 0xff],
    ),
    fc.constantFrom('{"id":"x","pattern":"p","data":{"pid":"', '{"pid":', '', '{"id":"'),
    fc.constantFrom('"}}', '}', '', '1}'),
  )
  .map(([bad, pre, post]) =>
    Buffer.concat([Buffer.from(pre), Buffer.from(bad), Buffer.from(post)]),
  );

/**
 * Whole payloads that are not a valid request of `subject`: never JSON, broken UTF-8, JSON
 * that is no packet (or a packet without data, or with a wrong id/pattern), deep nesting.
 */
export function garbage(subject: string): fc.Arbitrary<Uint8Array> {
  const packet = (data: unknown, extra: Record<string, unknown> = {}) =>
    Buffer.from(JSON.stringify({ id: 'fz', pattern: subject, data, ...extra }));
  return fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.string({ maxLength: 32 }).map((s) => Buffer.from(s)),
    invalidUtf8,
    fc
      .constantFrom(
        '',
        'null',
        'true',
        '0',
        '"x"',
        '[1,2,3]',
        '{',
        'NaN',
        '{"id":"a","pattern":"p"}',
        '{"data":1}',
        '{"id":7,"pattern":null,"data":null}',
        '{"id":{},"pattern":[],"data":[]}',
        '{"__proto__":{"polluted":1},"id":"x","pattern":"p","data":{"__proto__":{"pid":1}}}',
        '{"id":"x","pattern":"p","data":' + '['.repeat(5000) + ']'.repeat(5000) + '}',
        '{"id":"x","pattern":"p","data":' + '{"a":'.repeat(2000) + '1' + '}'.repeat(2000) + '}',
      )
      .map((s) => Buffer.from(s)),
    fc.jsonValue({ maxDepth: 2 }).map((v) => packet(v)),
    fc.jsonValue({ maxDepth: 1 }).map((v) => packet(undefined, { extra: v })),
  );
}

/**
 * A payload near the server's max_payload (within 4 KiB of it): a packet whose data is a huge
 * string, a huge array of numbers or a huge object; never valid for any subject (no request
 * field takes that much), so each must be refused whole.
 */
export function oversized(subject: string, maxPayload: number): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.constantFrom('string', 'array', 'keys', 'raw'), fc.integer({ min: 64, max: 4096 }))
    .map(([shape, slack]) => {
      const head = `{"id":"big","pattern":"${subject}","data":`;
      const room = maxPayload - slack - head.length - 2;
      let body: string;
      switch (shape) {
        case 'string':
          body = `{"pid":"${'9'.repeat(room - 10)}"}`;
          break;
        case 'array':
          body = `{"pages":[${'0,'.repeat(Math.floor((room - 12) / 2))}0]}`;
          break;
        case 'keys': {
          const n = Math.floor((room - 2) / 13);
          body = `{${Array.from({ length: n }, (_, i) => `"k${String(i).padStart(7, '0')}":1`).join(',')}}`;
          break;
        }
        case 'raw':
          body = 'x'.repeat(room);
      }
      return Buffer.from(head + body + '}');
    });
}

/** What a fuzz file sent to one subject or endpoint: by kind of message, and answers by code. */
export interface FuzzFigures {
  sent: Record<string, number>;
  codes: Record<string, number>;
}

/**
 * The figures of a run, one line per subject or endpoint (`name: n <unit> (kinds) → codes`,
 * the README quotes them), and the total sent.
 */
export function figureLines(
  figures: ReadonlyMap<string, FuzzFigures>,
  unit: string,
): { rows: string[]; total: number } {
  const list = (o: Record<string, number>, byCount: boolean) =>
    Object.entries(o)
      .sort((a, b) => (byCount ? b[1] - a[1] : 0))
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  const sum = (f: FuzzFigures) => Object.values(f.sent).reduce((a, b) => a + b, 0);
  const rows = [...figures].map(
    ([name, f]) => `  ${name}: ${sum(f)} ${unit} (${list(f.sent, false)}) → ${list(f.codes, true)}`,
  );
  return { rows, total: [...figures.values()].reduce((a, f) => a + sum(f), 0) };
}
