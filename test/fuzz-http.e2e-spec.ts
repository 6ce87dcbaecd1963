/**
 * Fuzz every HTTP endpoint of a lab (issue 15): at least PER_ENDPOINT generated malformed or
 * hostile requests per endpoint (method + route, per server), fast-check, seeded (fuzzSeed),
 * sent BATCH at a time over a keep-alive agent of CONCURRENCY sockets. The servers:
 *
 *   the lab API        `mmlab api` (a process of the built CLI, on this lab's NATS):
 *                      GET/POST /chaos, POST /heal, GET /targets, /health, /api, /api-json
 *   the observer       GET /events, /stats, /stream, /invariants, /, /dashboard,
 *                      /assets/:file, /dashboard/assets/:file, /api, /api-json, /metrics,
 *                      /health; POST /reset
 *   mm-0, cpu0, hca0,  GET /metrics and /health (every instance kind once)
 *   kvm0
 *
 * Each request is one of (only requests a correct server must refuse are generated: a GET of a
 * route that takes no query, with a query string, is a request it may serve, and is not sent):
 *   method     a method the route does not have (PUT, DELETE, PATCH, OPTIONS, TRACE, ... and
 *              POST on a GET route, GET on a POST one), with or without a body
 *   path       the route made odd: dot segments, encoded slashes and dots, NUL, invalid or
 *              overlong percent-encoding, suffixes, very long paths (past Node's header limit:
 *              431, and the connection closed by Node's parser)
 *   query      (routes with a query) unknown keys, repeated keys (arrays), wrong types,
 *              huge, negative, NaN, 1e999, non-integer numbers, empty values, from > to
 *   body       (POST routes, with the lab's token) not JSON, invalid UTF-8, deep nesting,
 *              a charset or content encoding the parser refuses, brokenOf(the body's schema)
 *   spec       (POST /chaos, with the token) a valid ChaosSpec naming a target this lab has
 *              not, or a process fault (`mmlab api` has no local lab: 422)
 *   identity   (POST routes) a valid body with a forged identity: no token, a wrong one,
 *              another lab's, the token in the wrong header, a form or text/plain body, a
 *              cross-site Origin; (every route) a Host that is not this machine (the loopback
 *              check: 403, reads included)
 *   oversized  a body over the parser's limit (100 kB): 413
 *   raw        malformed HTTP on a socket of its own: an invalid request line, method or
 *              version, a header without a colon or with a NUL, conflicting Content-Length /
 *              Transfer-Encoding (smuggling), a bad chunk, a header past the limit, CONNECT
 * and each must be answered (no timeout, no connection closed without an answer: Node's parser
 * closes the connection after a request it cannot parse, and after a refusal that left a body
 * unread, but only once it answered — a typed 400/431 from useLabHttpErrors' clientError hook;
 * a request that found its kept-alive socket closed that way is sent again, as browsers do,
 * and counted), with a 4xx status (never 5xx: GET /health's documented 503 needs NATS or Redis
 * down, which no request can do; one 3xx: the Swagger UI's static files redirect a directory,
 * /api/. → /api/./) and, but for HEAD, a body `{code, message}` whose code is one of the lab's
 * ERROR_CODES; no answer carries a CORS header.
 *
 * After each endpoint: Redis unchanged (digest, as fuzz-nats), the observer's stored events
 * unchanged (/stats: the lab's own traffic is none here), no fault window opened (GET /chaos),
 * every process alive. fsck at the end (startTestLab's stop()).
 *
 * The seed is printed (MMLAB_FUZZ_SEED=<seed> replays a run); so are the counts per endpoint.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import fc from 'fast-check';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '@mmlab/protocol';
import { newLabToken } from '@mmlab/runtime';
import { type LocalLab, repoRoot } from '@mmlab/runner';
import { ChaosSpec, ChaosTarget, PROCESS_FAULTS } from '@mmlab/scenario';
import { type TestLab, startTestLab } from '@mmlab/testing';
import { type FuzzFigures, brokenOf, encode, figureLines, fuzzSeed, validOf } from './support/fuzz';
import { changedKeys, digest } from './support/redis-digest';

const PER_ENDPOINT = 1000;
const BATCH = 250;
const CONCURRENCY = 32;
/** How long an answer may take on a loaded machine (a hang guard, not a timing assertion). */
const DEADLINE_MS = 15_000;
/** body-parser's JSON limit (Nest's default): a body past it is 413. */
const BODY_LIMIT = 100 * 1024;

const seed = fuzzSeed();
const root = repoRoot();
const cli = path.join(root, 'dist', 'apps', 'lab', 'src', 'main.js');

/** The lab API's POST /heal body (apps/lab chaos.controller.ts HealRequest). */
const HealRequest = z.strictObject({ target: ChaosTarget.optional() });
/** The observer's POST /reset body: none, or an empty object. */
const ResetRequest = z.strictObject({});

type Server = 'api' | 'observer' | 'mm-0' | 'cpu0' | 'hca0' | 'kvm0';

/** A route's query string: each key's kind (what a valid value looks like). */
type QueryKey = 'count' | 'positive' | 'decimal' | 'string' | 'kinds';
interface Endpoint {
  server: Server;
  method: 'GET' | 'POST';
  route: string;
  /** an example of the route (a :param filled in) */
  path: string;
  query?: Record<string, QueryKey>;
  /** for POST routes: the body schema, and what a valid body is */
  body?: z.ZodType;
  /** POST bodies the lab would accept (forged-identity requests carry these) */
  validBodies?: unknown[];
  /** what a count key may be at most */
  maxCount?: Record<string, number>;
}

const SERVICE_ROUTES = (server: Server): Endpoint[] => [
  { server, method: 'GET', route: '/metrics', path: '/metrics' },
  { server, method: 'GET', route: '/health', path: '/health' },
];

const ENDPOINTS: Endpoint[] = [
  { server: 'api', method: 'GET', route: '/chaos', path: '/chaos' },
  {
    server: 'api',
    method: 'POST',
    route: '/chaos',
    path: '/chaos',
    body: ChaosSpec,
    validBodies: [
      { target: 'cpu0', fault: 'kill' },
      { target: 'hca0', fault: 'hang' },
      { target: 'kvm0', fault: 'drop-ack' },
      { target: 'mm', fault: 'pause' },
      { target: 'hca0', fault: 'latency', distribution: 100 },
    ],
  },
  {
    server: 'api',
    method: 'POST',
    route: '/heal',
    path: '/heal',
    body: HealRequest,
    validBodies: [{}, { target: 'hca0' }],
  },
  { server: 'api', method: 'GET', route: '/targets', path: '/targets' },
  { server: 'api', method: 'GET', route: '/health', path: '/health' },
  { server: 'api', method: 'GET', route: '/api', path: '/api' },
  { server: 'api', method: 'GET', route: '/api-json', path: '/api-json' },
  {
    server: 'observer',
    method: 'GET',
    route: '/events',
    path: '/events',
    query: {
      kind: 'kinds',
      pid: 'positive',
      instance: 'string',
      op: 'string',
      from: 'decimal',
      to: 'decimal',
      offset: 'count',
      limit: 'count',
    },
    maxCount: { limit: 100_000 },
  },
  { server: 'observer', method: 'GET', route: '/stats', path: '/stats' },
  {
    server: 'observer',
    method: 'POST',
    route: '/reset',
    path: '/reset',
    body: ResetRequest,
    validBodies: [{}],
  },
  {
    server: 'observer',
    method: 'GET',
    route: '/stream',
    path: '/stream',
    query: { from: 'decimal', tail: 'count' },
    maxCount: { tail: 2_000_000 },
  },
  {
    server: 'observer',
    method: 'GET',
    route: '/invariants',
    path: '/invariants',
    query: { softlockupMs: 'decimal', maxViolations: 'count' },
    maxCount: { maxViolations: 100_000 },
  },
  { server: 'observer', method: 'GET', route: '/', path: '/' },
  { server: 'observer', method: 'GET', route: '/dashboard', path: '/dashboard' },
  { server: 'observer', method: 'GET', route: '/assets/:file', path: '/assets/index.js' },
  {
    server: 'observer',
    method: 'GET',
    route: '/dashboard/assets/:file',
    path: '/dashboard/assets/index.js',
  },
  { server: 'observer', method: 'GET', route: '/api', path: '/api' },
  { server: 'observer', method: 'GET', route: '/api-json', path: '/api-json' },
  ...SERVICE_ROUTES('observer'),
  ...SERVICE_ROUTES('mm-0'),
  ...SERVICE_ROUTES('cpu0'),
  ...SERVICE_ROUTES('hca0'),
  ...SERVICE_ROUTES('kvm0'),
];

/** The methods each route of a server has (a wrong method is one it has not). */
function methodsOf(server: Server, route: string): Set<string> {
  const m = new Set<string>(
    ENDPOINTS.filter((e) => e.server === server && e.route === route).map((e) => e.method),
  );
  if (m.has('GET')) m.add('HEAD');
  return m;
}

const WRONG_METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
  'TRACE',
  'PROPFIND',
  'MKCOL',
  'PURGE',
  'SEARCH',
];

type Kind = 'method' | 'path' | 'query' | 'body' | 'spec' | 'identity' | 'oversized' | 'raw';

interface Shot {
  kind: Kind;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  /** raw bytes on a socket of its own (kind raw) */
  raw?: Buffer;
  /** what it is, for a failure's message */
  what: string;
}

interface Answer {
  status: number | null;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** no answer: why (timeout, reset, closed) */
  error?: string;
}

/** The token of this lab and one of another. */
let TOKEN = '';
const OTHER_TOKEN = newLabToken();

const json = (v: unknown): Buffer => Buffer.from(encode(v));
const JSON_TYPE = { 'content-type': 'application/json' };
const auth = (): Record<string, string> => ({ authorization: `Bearer ${TOKEN}` });

/** Bodies that are not a JSON value the route could read. */
const badJson: fc.Arbitrary<[Buffer, string]> = fc.oneof(
  fc
    .constantFrom(
      '{',
      '{bad',
      'NaN',
      'undefined',
      "{'target':'cpu0'}",
      '{"target":"cpu0",}',
      '{"target":"cpu0"}{"fault":"kill"}',
      '[1,2',
      '"unterminated',
      '{"a":1e999999999999}x',
      '\u0000',
      '{"target":"cpu0","fault":"kill"',
      '0x10',
      'tru',
      '<xml/>',
      'target=cpu0&fault=kill',
    )
    .map((s): [Buffer, string] => [Buffer.from(s), 'not JSON']),
  fc
    .string({ minLength: 1, maxLength: 40 })
    .filter((s) => {
      try {
        JSON.parse(s);
        return false;
      } catch {
        return true;
      }
    })
    .map((s): [Buffer, string] => [Buffer.from(s), 'not JSON']),
  fc
    .tuple(
      fc.constantFrom([0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x80], [0xfe, 0xff]),
      fc.constantFrom('{"target":"', '{"target":"cpu0","fault":"', '{"', ''),
      fc.constantFrom('"}', '":1}', '', 'kill"}'),
    )
    .map(([bad, pre, post]): [Buffer, string] => [
      Buffer.concat([Buffer.from(pre), Buffer.from(bad), Buffer.from(post)]),
      'invalid UTF-8',
    ]),
);

/** JSON bodies that no POST route takes (deep nesting, other types, prototype keys). */
const oddJson: fc.Arbitrary<[Buffer, string]> = fc.oneof(
  fc
    .constantFrom(
      'null',
      'true',
      '0',
      '-1',
      '"x"',
      '[]',
      '[{"target":"cpu0","fault":"kill"}]',
      '{"__proto__":{"target":"cpu0","fault":"kill"}}',
      '{"constructor":{"prototype":{"polluted":1}}}',
      '{"target":"cpu0","fault":"kill","__proto__":{"ms":1}}',
      '['.repeat(20_000) + ']'.repeat(20_000),
      '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000),
      '{"target":' + '['.repeat(30_000) + ']'.repeat(30_000) + '}',
    )
    .map((s): [Buffer, string] => [Buffer.from(s), `JSON ${s.slice(0, 40)}`]),
  fc
    .jsonValue({ maxDepth: 2 })
    .filter((v) => typeof v !== 'object' || v === null || Array.isArray(v))
    .map((v): [Buffer, string] => [json(v), 'JSON no object']),
);

/** A body over the limit, in one of the shapes a parser may choke on. */
const oversizedBody: fc.Arbitrary<Buffer> = fc
  .tuple(fc.constantFrom('string', 'array', 'keys', 'raw'), fc.integer({ min: 1, max: 64 }))
  .map(([shape, extraKb]) => {
    const room = BODY_LIMIT + extraKb * 1024;
    switch (shape) {
      case 'string':
        return Buffer.from(`{"target":"${'x'.repeat(room)}","fault":"kill"}`);
      case 'array':
        return Buffer.from(`[${'0,'.repeat(room / 2)}0]`);
      case 'keys':
        return Buffer.from(
          `{${Array.from({ length: Math.ceil(room / 8) }, (_, i) => `"k${i}":1`).join(',')}}`,
        );
      case 'raw':
        return Buffer.alloc(room, 0x61);
    }
  });

/** Header sets with a forged identity (each carries no valid credential of this lab). */
const forgedHeaders: fc.Arbitrary<[Record<string, string>, string]> = fc.constantFrom<
  [Record<string, string>, string]
>(
  [{ ...JSON_TYPE }, 'no token'],
  [{ ...JSON_TYPE, authorization: `Bearer ${OTHER_TOKEN}` }, "another lab's token"],
  [{ ...JSON_TYPE, authorization: 'Bearer ' }, 'empty bearer'],
  [{ ...JSON_TYPE, authorization: 'Bearer wrong' }, 'wrong token'],
  [{ ...JSON_TYPE, 'x-mmlab-token': OTHER_TOKEN }, "another lab's X-Mmlab-Token"],
  [{ ...JSON_TYPE, origin: 'https://evil.example' }, 'cross-site, no token'],
  [
    { ...JSON_TYPE, origin: 'null', authorization: `Bearer ${OTHER_TOKEN}` },
    'opaque origin, wrong token',
  ],
  [{ ...JSON_TYPE, cookie: 'MMLAB_LAB_TOKEN=@TOKEN@' }, 'token in a cookie'],
  [{ ...JSON_TYPE, 'x-auth-token': '@TOKEN@' }, 'token in X-Auth-Token'],
  [{ ...JSON_TYPE, authorization: '@TOKEN@' }, 'token without Bearer'],
  [{ ...JSON_TYPE, authorization: 'Basic @TOKEN@' }, 'token as Basic'],
  [{ ...JSON_TYPE, authorization: 'Token @TOKEN@' }, 'token as Token'],
  [{ ...JSON_TYPE, 'x-mmlab-token': '' }, 'empty X-Mmlab-Token'],
  [
    { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Bearer @TOKEN@' },
    'a form, with the token',
  ],
  [
    {
      'content-type': 'text/plain',
      origin: 'https://evil.example',
      authorization: 'Bearer @TOKEN@',
    },
    'text/plain, cross-site',
  ],
  [{ 'content-type': 'multipart/form-data; boundary=x', ...{} }, 'multipart'],
  [{ 'content-type': 'application/jsonx', authorization: 'Bearer @TOKEN@' }, 'application/jsonx'],
  [{ 'content-type': 'json', authorization: 'Bearer @TOKEN@' }, 'content type json'],
  [{ 'content-type': ';;;', authorization: 'Bearer @TOKEN@' }, 'content type ;;;'],
  [{ authorization: 'Bearer @TOKEN@' }, 'no content type'],
);

/** Host headers that are not this machine (DNS rebinding, and worse). */
const FOREIGN_HOSTS = [
  'evil.example',
  'evil.example:80',
  '127.0.0.1.evil.example',
  'localhost.evil.example',
  '10.0.0.1',
  '0.0.0.0',
  '[::ffff:7f00:1]x',
  '[fe80::1]',
  '127.0.0.1@evil.example',
  'evil.example#127.0.0.1',
  '',
  ' ',
  'a'.repeat(300),
];

/** Paths near a route that are not the route. */
function oddPath(route: string): fc.Arbitrary<string> {
  const r = route === '/' ? '' : route;
  const name = r.slice(1) || 'index.html';
  return fc.oneof(
    fc.constantFrom(
      `${r}/..`,
      `${r}/../..`,
      `/x/..${r}/..`,
      `/.${r}/.`,
      `${r}/.`,
      `/%2e%2e${r}`,
      `/%2F${name}`,
      `${r}%2F`,
      `${r}%2F..%2F..%2Fetc%2Fpasswd`,
      `/%2e%2e%2f%2e%2e%2fpackage.json`,
      `/..%2F..%2F${name}`,
      `${r}%00`,
      `${r}%00.json`,
      `${r}%`,
      `${r}%zz`,
      `${r}%E0%A4%A`,
      `${r}%C0%AF`,
      `${r}%C0%AE%C0%AE`,
      `${r}%ED%A0%80`,
      `${r}%FF%FE`,
      `${r}.json`,
      `${r}.bak`,
      `${r}~`,
      `${r};x=1`,
      `${r}/x`,
      `${r}/${name}`,
      `/api/v1${r}`,
      `${r}//x`,
      `/${name}%20`,
      `/${name}%09`,
      `/../../../../etc/passwd`,
      `/assets/..%2F..%2Fpackage.json`,
      `/assets/%2e%2e/%2e%2e/package.json`,
      `/dashboard/assets/..%5c..%5cpackage.json`,
      `/assets/%E0%A4%A`,
      `/assets/.env`,
      `/assets/index.html%00.js`,
      `/assets/x`,
      `/assets/nosuch.js`,
      `/api/%2e%2e/package.json`,
      `/api/..%2f..%2fpackage.json`,
      `/api-json/x`,
      `/metrics/x`,
      `/health/..`,
    ),
    fc.integer({ min: 100, max: 8000 }).map((n) => `${r}/${'a'.repeat(n)}`),
    fc.integer({ min: 10, max: 800 }).map((n) => `${r}${'/..'.repeat(n)}`),
    fc.integer({ min: 10, max: 2000 }).map((n) => `${r}${'%2F'.repeat(n)}`),
    // past Node's 16 KiB header limit: 431, and Node's parser closes the connection
    fc.integer({ min: 17_000, max: 40_000 }).map((n) => `${r}/${'b'.repeat(n)}`),
  );
}

/** One bad value for a query key of kind k (or a value of another key's kind). */
function badValue(k: QueryKey, max?: number): fc.Arbitrary<string> {
  const numbers = [
    'NaN',
    'Infinity',
    '-Infinity',
    '1e999',
    '-1e999',
    '0x10',
    '1e3x',
    '',
    ' ',
    'abc',
    '1,2',
    '１',
    '+1',
  ];
  switch (k) {
    case 'count':
    case 'positive':
      return fc.constantFrom(
        ...numbers,
        '-1',
        '1.5',
        '1e3',
        '99999999999999999999',
        '18446744073709551616',
        String(Number.MAX_SAFE_INTEGER + 2),
        ...(max !== undefined ? [String(max + 1), String(max * 10)] : []),
        ...(k === 'positive' ? ['0', '00'] : []),
      );
    case 'decimal':
      return fc.constantFrom(...numbers);
    case 'string':
      return fc.constant('');
    case 'kinds':
      return fc.constantFrom('nosuch', 'FAULT', 'fault,nosuch', '__proto__', ' ', 'constructor');
  }
}

/** A query string that the route's schema refuses (each built to be refused). */
function badQuery(e: Endpoint): fc.Arbitrary<[string, string]> {
  const q = e.query!;
  const keys = Object.keys(q);
  const good = (k: string): string =>
    q[k] === 'kinds' ? 'fault' : q[k] === 'string' ? 'x' : q[k] === 'decimal' ? '1' : '1';
  const extra = fc
    .subarray(keys, { maxLength: 2 })
    .map((ks) => ks.map((k) => `${k}=${encodeURIComponent(good(k))}`));
  return fc.oneof(
    // an unknown key
    fc
      .tuple(
        fc.constantFrom('bogus', '__proto__', 'constructor', 'Limit', 'limit ', 'x[y]', 'token'),
        fc.string({ maxLength: 8 }),
        extra,
      )
      .map(([k, v, rest]): [string, string] => [
        [`${encodeURIComponent(k)}=${encodeURIComponent(v)}`, ...rest].join('&'),
        `unknown key ${k}`,
      ]),
    // a key given twice (an array)
    fc
      .tuple(fc.constantFrom(...keys), extra)
      .map(([k, rest]): [string, string] => [
        [
          `${k}=${encodeURIComponent(good(k))}`,
          `${k}=${encodeURIComponent(good(k))}`,
          ...rest,
        ].join('&'),
        `${k} twice`,
      ]),
    // a bad value
    fc
      .constantFrom(...keys)
      .chain((k) =>
        fc
          .tuple(fc.constant(k), badValue(q[k], e.maxCount?.[k]), extra)
          .map(([key, v, rest]): [string, string] => [
            [
              `${key}=${encodeURIComponent(v)}`,
              ...rest.filter((r) => !r.startsWith(`${key}=`)),
            ].join('&'),
            `${key}=${v}`,
          ]),
      ),
    ...(q.from === 'decimal' && q.to === 'decimal'
      ? [fc.constant<[string, string]>(['from=10&to=1', 'from > to'])]
      : []),
  );
}

/** A valid ChaosSpec this lab cannot do: an unknown target, or a process fault (no local lab). */
const hostileSpec: fc.Arbitrary<[unknown, string]> = fc
  .tuple(
    validOf(ChaosSpec),
    fc.constantFrom('nosuch', 'cpu7', 'mm-3', 'hca1', 'kvm9', 'observer', 'nats', 'redis', 'x'),
    fc.boolean(),
    fc.constantFrom(...PROCESS_FAULTS),
    fc.constantFrom('cpu0', 'mm', 'mm-0', 'hca0', 'kvm0', 'observer'),
  )
  .map(([v, unknown, processFault, pf, real]) => {
    const spec = { ...(v as Record<string, unknown>) };
    if (processFault) {
      // a process fault on a real target: `mmlab api` has no local lab to signal (422)
      for (const k of ['distribution', 'jitterMs', 'callbacks']) delete spec[k];
      return [{ ...spec, target: real, fault: pf }, `process fault ${pf} ${real}`] as [
        unknown,
        string,
      ];
    }
    return [{ ...spec, target: unknown }, `unknown target ${unknown}`] as [unknown, string];
  })
  .filter(([v]) => ChaosSpec.safeParse(v).success);

/** Malformed HTTP on a socket (what no client library writes). */
function rawShot(e: Endpoint): fc.Arbitrary<[Buffer, string]> {
  const p = e.path;
  const host = 'Host: 127.0.0.1\r\n';
  // a body's framing broken on a request refused anyway (a GET route's head may be answered
  // before its body is read): PUT on a GET route (404), POST without a content type (415)
  const m = e.method === 'GET' ? 'PUT' : 'POST';
  const cases: Array<[string | Buffer, string]> = [
    ['GARBAGE\r\n\r\n', 'no request line'],
    [`FOO ${p} HTTP/1.1\r\n${host}\r\n`, 'unknown method'],
    [`GET ${p} HTTP/9.9\r\n${host}\r\n`, 'HTTP/9.9'],
    [`GET ${p} HTTP/1.1 extra\r\n${host}\r\n`, 'extra token in the request line'],
    [`GET ${p} HTTP/1.1\r\n${host}BadHeader\r\n\r\n`, 'header without a colon'],
    [`GET ${p} HTTP/1.1\r\n${host}X: a\u0000b\r\n\r\n`, 'NUL in a header'],
    [`GET ${p} HTTP/1.1\r\n${host}X Y: z\r\n\r\n`, 'space in a header name'],
    [`GET ${p} HTTP/1.1\r\n${host} folded\r\n\r\n`, 'obsolete line folding'],
    [`${m} ${p} HTTP/1.1\r\n${host}Content-Length: -1\r\n\r\n`, 'negative length'],
    [
      `${m} ${p} HTTP/1.1\r\n${host}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
      'two lengths',
    ],
    [
      `${m} ${p} HTTP/1.1\r\n${host}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`,
      'chunked and a length (smuggling)',
    ],
    [`${m} ${p} HTTP/1.1\r\n${host}Transfer-Encoding: chunked\r\n\r\nzz\r\n`, 'bad chunk size'],
    [
      `${m} ${p} HTTP/1.1\r\n${host}Transfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n`,
      'chunked not last',
    ],
    [`GET ${p} HTTP/1.1\r\n${host}X: ${'y'.repeat(20_000)}\r\n\r\n`, 'a header past 16 KiB'],
    [`GET ${p}\u0000 HTTP/1.1\r\n${host}\r\n`, 'NUL in the path'],
    [`GET ${p} HTTP/1.1\n${host.replace('\r\n', '\n')}X: y\r\n\r\n`, 'mixed line ends'],
    ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'HTTP/2 preface'],
    [`CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n`, 'CONNECT'],
    [
      `GET http://evil.example${p} HTTP/1.1\r\nHost: evil.example\r\n\r\n`,
      'absolute form, foreign host',
    ],
    [
      Buffer.concat([
        Buffer.from(`GET ${p}`),
        Buffer.from([0xff, 0xfe, 0xc0, 0xaf]),
        Buffer.from(` HTTP/1.1\r\n${host}Connection: close\r\n\r\n`),
      ]),
      'invalid UTF-8 in the path',
    ],
  ];
  return fc
    .constantFrom(...cases)
    .map(([b, what]): [Buffer, string] => [
      Buffer.isBuffer(b) ? b : Buffer.from(b, 'latin1'),
      what,
    ]);
}

const withToken = (h: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(h).map(([k, v]) => [k, v.replace('@TOKEN@', TOKEN)]));

/** The hostile requests of one endpoint. */
function shots(e: Endpoint): fc.Arbitrary<Shot> {
  const own = methodsOf(e.server, e.route);
  const wrong = WRONG_METHODS.filter((m) => !own.has(m));
  const post = e.method === 'POST';
  const validBody = fc.constantFrom(...(e.validBodies ?? [{}]));
  const anyBody: fc.Arbitrary<[Buffer | undefined, Record<string, string>, string]> = fc.oneof(
    fc.constant<[Buffer | undefined, Record<string, string>, string]>([undefined, {}, 'no body']),
    validBody.map((v): [Buffer, Record<string, string>, string] => [
      json(v),
      { ...JSON_TYPE, ...auth() },
      `${encode(v)} with the token`,
    ]),
    badJson.map(([b, w]): [Buffer, Record<string, string>, string] => [b, { ...JSON_TYPE }, w]),
    fc
      .string({ maxLength: 16 })
      .map((s): [Buffer, Record<string, string>, string] => [
        Buffer.from(s),
        { 'content-type': 'text/plain' },
        'text/plain',
      ]),
  );
  const kinds: Array<fc.WeightedArbitrary<Shot>> = [
    {
      weight: 30,
      arbitrary: fc.tuple(fc.constantFrom(...wrong), anyBody).map(([m, [body, headers, what]]) => ({
        kind: 'method',
        method: m,
        path: e.path,
        headers,
        body: m === 'HEAD' || m === 'TRACE' ? undefined : body,
        what: `${m} ${e.path} (${what})`,
      })),
    },
    {
      weight: 30,
      arbitrary: fc
        .tuple(oddPath(e.path), post ? validBody : fc.constant(undefined))
        .map(([p, v]) => ({
          kind: 'path',
          method: e.method,
          path: p,
          headers: post ? { ...JSON_TYPE, ...auth() } : {},
          body: post ? json(v) : undefined,
          what: `${e.method} ${p.slice(0, 120)}`,
        })),
    },
    {
      weight: 10,
      arbitrary: fc
        .tuple(fc.constantFrom(...FOREIGN_HOSTS), post ? validBody : fc.constant(undefined))
        .map(([h, v]) => ({
          kind: 'identity',
          method: e.method,
          path: e.path,
          headers: { host: h, ...(post ? { ...JSON_TYPE, ...auth() } : {}) },
          body: post ? json(v) : undefined,
          what: `${e.method} ${e.path} Host: ${h.slice(0, 40)}`,
        })),
    },
    {
      weight: 3,
      arbitrary: fc
        .tuple(oversizedBody, fc.constantFrom(...(post ? ['POST'] : wrong)))
        .map(([b, m]) => ({
          kind: 'oversized',
          method: m,
          path: e.path,
          headers: { ...JSON_TYPE, ...auth() },
          body: m === 'HEAD' || m === 'TRACE' ? undefined : b,
          what: `${m} ${e.path} with ${b.length} bytes`,
        })),
    },
    {
      weight: 5,
      arbitrary: rawShot(e).map(([raw, what]) => ({
        kind: 'raw',
        method: e.method,
        path: e.path,
        headers: {},
        raw,
        what: `raw: ${what}`,
      })),
    },
  ];
  if (e.query)
    kinds.push({
      weight: 40,
      arbitrary: badQuery(e).map(([q, what]) => ({
        kind: 'query',
        method: 'GET',
        path: `${e.path}?${q}`,
        headers: {},
        what: `GET ${e.path}?${q.slice(0, 200)} (${what})`,
      })),
    });
  if (post) {
    const schema = e.body!;
    kinds.push(
      {
        weight: 40,
        arbitrary: fc
          .oneof(
            { weight: 2, arbitrary: badJson },
            { weight: 1, arbitrary: oddJson },
            {
              weight: 3,
              arbitrary: brokenOf(schema)
                .filter((v) => !schema.safeParse(v).success)
                .map((v): [Buffer, string] => [json(v), `broken ${encode(v).slice(0, 200)}`]),
            },
          )
          .chain(([b, what]) =>
            fc
              .constantFrom<[Record<string, string>, string]>(
                [{}, ''],
                [{ 'content-type': 'application/json; charset=utf-8' }, ''],
                [{ 'content-type': 'application/json; charset=latin1' }, ' charset latin1'],
                [{ 'content-type': 'application/json; charset=utf-7' }, ' charset utf-7'],
                [{ 'content-encoding': 'gzip' }, ' gzip (not)'],
                [{ 'content-encoding': 'deflate' }, ' deflate (not)'],
                [{ 'content-encoding': 'br' }, ' br (not)'],
                [{ 'content-encoding': 'x-evil' }, ' encoding x-evil'],
              )
              .map(([h, w]): Shot => ({
                kind: 'body',
                method: 'POST',
                path: e.path,
                headers: { ...JSON_TYPE, ...auth(), ...h },
                body: b,
                what: `POST ${e.path} ${what}${w}`,
              })),
          ),
      },
      {
        weight: 30,
        arbitrary: fc.tuple(forgedHeaders, validBody).map(([[h, hw], v]) => ({
          kind: 'identity',
          method: 'POST',
          path: e.path,
          headers: withToken(h),
          body: json(v),
          what: `POST ${e.path} ${encode(v)} (${hw})`,
        })),
      },
    );
    if (e.route === '/chaos')
      kinds.push({
        weight: 30,
        arbitrary: hostileSpec.map(([v, what]) => ({
          kind: 'spec',
          method: 'POST',
          path: e.path,
          headers: { ...JSON_TYPE, ...auth() },
          body: json(v),
          what: `POST /chaos ${encode(v)} (${what})`,
        })),
      });
    if (e.route === '/heal')
      kinds.push({
        weight: 20,
        arbitrary: fc
          .constantFrom('nosuch', 'cpu7', 'mm-4', 'hca3', 'nats', 'redis', 'x')
          .map((target) => ({
            kind: 'spec',
            method: 'POST',
            path: e.path,
            headers: { ...JSON_TYPE, ...auth() },
            body: json({ target }),
            what: `POST /heal {"target":"${target}"} (no such target)`,
          })),
      });
  }
  return fc.oneof(...kinds);
}

/**
 * Send one request over the agent; its answer (the head only for an event stream). A request
 * that found its kept-alive socket closed under it (the server closes a connection after a
 * refusal that left the request's body unread: 413, 415, the guard's 401) is sent again on a
 * new one, as a browser does (Node's req.reusedSocket).
 */
async function send(base: URL, s: Shot, agent: http.Agent): Promise<Answer> {
  if (s.raw) return sendRaw(base, s.raw);
  const first = await sendOnce(base, s, agent);
  if (!first.reused) return first;
  resent++;
  return sendOnce(base, s, agent);
}
/** Requests sent again after their kept-alive socket was closed under them (printed). */
let resent = 0;

function sendOnce(base: URL, s: Shot, agent: http.Agent): Promise<Answer & { reused?: boolean }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (a: Answer & { reused?: boolean }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(a);
    };
    const headers: Record<string, string | number> = {
      host: base.host,
      ...s.headers,
    };
    if (s.body) headers['content-length'] = s.body.length;
    let req: http.ClientRequest;
    try {
      req = http.request({
        host: base.hostname,
        port: base.port,
        method: s.method,
        path: s.path,
        headers,
        agent,
        setHost: false,
      });
    } catch (e) {
      finish({ status: null, headers: {}, body: '', error: `client refused: ${String(e)}` });
      return;
    }
    const timer = setTimeout(() => {
      req.destroy();
      finish({ status: null, headers: {}, body: '', error: 'timeout' });
    }, DEADLINE_MS);
    req.on('response', (res) => {
      if (String(res.headers['content-type']).startsWith('text/event-stream')) {
        res.destroy();
        finish({ status: res.statusCode ?? null, headers: res.headers, body: '' });
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const end = () =>
        finish({
          status: res.statusCode ?? null,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
      res.on('end', end);
      res.on('close', end);
      res.on('error', end);
    });
    // after an answer, the server may close while the body is still being written (EPIPE)
    req.on('error', (err) =>
      finish({
        status: null,
        headers: {},
        body: '',
        error: `connection: ${err.message}`,
        reused: req.reusedSocket,
      }),
    );
    req.end(s.body);
  });
}

/** Write raw bytes on a new socket, half-close, read until the server closes. */
function sendRaw(base: URL, bytes: Buffer): Promise<Answer> {
  return new Promise((resolve) => {
    const sock = net.connect(Number(base.port), base.hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => sock.destroy(new Error('timeout')), DEADLINE_MS);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const head = text.split('\r\n\r\n')[0];
      const headers: http.IncomingHttpHeaders = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = text.slice(head.length + 4);
      // a chunked body: the chunks' data
      if (/chunked/i.test(String(headers['transfer-encoding'])))
        body = body.replace(/(?:^|\r\n)[0-9a-f]+\r\n/gi, '').replace(/\r\n$/, '');
      resolve(
        m
          ? { status: Number(m[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8') }
          : {
              status: null,
              headers: {},
              body: '',
              error: `closed without an answer (${text.length} bytes)`,
            },
      );
    });
    sock.on('connect', () => {
      sock.write(bytes);
      sock.end();
    });
  });
}

/** What is wrong with an answer to a hostile request (null: nothing). */
function problem(e: Endpoint, s: Shot, a: Answer): string | null {
  const what = `${e.server} ${s.kind} ${s.what.replace(/(.)\1{20,}/g, (m, c: string) => `${c}×${m.length}`).slice(0, 160)}`;
  if (a.status === null) return `${a.error} ← ${what}`;
  if (a.headers['access-control-allow-origin'] !== undefined)
    return `CORS header ${String(a.headers['access-control-allow-origin'])} ← ${what}`;
  if (a.status === 503 && e.route === '/health') return null;
  // the Swagger UI's static files (swagger-ui-express, serve-static) under /api/: a directory
  // (/api/.) is redirected to itself with a slash, not refused
  if (
    a.status === 301 &&
    s.path.startsWith('/api/') &&
    String(a.headers.location).startsWith('/api/')
  )
    return null;
  if (a.status < 400 || a.status > 499)
    return `status ${a.status} ${JSON.stringify(a.body.slice(0, 120))} ← ${what}`;
  if (s.method === 'HEAD' && !s.raw) return null;
  let body: unknown;
  try {
    body = JSON.parse(a.body);
  } catch {
    return `status ${a.status}, body not JSON: ${JSON.stringify(a.body.slice(0, 200))} ← ${what}`;
  }
  const b = body as { code?: unknown; message?: unknown };
  if (
    typeof b !== 'object' ||
    b === null ||
    typeof b.message !== 'string' ||
    !(ERROR_CODES as readonly unknown[]).includes(b.code)
  )
    return `status ${a.status}, untyped body ${a.body.slice(0, 200)} ← ${what}`;
  return null;
}

/** Run fn over items, n at a time. */
async function pool<T, R>(items: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }),
  );
  return out;
}

describe('fuzz: every HTTP endpoint', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let api: ChildProcess | undefined;
  const bases = new Map<Server, URL>();
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  /** per endpoint: requests by kind, answers by status/code */
  const figures = new Map<string, FuzzFigures>();

  const getJson = async <T>(server: Server, p: string): Promise<T> => {
    const r = await fetch(new URL(p, bases.get(server)));
    expect(r.status, `${server} ${p}`).toBe(200);
    return (await r.json()) as T;
  };
  const windows = () => getJson<{ windows: unknown[] }>('api', '/chaos').then((c) => c.windows);
  const stored = () =>
    getJson<{ events: number; byKind: Record<string, number> }>('observer', '/stats');

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 32,
        cpus: 1,
        mmReplicas: 1,
        subscribers: [
          { name: 'hca0', kind: 'hca' },
          { name: 'kvm0', kind: 'kvm' },
        ],
      },
      { http: true, trace: false },
    );
    lab = t.lab;
    TOKEN = lab.token;
    for (const s of ['observer', 'mm-0', 'cpu0', 'hca0', 'kvm0'] as const)
      bases.set(s, new URL(lab.httpUrl(s)));
    // some state for the digest to watch: a process with a written page
    const { pid } = await t.rpc.call('processCreate', {});
    const { addr } = await t.rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await t.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 7 }, { id: 0 });
    // the lab API as `mmlab api` serves it (compose's lab-api), on this lab's NATS and token
    const proc = spawn(process.execPath, [cli, 'api', '--port', '0', '--host', '127.0.0.1'], {
      cwd: root,
      env: { ...process.env, NATS_URL: lab.natsUrl, MMLAB_LAB_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    api = proc;
    let out = '';
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /lab API on (\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      proc.once('exit', (code) =>
        reject(new Error(`mmlab api exited (${code}) before it was ready:\n${out}\n${err}`)),
      );
    });
    bases.set('api', new URL(url));
    console.log(`fuzz-http: seed ${seed} (MMLAB_FUZZ_SEED=${seed} replays this run)`);
  });

  afterAll(async () => {
    const { rows, total } = figureLines(figures, 'requests');
    console.log(
      `fuzz-http: seed ${seed}, ${total} requests over ${figures.size} endpoints (${resent} sent again on a new connection):\n${rows.join('\n')}`,
    );
    agent.destroy();
    if (api && api.exitCode === null) {
      const exited = new Promise((r) => api!.once('exit', r));
      api.kill('SIGTERM');
      await exited;
    }
    await t?.stop();
  });

  it('covers every server: the lab API, the observer, and each instance kind', () => {
    expect(new Set(ENDPOINTS.map((e) => e.server))).toEqual(
      new Set(['api', 'observer', 'mm-0', 'cpu0', 'hca0', 'kvm0']),
    );
  });

  for (const e of ENDPOINTS)
    it(`${e.server} ${e.method} ${e.route}: ${PER_ENDPOINT}+ hostile requests, each a typed 4xx, nothing changed`, async () => {
      const base = bases.get(e.server)!;
      const name = `${e.server} ${e.method} ${e.route}`;
      const f = { sent: {} as Record<string, number>, codes: {} as Record<string, number> };
      figures.set(name, f);
      const before = {
        redis: await digest(t!.store),
        stats: await stored(),
        windows: await windows(),
      };
      // batches drawn from the seed (fc.sample: a failure names its requests, not a whole batch)
      const batches = fc.sample(fc.array(shots(e), { minLength: BATCH, maxLength: BATCH }), {
        seed,
        numRuns: Math.ceil(PER_ENDPOINT / BATCH),
      });
      const problems: string[] = [];
      for (const batch of batches) {
        const answers = await pool(batch, CONCURRENCY, (s) => send(base, s, agent));
        batch.forEach((s, i) => {
          const a = answers[i];
          f.sent[s.kind] = (f.sent[s.kind] ?? 0) + 1;
          let code = a.status === null ? 'none' : String(a.status);
          try {
            const c = (JSON.parse(a.body) as { code?: string }).code;
            if (c) code += ` ${c}`;
          } catch {
            // counted by status only
          }
          f.codes[code] = (f.codes[code] ?? 0) + 1;
          const p = problem(e, s, a);
          if (p) problems.push(p);
        });
      }
      if (problems.length > 0) console.log(`fuzz-http: ${name}:\n  ${problems.join('\n  ')}`);
      expect(problems.slice(0, 10), `${problems.length} wrong answers`).toEqual([]);
      expect(changedKeys(before.redis, await digest(t!.store)), 'Redis changed').toEqual([]);
      const after = await stored();
      expect(after.byKind, 'events stored by the observer').toEqual(before.stats.byKind);
      expect(after.events).toBe(before.stats.events);
      expect(await windows(), 'fault windows').toEqual(before.windows);
      expect(lab.instances.filter((i) => lab.proc(i).exitCode !== null)).toEqual([]);
      expect(api?.exitCode).toBe(null);
    });

  it('leaves every server answering, with no window opened and every process running', async () => {
    expect(await windows()).toEqual([]);
    for (const [s, base] of bases) {
      const r = await fetch(new URL('/health', base));
      expect(r.status, s).toBe(200);
    }
    expect(lab.instances.filter((i) => lab.proc(i).exitCode !== null)).toEqual([]);
    expect(api?.exitCode).toBe(null);
  });
});
