/**
 * What every step schema is built from: the step helper (a strict object with its `op` and the
 * `expectError` every step allows) and the field types steps share (bindings, addresses,
 * page offsets, CPU ids, subscriber names, ranges).
 */
import { z } from 'zod';
import { ERROR_CODES, Pages, TASK_SIZE } from '@mmlab/protocol';

const BINDING_RE = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const HEX_RE = /^0[xX][0-9a-fA-F]+$/;

/** A name bound by `as` and referred to by later steps. */
export const Binding = z.string({ error: 'expected a binding name' }).regex(BINDING_RE, {
  error: 'expected a binding name (a letter or _, then letters, digits, _ or -)',
});

/**
 * A virtual address: a number, a hex string ("0x10000000", which YAML would otherwise read
 * as a number only when unquoted) or the name of an address binding. Parsed to a number, or
 * left as the binding name (a string) for the runner to resolve.
 */
export const AddrRef = z
  .union([z.number(), z.string()], {
    error: 'expected an address: a number, a hex string or a binding name',
  })
  .transform((v, ctx): number | string => {
    if (typeof v === 'string' && !HEX_RE.test(v)) {
      if (/^0[xX]/.test(v))
        ctx.addIssue({
          code: 'custom',
          message: `bad hex address "${v}" (expected 0x followed by hex digits)`,
        });
      else if (!BINDING_RE.test(v))
        ctx.addIssue({
          code: 'custom',
          message: `bad address "${v}" (expected a number, a hex string or a binding name)`,
        });
      return v;
    }
    const addr = typeof v === 'number' ? v : parseInt(v.slice(2), 16);
    if (!Number.isSafeInteger(addr) || addr < 0 || addr >= TASK_SIZE)
      ctx.addIssue({ code: 'custom', message: `address ${v} is outside [0, 2^47)` });
    return addr;
  });
export type AddrRef = z.output<typeof AddrRef>;

/** Offset from `addr` in 4 KiB pages. */
export const PageOffset = z.number().int().nonnegative().default(0);
export const CpuId = z.number().int().nonnegative();

const SUBSCRIBER_RE = /^[A-Za-z0-9_-]+$/;
/** A subscriber's name: also its instance name and the {id} of its subjects. */
export const SubscriberName = z
  .string({ error: 'expected a subscriber name' })
  .max(64, { error: 'expected a subscriber name of at most 64 characters' })
  .regex(SUBSCRIBER_RE, { error: 'expected a subscriber name of letters, digits, _ or -' });

/** Allowed on every step: the step is ok iff it fails with exactly this code. */
export const common = { expectError: z.enum(ERROR_CODES).optional() };

export const step = <Op extends string, S extends z.ZodRawShape>(op: Op, shape: S) =>
  z.strictObject({ op: z.literal(op), ...shape, ...common });

/** A range of a process: addr (+ page) and a length. */
export const range = { process: Binding, addr: AddrRef, page: PageOffset, pages: Pages };

/** An address inside a memory region: `addr` defaults to the MR's start; `page` is added. */
export const mrAddr = { mr: Binding, addr: AddrRef.optional(), page: PageOffset };
