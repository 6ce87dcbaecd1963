/** GET /stream's query string (see stream.controller.ts). */
import { z } from 'zod';
import { MAX_LIMIT } from './http-query';

export const DECIMAL = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

export const StreamQuery = z.strictObject({
  from: z.string().regex(DECIMAL, 'expected a decimal number').transform(Number).optional(),
  tail: z
    .string()
    .regex(/^\d+$/, 'expected a non-negative integer')
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .max(20 * MAX_LIMIT),
    )
    .optional(),
});
export type StreamQuery = z.output<typeof StreamQuery>;
