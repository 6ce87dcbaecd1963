/**
 * Query-string (and body) validation for the HTTP API: zod schemas, and a bad query or body
 * answered 400 with the lab's typed error body `{code: 'EBADMSG', message, definite: true}`.
 */
import { BadRequestException } from '@nestjs/common';
import { z } from 'zod';
import { MmlabError, TraceEvent, type TraceKind } from '@mmlab/protocol';

export const MAX_LIMIT = 100_000;

/** Every event kind of the wire contract (read off the TraceEvent union). */
export const TRACE_KINDS: readonly TraceKind[] = TraceEvent.options
  .map((o) => (o.shape.kind as { value?: unknown }).value)
  .filter((k): k is TraceKind => typeof k === 'string');

/** A number as JS prints one (1.5, 1e-7); '' and '1e3x' are errors, not 0 or NaN. */
const decimal = z
  .string()
  .regex(/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/, 'expected a decimal number')
  .transform(Number)
  .pipe(z.number().finite());
const count = (max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'expected a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().max(max));

export const EventsQuery = z
  .strictObject({
    /** one kind, or several separated by commas */
    kind: z
      .string()
      .transform((s) => s.split(',').filter((k) => k !== ''))
      .pipe(z.array(z.enum(TRACE_KINDS as [TraceKind, ...TraceKind[]])))
      .optional(),
    pid: count(Number.MAX_SAFE_INTEGER).pipe(z.number().positive()).optional(),
    instance: z.string().min(1).optional(),
    op: z.string().min(1).optional(),
    from: decimal.optional(),
    to: decimal.optional(),
    offset: count(Number.MAX_SAFE_INTEGER).default(0),
    limit: count(MAX_LIMIT).default(1000),
  })
  .refine((q) => q.from === undefined || q.to === undefined || q.from <= q.to, {
    message: 'from must not be after to',
    path: ['from'],
  });
export type EventsQuery = z.output<typeof EventsQuery>;

export const InvariantsQuery = z.strictObject({
  softlockupMs: decimal.pipe(z.number().nonnegative()).optional(),
  /** violations listed per invariant (all are counted in violationCount) */
  maxViolations: count(MAX_LIMIT).default(1000),
});
export type InvariantsQuery = z.output<typeof InvariantsQuery>;

/** POST /reset's body: none, or an empty object (what the dashboard sends). */
export const ResetRequest = z.strictObject({});

/** Parse a query object, or throw 400 with an EBADMSG body. */
export function parseQuery<S extends z.ZodType>(schema: S, query: unknown): z.output<S> {
  return parseOr400(schema, query, 'query');
}

/** Parse a request body (none: {}), or throw 400 with an EBADMSG body. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  return parseOr400(schema, body ?? {}, 'body');
}

function parseOr400<S extends z.ZodType>(schema: S, v: unknown, what: string): z.output<S> {
  const r = schema.safeParse(v);
  if (r.success) return r.data;
  const why = r.error.issues
    .map((i) => `${i.path.join('.') || `(${what})`}: ${i.message}`)
    .join('; ');
  throw new BadRequestException(new MmlabError('EBADMSG', `bad ${what}: ${why}`).toWire());
}
