/**
 * How every HTTP server of the lab answers a failure (the lab API, the observer, the HTTP side
 * of every mm, cpu, hca and kvm instance): one filter and one set of server hooks, declared
 * here once and installed by useLabHttpErrors(app). Every refusal is the lab's wire error
 * `{code, message, definite}` (libs/protocol errors.ts) with an HTTP status that says what kind
 * of failure it was — Nest's own refusals included, which Nest would answer untyped:
 *
 *   400 EBADMSG     a body that is not JSON, an invalid path parameter (Nest, body-parser); a
 *                   request Node's parser refuses (an invalid request line, header or framing:
 *                   the connection is closed after)
 *   413 EBADMSG     a body over the parser's limit
 *   415 EBADMSG     a charset the parser does not take, any Content-Encoding but identity
 *   431 EBADMSG     headers (the path included) past Node's limit (the connection is closed)
 *   401/403 EACCES  (LabTokenGuard, and the loopback Host check below)
 *   404 ENOHANDLER  no such route, or not with this method (CONNECT included)
 *   408 ETIMEDOUT   the request did not arrive in time (Node's requestTimeout)
 *   5xx             an HttpException's body as it is (GET /health's documented 503); anything
 *                   else unexpected: 500 EINTERNAL, logged, its message kept out of the answer
 *
 * A body that already carries a code of the lab (`{code, message}`) keeps it. A server bound to
 * loopback also refuses, before anything else (routes, body parsing, OpenAPI), a request whose
 * Host is not this machine (lab-token.ts checkHost: 403 EACCES).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  type INestApplication,
  Logger,
} from '@nestjs/common';
import { ERROR_CODES, type ErrorCode, MmlabError, type WireError } from '@mmlab/protocol';
import { checkHost } from './lab-token';

/** The lab's code for an HTTP refusal of this status (4xx; 5xx: EINTERNAL). */
export function codeOfStatus(status: number): ErrorCode {
  if (status === 401 || status === 403) return 'EACCES';
  if (status === 404 || status === 405) return 'ENOHANDLER';
  if (status === 408) return 'ETIMEDOUT';
  if (status >= 400 && status < 500) return 'EBADMSG';
  return 'EINTERNAL';
}

const wire = (code: ErrorCode, message: string): WireError =>
  new MmlabError(code, message).toWire();

const hasLabCode = (body: unknown): boolean =>
  typeof body === 'object' &&
  body !== null &&
  (ERROR_CODES as readonly unknown[]).includes((body as { code?: unknown }).code) &&
  typeof (body as { message?: unknown }).message === 'string';

/** An error of the http-errors kind (body-parser's, raw-body's): a 4xx status, a safe message. */
function httpErrorStatus(e: unknown): number | null {
  if (typeof e !== 'object' || e === null) return null;
  const s =
    (e as { statusCode?: unknown; status?: unknown }).statusCode ??
    (e as { status?: unknown }).status;
  return typeof s === 'number' &&
    s >= 400 &&
    s < 500 &&
    (e as { expose?: unknown }).expose !== false
    ? s
    : null;
}

/** What the answer to an exception thrown while serving an HTTP request is: status and body. */
export function httpAnswerOf(e: unknown): { status: number; body: unknown } {
  if (e instanceof HttpException) {
    const status = e.getStatus();
    const body = e.getResponse();
    if (hasLabCode(body)) return { status, body };
    // a documented 5xx body (GET /health's 503: Terminus's details, the lab API's {status, nats})
    if (status >= 500 && typeof body === 'object' && body !== null) return { status, body };
    const message =
      typeof body === 'object' && body !== null && 'message' in body
        ? String(body.message)
        : typeof body === 'string'
          ? body
          : e.message;
    return { status, body: wire(codeOfStatus(status), message) };
  }
  if (e instanceof MmlabError) {
    const status =
      e.code === 'EBADMSG' ? 400 : e.code === 'EACCES' ? 401 : e.code === 'ENOENT' ? 404 : 500;
    return { status, body: e.toWire() };
  }
  const status = httpErrorStatus(e);
  if (status !== null)
    return {
      status,
      body: wire(codeOfStatus(status), (e as Error).message || STATUS_CODES[status] || 'refused'),
    };
  return { status: 500, body: wire('EINTERNAL', 'internal error (logged by the server)') };
}

const log = new Logger('HttpErrors');

/**
 * Every exception of an HTTP request as the lab's wire error (httpAnswerOf). HTTP only: a
 * hybrid app's microservice has its own filters (WireErrorFilter), and no inherited config.
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  catch(e: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<ServerResponse>();
    const { status, body } = httpAnswerOf(e);
    if (status >= 500 && !(e instanceof HttpException))
      log.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    if (res.headersSent) {
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.statusCode = status;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(text));
    res.end(text);
  }
}

/** A whole HTTP/1.1 answer for a socket Node's parser gave up on (it closes the connection). */
function rawAnswer(status: number, code: ErrorCode, message: string): string {
  const body = JSON.stringify(wire(code, message));
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

/**
 * Node's parser errors (Node would answer an empty 400/431 and close): the same statuses, with
 * a typed body, and the connection closed (after a framing error it cannot be read any further).
 */
export function onClientError(err: Error & { code?: string }, socket: Duplex): void {
  const pending = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || pending?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, code, what] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? ([431, 'EBADMSG', 'the request line and headers are over the limit'] as const)
      : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
        ? ([413, 'EBADMSG', 'chunk extensions over the limit'] as const)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ([408, 'ETIMEDOUT', 'the request did not arrive in time'] as const)
          : ([400, 'EBADMSG', 'not an HTTP/1.1 request'] as const);
  socket.end(rawAnswer(status, code, `${what} (${err.code ?? err.message})`));
}

/** CONNECT (Node closes the socket when nobody listens): no route of the lab tunnels. */
function onConnect(req: IncomingMessage, socket: Duplex): void {
  socket.on('error', () => undefined);
  socket.end(rawAnswer(404, 'ENOHANDLER', `no route for CONNECT ${req.url ?? ''}`));
}

/**
 * The loopback Host check as the first middleware: a request to a server bound to loopback
 * (bindHost 127.0.0.1, localhost, ::1) must name this machine in its Host, whatever its route
 * (OpenAPI, an unknown route, a body not parsed yet); else 403 EACCES.
 */
export function hostCheck(bindHost: string) {
  return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const v = checkHost(req, bindHost);
    if (v.ok) return next();
    const text = JSON.stringify(v.error.toWire());
    res.statusCode = v.status;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(text));
    res.end(text);
  };
}

/**
 * Request bodies are taken as sent only (Content-Encoding absent or `identity`), else 415
 * EBADMSG before the body is read: the lab's bodies are a few bytes of JSON, and a compressed
 * one that decodes to nothing (fuzz-http: garbage sent as `br`) reached POST /heal as `{}`,
 * which heals everything.
 */
export function identityBodiesOnly(
  req: IncomingMessage,
  res: ServerResponse,
  next: () => void,
): void {
  const enc = req.headers['content-encoding'];
  if (enc === undefined || enc.trim().toLowerCase() === 'identity') return next();
  const text = JSON.stringify(
    wire('EBADMSG', `request bodies are taken as sent only, not with Content-Encoding ${enc}`),
  );
  res.statusCode = 415;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/**
 * Install the lab's HTTP error handling on an app before its routes are set up (call it before
 * SwaggerModule.setup and app.init): the Host check (bindHost: the address it will listen on),
 * HttpErrorFilter (first: filters given later take precedence, e.g. the lab API's
 * MmlabErrorFilter), and the server's clientError and connect hooks.
 */
export function useLabHttpErrors(
  app: INestApplication,
  bindHost: string,
  ...filters: ExceptionFilter[]
): void {
  app.use(hostCheck(bindHost));
  app.use(identityBodiesOnly);
  app.useGlobalFilters(new HttpErrorFilter(), ...filters);
  const server = app.getHttpServer() as Server;
  server.removeAllListeners('clientError');
  server.on('clientError', onClientError);
  server.on('connect', onConnect);
}
