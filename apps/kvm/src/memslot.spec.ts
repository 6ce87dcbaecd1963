import { describe, expect, it } from 'vitest';
import { MmlabError, PAGE_SIZE, TASK_SIZE } from '@mmlab/protocol';
import { Memslots } from './memslot';

const A = 0x10000000;

const codeOf = (f: () => unknown): string => {
  try {
    f();
    return 'ok';
  } catch (e) {
    return e instanceof MmlabError ? e.code : `untyped: ${String(e)}`;
  }
};

describe('Memslots (kvm_set_memory_region)', () => {
  it('refuses unaligned, too long and overlapping slots (EINVAL)', () => {
    expect(codeOf(() => new Memslots([{ gfn: 0, pages: 1, addr: A + 1 }]))).toBe('EINVAL');
    expect(codeOf(() => new Memslots([{ gfn: 0, pages: 2, addr: TASK_SIZE - PAGE_SIZE }]))).toBe(
      'EINVAL',
    );
    const overlap = [
      { gfn: 0, pages: 4, addr: A },
      { gfn: 3, pages: 4, addr: A + 0x100000 },
    ];
    expect(codeOf(() => new Memslots(overlap))).toBe('EINVAL');
  });

  it('translates gfn → hva, and an hva range → the gfns of every slot it meets (aliases too)', () => {
    const s = new Memslots([
      { gfn: 100, pages: 4, addr: A + 4 * PAGE_SIZE },
      { gfn: 0, pages: 8, addr: A },
    ]);
    expect(s.hva(2)).toBe(A + 2 * PAGE_SIZE);
    expect(s.hva(101)).toBe(A + 5 * PAGE_SIZE);
    expect(s.hva(8)).toBeUndefined();
    // host pages 5..6 are gfns 5..6 of the first slot and 101..102 of the alias
    const spans = s.gfnsOfHvaRange(A + 5 * PAGE_SIZE, A + 7 * PAGE_SIZE);
    expect(spans.map(({ first, last }) => [first, last])).toEqual([
      [5, 7],
      [101, 103],
    ]);
    // clipped to the slot, partial pages included
    expect(s.gfnsOfHvaRange(A - PAGE_SIZE, A + 1).map(({ first, last }) => [first, last])).toEqual([
      [0, 1],
    ]);
    expect(s.gfnsOfHvaRange(A + 64 * PAGE_SIZE, A + 65 * PAGE_SIZE)).toEqual([]);
  });
});
