import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERAS, SEED_SITES, V3_6, V3_7, renderSeedTable, sleepsUnderPtl } from '.';

describe('kernel eras', () => {
  it('v3.7 sends no sleepable callback under a PT lock at any seed site (the seed and 6bdb913f)', () => {
    expect(SEED_SITES.filter((s) => sleepsUnderPtl(V3_7.notify[s]))).toEqual([]);
  });

  it('v3.6 was already outside the lock at exactly copy_page_range, __unmap_hugepage_range and move_page_tables', () => {
    expect(SEED_SITES.filter((s) => !sleepsUnderPtl(V3_6.notify[s])).sort()).toEqual(
      ['__unmap_hugepage_range', 'copy_page_range', 'move_page_tables'].sort(),
    );
    expect(V3_6.setPteAtNotify).toBe('set-then-change-or-page');
    expect(V3_7.setPteAtNotify).toBe('change-then-set');
  });

  it('every era gives every site an ordering', () => {
    for (const era of Object.values(ERAS))
      for (const s of SEED_SITES) expect(era.notify[s], `${era.kernel} ${s}`).toBeTruthy();
  });

  it("the README's seed table is renderSeedTable()'s (regenerate it from there)", () => {
    const readme = readFileSync(path.resolve(__dirname, '../../../../README.md'), 'utf8');
    expect(readme).toContain(renderSeedTable());
  });
});
