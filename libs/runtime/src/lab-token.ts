/**
 * What a web page must not be able to do to a lab: change it. Every HTTP server of the lab
 * (the observer, the lab API) puts LabTokenGuard in front of its routes:
 *
 *   GET, HEAD, OPTIONS     open (on loopback natively: MMLAB_HTTP_HOST)
 *   POST, PUT, PATCH,      415 EBADMSG unless `Content-Type: application/json`: an HTML form
 *   DELETE                     (or a `fetch` without a CORS preflight) can only send
 *                              application/x-www-form-urlencoded, multipart/form-data or
 *                              text/plain, so a cross-site page cannot get past this line;
 *                          403 EACCES when the lab has no token (MMLAB_LAB_TOKEN unset):
 *                              nothing may change it over HTTP;
 *                          401 EACCES unless the request carries the lab's token, as
 *                              `Authorization: Bearer <token>` or `X-Mmlab-Token: <token>`.
 *                              A custom header forces a CORS preflight too, and no server of
 *                              the lab answers one (no CORS is enabled anywhere), so a page
 *                              of another origin can neither send the token nor read it.
 *
 * A server bound to loopback (MMLAB_HTTP_HOST 127.0.0.1, the native default) also answers only
 * requests addressed to this machine's own names (`Host: 127.0.0.1`, `localhost`, `[::1]`; else
 * 403 EACCES), reads included: a page of another site that rebinds its own name to 127.0.0.1
 * (DNS rebinding) would otherwise be same-origin with the lab, read the dashboard's page and
 * the token in it.
 *
 * The check runs before the route's handler (a Nest guard): a refused request changes nothing.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { MIMEType } from 'node:util';
import { type CanActivate, type ExecutionContext, HttpException } from '@nestjs/common';
import { MmlabError } from '@mmlab/protocol';

/** The header the lab's own clients may send the token in (or `Authorization: Bearer`). */
export const LAB_TOKEN_HEADER = 'x-mmlab-token';

/** Methods that change nothing: no token, any content type. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A new lab's token: 256 random bits, hex (what `mmlab up` and LocalLab generate). */
export function newLabToken(): string {
  return randomBytes(32).toString('hex');
}

/** How to give a lab a token, for the messages of a lab that has none. */
export const HOW_TO_SET_TOKEN =
  'set MMLAB_LAB_TOKEN (e.g. `export MMLAB_LAB_TOKEN=$(openssl rand -hex 32)`) before starting the lab; `mmlab up` generates one';

/** What the check needs of a request (a node IncomingMessage, Express's Request). */
export interface RequestHead {
  method?: string;
  headers: IncomingHttpHeaders;
}

export type MutationVerdict =
  { ok: true } | { ok: false; status: 401 | 403 | 415; error: MmlabError };

/** Whether a host name or address is this machine's loopback. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The host name of a Host header (`127.0.0.1:8080` → 127.0.0.1), null if none or unparsable. */
function hostnameOf(header: string | undefined): string | null {
  if (!header) return null;
  try {
    return new URL(`http://${header}`).hostname;
  } catch {
    return null;
  }
}

/**
 * Is this request addressed to this machine, when the server listens on loopback only?
 * (bindHost: the address it is bound to; not loopback: any Host goes.)
 */
export function checkHost(req: RequestHead, bindHost: string): MutationVerdict {
  if (!isLoopbackHost(bindHost)) return { ok: true };
  const name = hostnameOf(req.headers.host);
  if (name !== null && isLoopbackHost(name)) return { ok: true };
  return {
    ok: false,
    status: 403,
    error: new MmlabError(
      'EACCES',
      `Host ${JSON.stringify(req.headers.host ?? '')} is not this machine: a lab listening on ${bindHost} answers requests to 127.0.0.1 or localhost only (MMLAB_HTTP_HOST)`,
    ),
  };
}

/** The media type of a Content-Type header (`application/json; charset=utf-8` → application/json), null if none or unparsable. */
function mediaType(header: string | undefined): string | null {
  if (!header) return null;
  try {
    return new MIMEType(header).essence;
  } catch {
    return null;
  }
}

/** The token a request carries: `Authorization: Bearer <t>`, else `X-Mmlab-Token: <t>`. */
export function tokenOf(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  const bearer = auth ? /^Bearer[ \t]+(\S+)\s*$/i.exec(auth)?.[1] : undefined;
  if (bearer) return bearer;
  const h = headers[LAB_TOKEN_HEADER];
  const v = Array.isArray(h) ? h[0] : h;
  return v?.trim() || undefined;
}

/** Equal strings, compared in constant time (hashes first: timingSafeEqual needs equal lengths). */
function sameToken(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

/** May this request go on? `token`: the lab's (undefined: the lab has none). */
export function checkMutation(req: RequestHead, token: string | undefined): MutationVerdict {
  const method = (req.method ?? 'GET').toUpperCase();
  if (SAFE_METHODS.has(method)) return { ok: true };
  const type = mediaType(req.headers['content-type']);
  if (type !== 'application/json')
    return {
      ok: false,
      status: 415,
      error: new MmlabError(
        'EBADMSG',
        `${method} takes Content-Type: application/json only (got ${type ?? 'none'})`,
      ),
    };
  if (token === undefined)
    return {
      ok: false,
      status: 403,
      error: new MmlabError(
        'EACCES',
        `this lab was started without a token, so nothing may change it over HTTP: ${HOW_TO_SET_TOKEN}`,
      ),
    };
  const given = tokenOf(req.headers);
  if (given === undefined)
    return {
      ok: false,
      status: 401,
      error: new MmlabError(
        'EACCES',
        `${method} needs the lab's token: send Authorization: Bearer <token> (mmlab up prints it; the CLI reads --token, MMLAB_LAB_TOKEN or the file mmlab up writes)`,
      ),
    };
  if (!sameToken(given, token))
    return {
      ok: false,
      status: 401,
      error: new MmlabError('EACCES', "wrong token: not this lab's"),
    };
  return { ok: true };
}

/**
 * The guard (app.useGlobalGuards(new LabTokenGuard(env.MMLAB_LAB_TOKEN, env.MMLAB_HTTP_HOST))):
 * HTTP requests only; a hybrid app's NATS handlers are not its business (and do not inherit
 * the app's guards).
 */
export class LabTokenGuard implements CanActivate {
  constructor(
    private readonly token: string | undefined,
    /** the address the server is bound to (MMLAB_HTTP_HOST) */
    private readonly bindHost: string,
  ) {}

  canActivate(ctx: ExecutionContext): boolean {
    if (ctx.getType() !== 'http') return true;
    const req = ctx.switchToHttp().getRequest<RequestHead>();
    for (const v of [checkHost(req, this.bindHost), checkMutation(req, this.token)])
      if (!v.ok) throw new HttpException(v.error.toWire(), v.status);
    return true;
  }
}
