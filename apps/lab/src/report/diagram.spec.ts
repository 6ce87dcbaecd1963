import { describe, expect, it, vi } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { diagramSection, violationInputs } from './diagram';

vi.mock('@mmlab/diagram', async (importOriginal) => ({
  ...(await importOriginal<typeof import('@mmlab/diagram')>()),
  renderSequenceSvg: () => {
    throw new Error('layout <failed>');
  },
}));

const ev = (n: number, extra: Partial<TraceEvent> = {}): TraceEvent =>
  ({
    id: `cpu0:${n}`,
    ts: 1000 + n,
    service: 'cpu',
    instance: 'cpu0',
    kind: 'tlb.fill',
    agent: 'cpu0',
    pid: 1,
    addr: 0x10000000,
    pfn: 2,
    gen: 1,
    writable: true,
    ...extra,
  }) as TraceEvent;

describe('diagramSection', () => {
  it('when the diagram cannot be drawn: says why and lists the events instead', () => {
    const s = diagramSection([ev(2), ev(1)], 1000);
    expect(s.source).toBe('timeline');
    expect(s.body.value).toContain('could not be drawn: layout &lt;failed&gt;');
    const rows = [...s.body.value.matchAll(/<td class="num">([\d.]+)<\/td>/g)].map((m) => m[1]);
    expect(rows).toEqual(['1.000', '2.000']);
    expect(s.body.value).toContain('addr=0x10000000');
    expect(s.body.value).toMatch(/<details open>/);
  });

  it('violations are passed on by the ids of their events', () => {
    expect(
      violationInputs([
        { name: 'paired-range', ok: true, checked: 1, violations: [] },
        {
          name: 'teardown-before-free',
          ok: false,
          checked: 2,
          violations: [{ message: 'm', events: [{ id: 'mm-0:4', kind: 'frame.free' }, 'junk'] }],
        },
      ]),
    ).toEqual([{ invariant: 'teardown-before-free', message: 'm', events: [{ id: 'mm-0:4' }] }]);
  });
});
