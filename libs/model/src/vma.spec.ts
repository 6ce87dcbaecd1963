/** The one VMA parser (TS side; lua.ts vma_parse is the Lua one): the hugetlb flags. */
import { describe, expect, it } from 'vitest';
import { formatVma, parseVma } from './vma';
import { parseHugeEntry } from './mm/hugetlb-store';

describe('parseVma / formatVma', () => {
  it('reads and writes VM_HUGETLB, private and shared, and keeps the other flags', () => {
    expect(parseVma('8:24:rw:hugetlb')).toEqual({
      start: 8,
      end: 24,
      prot: 'rw',
      shared: false,
      hugetlb: true,
    });
    expect(parseVma('8:16:r:hugetlbshared')).toEqual({
      start: 8,
      end: 16,
      prot: 'r',
      shared: true,
      hugetlb: true,
    });
    for (const m of ['8:24:rw:hugetlb', '8:16:r:hugetlbshared', '1:2:rw:', '1:2:rw:shared:3:-1'])
      expect(formatVma(parseVma(m))).toBe(m);
    expect(parseVma('1:2:rw:shared').hugetlb).toBeUndefined();
    expect(() => parseVma('1:2:rw:huge')).toThrow(/corrupt VMA/);
  });

  it('reads a huge entry "hvpn:pfn:gen:w"', () => {
    expect(parseHugeEntry('64:8:3:0')).toEqual({ hvpn: 64, pfn: 8, gen: 3, writable: false });
    expect(parseHugeEntry('72:16:1:1')).toEqual({ hvpn: 72, pfn: 16, gen: 1, writable: true });
  });
});
