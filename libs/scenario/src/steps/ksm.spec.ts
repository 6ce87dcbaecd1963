/** The ksm.merge step's two forms, and what it refuses. */
import { describe, expect, it } from 'vitest';
import { Step } from '../schema';
import { ksmRangesOf } from './ksm';

describe('ksm.merge step', () => {
  it('one range (process, addr, page, pages) or several (ranges)', () => {
    const one = Step.parse({ op: 'ksm.merge', process: 'p', addr: 'buf', page: 2, pages: 3 });
    expect(one.op === 'ksm.merge' && ksmRangesOf(one)).toEqual([
      { process: 'p', addr: 'buf', page: 2, pages: 3 },
    ]);
    const many = Step.parse({
      op: 'ksm.merge',
      ranges: [
        { process: 'p', addr: '0x10000000', pages: 1 },
        { process: 'q', addr: 'ram', page: 1, pages: 2 },
      ],
    });
    expect(many.op === 'ksm.merge' && ksmRangesOf(many)).toEqual([
      { process: 'p', addr: 0x10000000, page: 0, pages: 1 },
      { process: 'q', addr: 'ram', page: 1, pages: 2 },
    ]);
  });

  it('refuses both forms at once, neither, a half range and an unknown key', () => {
    const bad = [
      {
        op: 'ksm.merge',
        process: 'p',
        addr: 'a',
        pages: 1,
        ranges: [{ process: 'p', addr: 'a', pages: 1 }],
      },
      { op: 'ksm.merge' },
      { op: 'ksm.merge', process: 'p', pages: 1 },
      { op: 'ksm.merge', ranges: [] },
      { op: 'ksm.merge', ranges: [{ process: 'p', addr: 'a', pages: 1, prot: 'rw' }] },
    ];
    for (const s of bad) expect(Step.safeParse(s).success, JSON.stringify(s)).toBe(false);
  });
});
