import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '@mmlab/protocol';
import { describeEvent, eventRange, summarizeEvent } from './describe';
import { loadTrace } from './fixtures/load';

describe('describeEvent', () => {
  const all: TraceEvent[] = [
    ...loadTrace('odp-munmap'),
    ...loadTrace('odp-fork-cow'),
    ...loadTrace('legacy-cow'),
    ...loadTrace('free-before-invalidate-page'),
  ];

  it('describes every real event without undefined or NaN', () => {
    for (const e of all) {
      const s = summarizeEvent(e);
      expect(s.startsWith(e.kind + ' ')).toBe(true);
      expect(s).not.toMatch(/undefined|NaN|\[object/);
    }
  });

  it('names the callback and inv of notifier events, in hex addresses', () => {
    const recv = all.find((e) => e.id === 'hca0:9' && e.kind === 'mn.recv')!;
    expect(describeEvent(recv)).toBe(
      'invalidate_range_start inv=mm-1/munmap#4~1 [0x10000000, 0x10008000)',
    );
  });

  it('eventRange: pages, ranges and none', () => {
    const byId = (id: string) => all.find((e) => e.id === id)!;
    expect(eventRange(byId('mm-1:16'))).toEqual({ start: 0x10005000, end: 0x10006000 });
    expect(eventRange(byId('mm-1:11'))).toEqual({ start: 0x10000000, end: 0x10008000 });
    expect(eventRange(byId('mm-1:12'))).toBeNull();
  });
});
