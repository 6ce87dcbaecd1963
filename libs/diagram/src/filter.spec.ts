import { describe, expect, it } from 'vitest';
import { parseAddrRange, parseFilterInputs, sameFilter } from './filter';

describe('parseAddrRange', () => {
  it.each([
    ['0x10000000-0x10008000', { start: 0x10000000, end: 0x10008000 }],
    ['0x10000000 .. 0x10002000', { start: 0x10000000, end: 0x10002000 }],
    ['0x10000000+8', { start: 0x10000000, end: 0x10008000 }],
    ['268435456 + 2p', { start: 0x10000000, end: 0x10002000 }],
    ['0x10005123', { start: 0x10005000, end: 0x10006000 }],
  ])('%s', (text, want) => expect(parseAddrRange(text)).toEqual(want));

  it.each(['', 'x', '0x2000-0x1000', '0x1000+0', '0x10-zz', '1e5'])('rejects %j', (text) =>
    expect(typeof parseAddrRange(text)).toBe('string'),
  );
});

describe('parseFilterInputs', () => {
  it('empty inputs: no filter', () => {
    expect(parseFilterInputs({ pid: ' ', addr: '', subscribers: [], inv: '' })).toEqual({
      filter: {},
      errors: {},
    });
  });

  it('parses every field', () => {
    expect(
      parseFilterInputs({
        pid: '1, 3',
        addr: '0x10000000+1',
        subscribers: ['hca0'],
        inv: ' munmap ',
      }),
    ).toEqual({
      filter: {
        pids: [1, 3],
        addr: { start: 0x10000000, end: 0x10001000 },
        subscribers: ['hca0'],
        inv: 'munmap',
      },
      errors: {},
    });
  });

  it('reports bad fields and keeps the good ones', () => {
    const r = parseFilterInputs({ pid: '0', addr: 'nope', inv: 'fork' });
    expect(r.filter).toEqual({ inv: 'fork' });
    expect(Object.keys(r.errors).sort()).toEqual(['addr', 'pid']);
  });

  it('sameFilter', () => {
    expect(sameFilter({ pids: [1] }, { pids: [1] })).toBe(true);
    expect(sameFilter({ pids: [1] }, { pids: [2] })).toBe(false);
  });
});
