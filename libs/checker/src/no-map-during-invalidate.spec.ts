import { describe, expect, it } from 'vitest';
import { A, B, done, mk, recv, smapSet, verdictOf, violating } from './test-util';

const C = B + 4096;
const range = { start: A, end: C }; // two pages: A and B

describe('no-map-during-invalidate', () => {
  it('passes mappings installed outside every window of their own agent and pid', () => {
    const v = verdictOf('no-map-during-invalidate', [
      smapSet('hca0', A, 7, 1, 1), // before
      recv('hca0', 'invalidate_range_start', 'i1', 2, range),
      smapSet('hca0', A, 7, 1, 2), // at the very ts of the start: not inside
      smapSet('hca0', C, 7, 1, 3), // end is exclusive
      smapSet('hca1', A, 7, 1, 3), // another agent
      { ...smapSet('hca0', A, 7, 1, 3), pid: 2 }, // another pid
      recv('hca0', 'invalidate_range_end', 'i1', 4, range),
      smapSet('hca0', A, 7, 1, 4), // at the very ts of the end: not inside
      recv('hca0', 'invalidate_page', 'p1', 5, { start: B }),
      smapSet('hca0', A, 7, 1, 6), // another page
      done('hca0', 'invalidate_page', 'p1', 7),
      smapSet('hca0', B, 8, 1, 8), // after the page's invalidation is done
      // a retransmitted start after the end does not reopen the window
      recv('hca0', 'invalidate_range_start', 'i1', 9, range),
      smapSet('hca0', A, 8, 1, 10),
      // invalidate_page covers its one page, whatever end the recv carries
      recv('hca0', 'invalidate_page', 'p2', 11, { start: A, end: C }),
      smapSet('hca0', B, 8, 1, 12),
      // a range_start whose range is not known opens no window
      recv('hca0', 'invalidate_range_start', 'i3', 13, { start: A }),
      smapSet('hca0', B, 8, 1, 14),
    ]);
    expect(v).toEqual({ name: 'no-map-during-invalidate', ok: true, checked: 11, violations: [] });
  });

  it('reports a mapping installed between range_start and range_end', () => {
    const start = recv('hca0', 'invalidate_range_start', 'i1', 1, range);
    const set = smapSet('hca0', B, 7, 1, 2);
    const v = verdictOf('no-map-during-invalidate', [
      start,
      set,
      recv('hca0', 'invalidate_range_end', 'i1', 3, range),
    ]);
    expect(v.checked).toBe(1);
    expect(violating(v)).toEqual([[set, start]]);
    expect(v.violations[0].message).toBe(
      'hca0 installed pid 1 0x10001000 → pfn 7 gen 1 while its invalidate_range_start of [0x10000000, 0x10002000) (inv i1) was in progress',
    );
  });

  it('keeps a window with no range_end open to the end of the trace', () => {
    const start = recv('hca0', 'invalidate_range_start', 'i1', 1, range);
    const set = smapSet('hca0', A, 7, 1, 100);
    const v = verdictOf('no-map-during-invalidate', [
      start,
      recv('hca0', 'invalidate_range_end', 'other', 50, range),
      done('hca0', 'invalidate_range_start', 'i1', 60),
      set,
      mk('barrier', 200, { tag: 'end' }),
    ]);
    expect(violating(v)).toEqual([[set, start]]);
  });

  it('reports a mapping of the page between invalidate_page and its done', () => {
    const page = recv('hca0', 'invalidate_page', 'p1', 1, { start: B });
    const set = smapSet('hca0', B, 7, 1, 2);
    const v = verdictOf('no-map-during-invalidate', [
      page,
      set,
      done('hca0', 'invalidate_page', 'p1', 3),
    ]);
    expect(violating(v)).toEqual([[set, page]]);
    expect(v.violations[0].message).toBe(
      'hca0 installed pid 1 0x10001000 → pfn 7 gen 1 while its invalidate_page of [0x10001000, 0x10002000) (inv p1) was in progress',
    );
  });

  it('lists every open window a mapping fell into', () => {
    const r1 = recv('hca0', 'invalidate_range_start', 'i1', 1, range);
    const r2 = recv('hca0', 'invalidate_page', 'p1', 2, { start: A });
    const set = smapSet('hca0', A, 7, 1, 3);
    const v = verdictOf('no-map-during-invalidate', [r1, r2, set]);
    expect(violating(v)).toEqual([[set, r1, r2]]);
    expect(v.violations[0].message).toMatch(/\(inv i1\) was in progress \(and 1 more\)$/);
  });
});
