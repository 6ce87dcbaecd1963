/** The lab's HTTP refusals, as http-errors.ts maps them (pure: no server). */
import { PassThrough } from 'node:stream';
import {
  BadRequestException,
  NotFoundException,
  PayloadTooLargeException,
  ServiceUnavailableException,
} from '@nestjs/common';
import { describe, expect, it } from 'vitest';
import { MmlabError } from '@mmlab/protocol';
import { codeOfStatus, httpAnswerOf, identityBodiesOnly, onClientError } from './http-errors';

describe('httpAnswerOf', () => {
  it("types Nest's own refusals (an unknown route, a body that is not JSON, one too large)", () => {
    expect(httpAnswerOf(new NotFoundException('Cannot OPTIONS /stats'))).toEqual({
      status: 404,
      body: { code: 'ENOHANDLER', message: 'Cannot OPTIONS /stats', definite: true },
    });
    expect(httpAnswerOf(new BadRequestException('Unexpected token'))).toMatchObject({
      status: 400,
      body: { code: 'EBADMSG', message: 'Unexpected token' },
    });
    expect(httpAnswerOf(new PayloadTooLargeException())).toMatchObject({
      status: 413,
      body: { code: 'EBADMSG' },
    });
  });

  it('keeps a body that already has a code of the lab, and a documented 5xx body', () => {
    const typed = new MmlabError('EACCES', "wrong token: not this lab's").toWire();
    expect(httpAnswerOf(new BadRequestException(typed))).toEqual({ status: 400, body: typed });
    const down = { status: 'down', nats: 'closed' };
    expect(httpAnswerOf(new ServiceUnavailableException(down))).toEqual({
      status: 503,
      body: down,
    });
  });

  it("types body-parser's errors (http-errors: a status and an exposed message)", () => {
    const e = Object.assign(new Error('unsupported charset "LATIN1"'), {
      statusCode: 415,
      status: 415,
      expose: true,
    });
    expect(httpAnswerOf(e)).toMatchObject({
      status: 415,
      body: { code: 'EBADMSG', message: 'unsupported charset "LATIN1"' },
    });
  });

  it('answers anything else 500 EINTERNAL, without its message', () => {
    const a = httpAnswerOf(new RangeError('secret detail at /srv/x.js:1'));
    expect(a).toMatchObject({ status: 500, body: { code: 'EINTERNAL' } });
    expect(JSON.stringify(a.body)).not.toContain('secret');
  });

  it('maps statuses to codes', () => {
    expect([401, 403, 404, 405, 408, 413, 415, 431, 500].map(codeOfStatus)).toEqual([
      'EACCES',
      'EACCES',
      'ENOHANDLER',
      'ENOHANDLER',
      'ETIMEDOUT',
      'EBADMSG',
      'EBADMSG',
      'EBADMSG',
      'EINTERNAL',
    ]);
  });
});

describe('onClientError', () => {
  const answerTo = async (code: string): Promise<string> => {
    const socket = new PassThrough();
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise((r) => socket.on('end', r));
    onClientError(Object.assign(new Error('parse error'), { code }), socket);
    await ended;
    return Buffer.concat(chunks).toString();
  };

  it('answers a typed 400 and closes, for a request Node cannot parse', async () => {
    const text = await answerTo('HPE_INVALID_METHOD');
    expect(text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(text).toContain('Connection: close');
    expect(JSON.parse(text.split('\r\n\r\n')[1])).toMatchObject({ code: 'EBADMSG' });
  });

  it('answers 431 for headers past the limit', async () => {
    expect(await answerTo('HPE_HEADER_OVERFLOW')).toMatch(/^HTTP\/1\.1 431 /);
  });
});

describe('identityBodiesOnly', () => {
  const run = (headers: Record<string, string>) => {
    const res = {
      statusCode: 200,
      headers: {} as Record<string, unknown>,
      body: '',
      setHeader(k: string, v: unknown) {
        this.headers[k] = v;
      },
      end(b: string) {
        this.body = b;
      },
    };
    let passed = false;
    identityBodiesOnly({ headers } as never, res as never, () => (passed = true));
    return { passed, status: res.statusCode, body: res.body };
  };

  it('passes a body sent as is', () => {
    expect(run({}).passed).toBe(true);
    expect(run({ 'content-encoding': 'Identity ' }).passed).toBe(true);
  });

  it('refuses a compressed body before it is read (garbage sent as br decoded to {}: heal all)', () => {
    for (const enc of ['br', 'gzip', 'deflate', 'x-evil']) {
      const r = run({ 'content-encoding': enc });
      expect(r.passed, enc).toBe(false);
      expect(r.status).toBe(415);
      expect(JSON.parse(r.body)).toMatchObject({ code: 'EBADMSG' });
    }
  });
});
