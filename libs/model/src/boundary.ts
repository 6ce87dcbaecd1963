/**
 * The Redis boundary, declared once (as libs/protocol declares the NATS one): each Lua script
 * with its KEYS by role, its ARGV by name (zod types, in declared order), the zod schema of its
 * reply and the kernel step it models. Store.call builds KEYS/ARGV from a declaration and parses
 * the reply with its schema; docs/redis.md is generated from the declarations (gen-doc.ts).
 *
 * A reply is what the Lua script returns as Redis sends it: a Lua table becomes an array (it
 * stops at the first nil), a number an integer, false a null. `tagged` reads the usual
 * `{'CODE', field, ...}` reply as `{ r: 'CODE', field, ... }`, so no caller reads r[0].
 */
import { z } from 'zod';
import { MmlabError } from '@mmlab/protocol';

export const Int = z.number().int();
export const Ints = z.array(Int);
export const Str = z.string();
export const Strs = z.array(z.string());
/** 1 (done) or 0 (refused) */
export const Bit = z.union([z.literal(0), z.literal(1)]).describe('1 | 0');
/** a frame and the generation it is expected to have */
export const PfnGen = z.object({ pfn: Int, gen: Int });
/** a lease value "owner|token" ('' none) */
export const LeaseValue = z.string().describe('"owner|token"');
/** an integer, or '' for none */
export const IntOrNone = z.union([Int, z.literal('')]);

/** The reply {'r', f1, f2, ...} of a script, parsed as { r, f1, f2, ... } (trailing fields may be optional). */
export function tagged<R extends string, S extends z.ZodRawShape = Record<never, never>>(
  r: R,
  fields: S = {} as S,
) {
  const names = Object.keys(fields);
  return z
    .preprocess(
      (v) =>
        Array.isArray(v) && v[0] === r && v.length <= names.length + 1
          ? { r, ...Object.fromEntries(names.map((n, i) => [n, v[i + 1]])) }
          : v,
      z.strictObject({ r: z.literal(r), ...fields }),
    )
    .describe(`{'${r}'${names.map((n) => `, ${n}`).join('')}}`);
}

/** One of several tagged replies (or other shapes), described as their alternatives. */
export function oneOf<const T extends readonly [z.ZodType, z.ZodType, ...z.ZodType[]]>(...o: T) {
  return z.union(o).describe(o.map((s) => s.description ?? '?').join(' | '));
}

/**
 * A declared script. keys: the roles of KEYS[1..n] in order (the caller names the key of each
 * role; every role is resolved by one helper of keys.ts). varKeys: instead, KEYS are a list
 * whose length the caller chooses (then ARGV often parallels it). args: ARGV by name, in order;
 * an array-typed arg must be last and is spread (an object element: its fields in order).
 */
export interface ScriptDecl<
  K extends readonly string[] = readonly string[],
  A extends z.ZodRawShape = z.ZodRawShape,
  R extends z.ZodType = z.ZodType,
> {
  readonly doc: string;
  /** the kernel function (or hardware step) the script models */
  readonly models: string;
  readonly keys: K;
  /** KEYS are a caller-sized list (what each is), instead of fixed roles */
  readonly varKeys?: string;
  readonly args: A;
  readonly reply: R;
  readonly lua: string;
  /** z.strictObject(args), built once */
  readonly argsSchema: z.ZodType<unknown, ArgsIn<A>>;
}

export const script = <
  const K extends readonly string[],
  A extends z.ZodRawShape,
  R extends z.ZodType,
>(
  d: Omit<ScriptDecl<K, A, R>, 'argsSchema'>,
): ScriptDecl<K, A, R> => ({
  ...d,
  argsSchema: z.strictObject(d.args),
});

/** What a call gives as ARGV of a script whose args are A. */
type ArgsIn<A extends z.ZodRawShape> = z.input<z.ZodObject<A>>;

/** KEYS by role for declaration D (a list for a varKeys script, which declares no roles). */
export type KeysOf<D extends ScriptDecl> = D['keys'] extends readonly []
  ? readonly string[]
  : { readonly [P in D['keys'][number]]: string };
export type ArgsOf<D extends ScriptDecl> = z.input<D['argsSchema']>;
export type ReplyOf<D extends ScriptDecl> = z.output<D['reply']>;

const flat = (v: unknown, out: Array<string | number>): void => {
  if (Array.isArray(v)) for (const e of v) flat(e, out);
  else if (v !== null && typeof v === 'object') for (const f of Object.values(v)) flat(f, out);
  else out.push(v as string | number);
};

/**
 * KEYS and ARGV of one call of d, in declared order. Bad arguments: EINVAL (nothing was sent).
 */
export function encodeCall<D extends ScriptDecl>(
  name: string,
  d: D,
  keys: KeysOf<D>,
  args: ArgsOf<D>,
): { keys: string[]; argv: Array<string | number> } {
  const k: string[] = d.varKeys
    ? [...(keys as readonly string[])]
    : d.keys.map((role) => (keys as Record<string, string>)[role]);
  if (k.some((x) => typeof x !== 'string' || x === ''))
    throw new MmlabError('EINVAL', `script ${name}: missing key of ${JSON.stringify(d.keys)}`);
  const a = d.argsSchema.safeParse(args);
  if (!a.success)
    throw new MmlabError('EINVAL', `script ${name}: bad arguments: ${z.prettifyError(a.error)}`);
  const argv: Array<string | number> = [];
  // the parsed object follows the declared shape's order
  for (const n of Object.keys(d.args)) flat((a.data as Record<string, unknown>)[n], argv);
  return { keys: k, argv };
}

/** The reply of one call of d, parsed: a reply off its schema is a bug in the script or here. */
export function decodeReply<D extends ScriptDecl>(name: string, d: D, raw: unknown): ReplyOf<D> {
  const r = d.reply.safeParse(raw);
  if (!r.success)
    throw new Error(`script ${name} answered ${JSON.stringify(raw)}: ${z.prettifyError(r.error)}`);
  return r.data as ReplyOf<D>;
}

/** A flat reply [a1, b1, a2, b2, ...] as pairs. */
export function pairsOf<T>(
  a: ReadonlyArray<string | number>,
  f: (x: string | number, y: string | number) => T,
): T[] {
  const out: T[] = [];
  for (let i = 0; i + 1 < a.length; i += 2) out.push(f(a[i], a[i + 1]));
  return out;
}

/** heldLocks' flat reply [name, "owner|token", pttl, ...] as leases. */
export function triplesOf(
  a: ReadonlyArray<string | number>,
): Array<{ lock: string; value: string; pttl: number }> {
  const out: Array<{ lock: string; value: string; pttl: number }> = [];
  for (let i = 0; i + 2 < a.length; i += 3)
    out.push({ lock: String(a[i]), value: String(a[i + 1]), pttl: Number(a[i + 2]) });
  return out;
}
