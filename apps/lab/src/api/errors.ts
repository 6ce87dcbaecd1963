/**
 * How the lab API answers a failure: always `{code, message}` (the lab's wire error codes),
 * with an HTTP status that says what kind of failure it was.
 *
 *   400 EBADMSG    the body is not a valid ChaosSpec / heal request (zod's message); nothing changed
 *   404 EINVAL     no such target in this lab (the message names the targets)
 *   404 ESRCH      no mm replica answers (`mm` could not be resolved)
 *   404 ENOHANDLER nobody answers the subscriber's chaos subject
 *   409 EINVAL     the target already has that fault (or a process fault): heal it first
 *   422 EINVAL     a well-formed spec the nemesis cannot do here (a process fault without a
 *                  lab this process started: on compose use docker compose pause/kill)
 *   504 ETIMEDOUT  the subscriber did not answer in time (the fault may still have landed)
 *   500            anything else (EINTERNAL)
 * Nest's own refusals (no such route, a body that is not JSON or over the limit) are typed by
 * the HttpErrorFilter every HTTP server of the lab shares (@mmlab/runtime http-errors.ts).
 */
import {
  type ArgumentsHost,
  BadRequestException,
  Catch,
  type ExceptionFilter,
  NotFoundException,
} from '@nestjs/common';
import type { z } from 'zod';
import { type ErrorCode, MmlabError } from '@mmlab/protocol';

/** What every error of the lab API looks like on the wire. */
export interface ApiErrorBody {
  code: ErrorCode;
  message: string;
}

/** The nemesis's "already under a fault" refusal (an EINVAL that is a conflict, not a bad spec). */
const CONFLICT = /heal it first/;

export function httpStatusOf(e: MmlabError): number {
  switch (e.code) {
    case 'EBADMSG':
      return 400;
    case 'EINVAL':
      return CONFLICT.test(e.message) ? 409 : 422;
    case 'ESRCH':
    case 'ENOHANDLER':
      return 404;
    case 'ETIMEDOUT':
      return 504;
    case 'EACCES':
      return 401;
    // not answers of the nemesis: a bug if they reach here
    case 'SIGSEGV':
    case 'SIGBUS':
    case 'ENOENT':
    case 'ENOMEM':
    case 'EFAULT':
    case 'EPERM':
    case 'ENODEV':
    case 'EAGAIN':
    case 'ESTALE':
    case 'EOWNERDEAD':
    case 'ESHUTDOWN':
    case 'EINTERNAL':
      return 500;
  }
}

export const bodyOf = (e: MmlabError): ApiErrorBody => {
  const w = e.toWire();
  return { code: w.code, message: w.message };
};

/** zod issues as one line: `distribution: a latency fault needs a distribution; ...`. */
export function zodMessage(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ');
}

/** Parse a request body, or answer 400 EBADMSG with zod's message. */
export function parseBody<S extends z.ZodType>(
  schema: S,
  body: unknown,
  what: string,
): z.output<S> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const e = new MmlabError('EBADMSG', `bad ${what}: ${zodMessage(r.error)}`);
  throw new BadRequestException(bodyOf(e));
}

/** A target this lab does not have: 404 with an EINVAL body naming what it has. */
export function unknownTarget(message: string): NotFoundException {
  return new NotFoundException(bodyOf(new MmlabError('EINVAL', message)));
}

/**
 * MmlabErrors thrown by the nemesis (or by an RpcClient call) as HTTP answers. Everything else
 * (HttpExceptions, Nest's and body-parser's own refusals) is the lab's HttpErrorFilter's
 * (@mmlab/runtime http-errors.ts), installed before this one.
 */
@Catch(MmlabError)
export class MmlabErrorFilter implements ExceptionFilter<MmlabError> {
  catch(e: MmlabError, host: ArgumentsHost): void {
    const res = host
      .switchToHttp()
      .getResponse<{ status(n: number): { json(body: unknown): void } }>();
    res.status(httpStatusOf(e)).json(bodyOf(e));
  }
}
