/** The mutation check of every HTTP server of the lab (lab-token.ts), case by case. */
import { describe, expect, it } from 'vitest';
import { checkHost, checkMutation, isLoopbackHost, newLabToken, tokenOf } from './lab-token';

const TOKEN = newLabToken();
const verdict = (method: string, headers: Record<string, string>, token: string | null = TOKEN) => {
  const v = checkMutation({ method, headers }, token ?? undefined);
  return v.ok ? 'ok' : `${v.status} ${v.error.code}`;
};

describe('checkMutation', () => {
  it('lets reads through, with no token and any content type', () => {
    for (const m of ['GET', 'HEAD', 'OPTIONS']) expect(verdict(m, {}, null)).toBe('ok');
  });

  it('takes application/json only (parameters allowed), before it looks at the token', () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect(verdict('POST', { ...auth, 'content-type': 'application/json' })).toBe('ok');
    expect(verdict('POST', { ...auth, 'content-type': 'Application/JSON; charset=utf-8' })).toBe(
      'ok',
    );
    for (const ct of [
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'text/plain',
      'application/jsonx',
      'application/problem+json',
      'not a type',
    ])
      expect(verdict('POST', { ...auth, 'content-type': ct }), ct).toBe('415 EBADMSG');
    expect(verdict('DELETE', auth)).toBe('415 EBADMSG');
    expect(verdict('PUT', { 'content-type': 'text/plain' }, null)).toBe('415 EBADMSG');
  });

  it("needs the lab's token, in either header; a lab without one refuses every change", () => {
    const json = { 'content-type': 'application/json' };
    expect(verdict('POST', json)).toBe('401 EACCES');
    expect(verdict('POST', { ...json, authorization: `bearer ${TOKEN}` })).toBe('ok');
    expect(verdict('PATCH', { ...json, 'x-mmlab-token': TOKEN })).toBe('ok');
    expect(verdict('POST', { ...json, authorization: `Basic ${TOKEN}` })).toBe('401 EACCES');
    expect(verdict('POST', { ...json, authorization: `Bearer ${TOKEN}x` })).toBe('401 EACCES');
    expect(verdict('POST', { ...json, 'x-mmlab-token': TOKEN.slice(1) })).toBe('401 EACCES');
    expect(verdict('POST', { ...json, 'x-mmlab-token': TOKEN }, null)).toBe('403 EACCES');
  });

  it('reads the token from Authorization first, then X-Mmlab-Token', () => {
    expect(tokenOf({ authorization: 'Bearer a', 'x-mmlab-token': 'b' })).toBe('a');
    expect(tokenOf({ authorization: 'Basic a', 'x-mmlab-token': ' b ' })).toBe('b');
    expect(tokenOf({})).toBeUndefined();
  });

  it('makes 256-bit tokens, a new one each time', () => {
    const a = newLabToken();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(newLabToken()).not.toBe(a);
  });
});

describe('checkHost (DNS rebinding)', () => {
  const host = (h: string | undefined, bind = '127.0.0.1') => {
    const v = checkHost({ headers: h === undefined ? {} : { host: h } }, bind);
    return v.ok ? 'ok' : `${v.status} ${v.error.code}`;
  };

  it("a server on loopback answers requests to this machine's names only", () => {
    for (const h of ['127.0.0.1:8080', 'localhost:8080', 'LOCALHOST', '[::1]:8081', '127.0.0.2'])
      expect(host(h), h).toBe('ok');
    for (const h of [
      'evil.example:8080',
      'evil.example',
      '192.0.2.2:8080',
      'localhost.evil.example',
      undefined,
    ])
      expect(host(h), String(h)).toBe('403 EACCES');
  });

  it('a server on all interfaces (compose) answers any Host', () => {
    expect(host('observer:8080', '0.0.0.0')).toBe('ok');
    expect(host('evil.example', '0.0.0.0')).toBe('ok');
    expect([isLoopbackHost('::1'), isLoopbackHost('0.0.0.0'), isLoopbackHost('127.1.2.3')]).toEqual(
      [true, false, true],
    );
  });
});
