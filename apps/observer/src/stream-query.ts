/** GET /stream's query string (see stream.controller.ts). */
import { z } from 'zod';
import { MAX_LIMIT } from './http-query';

export const DECIMAL = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

export const StreamQuery = z.strictObject({
  // finite: from=1e999 (Infinity) is a bad query, as on GET /events (fuzz-http found it open a stream)
  from: z
    .string()
    .regex(DECIMAL, 'expected a decimal number')
    .transform(Number)
    .pipe(z.number().finite())
    .optional(),
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
