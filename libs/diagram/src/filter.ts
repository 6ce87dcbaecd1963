/**
 * The dashboard's filter inputs, parsed: what a person types (pids "1, 3"; an address range
 * "0x10000000-0x10008000", "0x10000000+8" pages, or one address; an inv fragment) into a
 * DiagramFilter, with a message per bad field instead of an exception.
 */
import { PAGE_SIZE } from '@mmlab/protocol/units';
import type { DiagramFilter } from './types';

export interface FilterInputs {
  pid?: string;
  addr?: string;
  /** selected subscribers; empty or absent: all */
  subscribers?: readonly string[];
  inv?: string;
}

export interface ParsedFilter {
  filter: DiagramFilter;
  errors: Partial<Record<'pid' | 'addr', string>>;
}

const num = (s: string): number | null => {
  const t = s.trim();
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(t)) return null;
  const v = Number(t);
  return Number.isSafeInteger(v) ? v : null;
};

export function parseAddrRange(text: string): { start: number; end: number } | string {
  const t = text.trim();
  const plus = /^(.+?)\s*\+\s*(\d+)\s*p?$/i.exec(t);
  if (plus) {
    const start = num(plus[1]);
    const pages = Number(plus[2]);
    if (start === null || pages < 1) return 'expected start+pages, as 0x10000000+8';
    return { start, end: start + pages * PAGE_SIZE };
  }
  const dash = /^(.+?)\s*(?:-|\.\.)\s*(.+)$/.exec(t);
  if (dash) {
    const start = num(dash[1]);
    const end = num(dash[2]);
    if (start === null || end === null) return 'expected start-end, as 0x10000000-0x10008000';
    if (end <= start) return 'the end must be above the start';
    return { start, end };
  }
  const one = num(t);
  if (one === null) return 'expected an address, start-end or start+pages';
  const page = one - (one % PAGE_SIZE);
  return { start: page, end: page + PAGE_SIZE };
}

export function parseFilterInputs(i: FilterInputs): ParsedFilter {
  const filter: DiagramFilter = {};
  const errors: ParsedFilter['errors'] = {};
  const pid = i.pid?.trim() ?? '';
  if (pid !== '') {
    const pids = pid
      .split(/[\s,]+/)
      .filter((s) => s !== '')
      .map(Number);
    if (pids.every((p) => Number.isSafeInteger(p) && p > 0)) filter.pids = pids;
    else errors.pid = 'expected process ids, as 1 or 1, 3';
  }
  const addr = i.addr?.trim() ?? '';
  if (addr !== '') {
    const r = parseAddrRange(addr);
    if (typeof r === 'string') errors.addr = r;
    else filter.addr = r;
  }
  if (i.subscribers && i.subscribers.length > 0) filter.subscribers = [...i.subscribers];
  const inv = i.inv?.trim() ?? '';
  if (inv !== '') filter.inv = inv;
  return { filter, errors };
}

/** Two filters select the same events. */
export function sameFilter(a: DiagramFilter, b: DiagramFilter): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
