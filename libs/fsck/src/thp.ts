/**
 * The `thp` rule: transparent huge pages ({p:<pid>}:pmdhuge and the compound pages of {mem},
 * keys.ts), as pure functions of a snapshot. Findings:
 *   - a huge entry that does not parse, sits at an unaligned vpn, outside one anonymous private
 *     VMA, over a PTE of its range, or in an address space that is not alive;
 *   - a huge entry whose head is not a used frame of its gen with PG_head and the entry's order,
 *     or whose tails are not used frames of that gen with PG_tail and that order;
 *   - a compound head whose mapcount is not the number of huge entries naming it (every address
 *     space), or whose refcount is below that plus its tails' refcounts (their pins);
 *   - a tail without its head, a free frame with compound flags, a compound frame a PTE maps.
 * The other count rules (frame-state, mapcount, refcount, pinned-vm) leave compound frames to
 * this one (checks.ts: isCompound).
 */
import { PAGE_FLAGS, type Vma, parseVma, procKeys, MEM } from '@mmlab/model';
import type { FrameRecord, FsckSnapshot } from './snapshot';

type Add = (code: 'thp', key: string, message: string, objects: Record<string, unknown>) => void;

const has = (f: FrameRecord | undefined, bit: number): boolean =>
  f !== undefined && Math.floor((f.flags ?? 0) / bit) % 2 === 1;
export const isHead = (f: FrameRecord | undefined): boolean => has(f, PAGE_FLAGS.PG_head);
export const isTail = (f: FrameRecord | undefined): boolean => has(f, PAGE_FLAGS.PG_tail);
/** A frame of a compound page (THP): its counts are this rule's. */
export const isCompound = (f: FrameRecord | undefined): boolean => isHead(f) || isTail(f);

export function checkThp(s: FsckSnapshot, add: Add, pool: ReadonlySet<number>): void {
  /** head pfn → the huge entries naming it ("pid:hvpn") */
  const mappers = new Map<number, string[]>();
  for (const p of s.processes) {
    if (!p.pmdhuge) continue;
    const key = procKeys(p.pid).pmdhuge;
    const order = Number(p.pmdhuge.o);
    if (!Number.isInteger(order) || order < 1) {
      add('thp', key, `pid ${p.pid}: huge page order ${JSON.stringify(p.pmdhuge.o)}`, {
        pid: p.pid,
      });
      continue;
    }
    const n = 2 ** order;
    const entries = Object.entries(p.pmdhuge).filter(([k]) => k !== 'o');
    if (p.state !== 'alive' && entries.length > 0)
      add(
        'thp',
        key,
        `pid ${p.pid} (${p.state ?? 'no mm'}) still has ${entries.length} huge entries`,
        {
          pid: p.pid,
        },
      );
    const vmas: Vma[] = [];
    for (const m of p.vmas)
      try {
        vmas.push(parseVma(m));
      } catch {
        // vma-corrupt reports it
      }
    for (const [hk, raw] of entries) {
      const hvpn = Number(hk);
      const m = /^(\d+):(\d+):([013])$/.exec(raw);
      const objects = { pid: p.pid, hvpn, entry: raw };
      if (!/^\d+$/.test(hk) || !m) {
        add(
          'thp',
          key,
          `pid ${p.pid}: huge entry ${hk} → ${JSON.stringify(raw)} does not parse`,
          objects,
        );
        continue;
      }
      const pfn = Number(m[1]);
      const gen = Number(m[2]);
      if (hvpn % n !== 0)
        add('thp', key, `pid ${p.pid}: huge entry at unaligned vpn ${hvpn}`, objects);
      const vma = vmas.find((v) => v.start <= hvpn && hvpn + n <= v.end);
      if (!vma || vma.shared || vma.file !== undefined || vma.prot === 'none')
        add(
          'thp',
          key,
          `pid ${p.pid}: huge entry at vpn ${hvpn} is not inside one anonymous private VMA`,
          objects,
        );
      else if (m[3] === '1' && vma.prot !== 'rw')
        add(
          'thp',
          key,
          `pid ${p.pid}: huge entry at vpn ${hvpn} is writable in a ${vma.prot} VMA`,
          objects,
        );
      const under = Object.keys(p.ptes)
        .map(Number)
        .filter((v) => v >= hvpn && v < hvpn + n);
      if (under.length)
        add(
          'thp',
          key,
          `pid ${p.pid}: huge entry at vpn ${hvpn} covers PTEs at ${under.join(', ')}`,
          {
            ...objects,
            ptes: under,
          },
        );
      const head = s.frame[String(pfn)];
      if (
        !head ||
        head.state !== 'used' ||
        head.gen !== gen ||
        !isHead(head) ||
        head.reserved !== order
      ) {
        add(
          'thp',
          MEM.frames,
          `pid ${p.pid}: huge entry at vpn ${hvpn} names pfn ${pfn} gen ${gen}, which is no compound head of order ${order} (${describe(head)})`,
          {
            ...objects,
            frame: head ?? null,
          },
        );
        continue;
      }
      const by = mappers.get(pfn) ?? [];
      by.push(`${p.pid}:${hvpn}`);
      mappers.set(pfn, by);
    }
  }
  for (let pfn = 1; pfn <= s.frames; pfn++) {
    const f = s.frame[String(pfn)];
    if (!f || !isCompound(f) || pool.has(pfn)) continue; // hugetlbfs's pool: the hugetlb rule's
    if (f.state !== 'used') {
      add('thp', MEM.frames, `pfn ${pfn} is ${f.state} with compound flags ${f.flags}`, {
        pfn,
        frame: f,
      });
      continue;
    }
    const order = f.reserved ?? 0;
    if (isTail(f)) {
      const head = s.frame[String(pfn - (pfn % 2 ** order))];
      if (order < 1 || !isHead(head) || head?.gen !== f.gen || head.reserved !== order)
        add('thp', MEM.frames, `tail pfn ${pfn} (order ${order}) has no compound head of its gen`, {
          pfn,
          frame: f,
        });
      if (f.map !== 0 || f.ref < 0)
        add('thp', MEM.frames, `tail pfn ${pfn} has mapcount ${f.map}, refcount ${f.ref}`, {
          pfn,
          frame: f,
        });
      continue;
    }
    const n = 2 ** order;
    const by = mappers.get(pfn) ?? [];
    if (order < 1 || pfn % n !== 0) {
      add('thp', MEM.frames, `head pfn ${pfn} has order ${order}, unaligned or none`, {
        pfn,
        frame: f,
      });
      continue;
    }
    let pins = 0;
    for (let i = 1; i < n; i++) {
      const t = s.frame[String(pfn + i)];
      if (!isTail(t) || t?.gen !== f.gen || t.reserved !== order || t.state !== 'used')
        add('thp', MEM.frames, `head pfn ${pfn}: pfn ${pfn + i} is not its tail (${describe(t)})`, {
          pfn,
          tail: pfn + i,
        });
      else pins += t.ref;
    }
    if (f.map !== by.length)
      add(
        'thp',
        MEM.frames,
        `huge page ${pfn} has mapcount ${f.map} but ${by.length} huge entries map it` +
          (f.map > by.length ? ' (leaked)' : ''),
        {
          pfn,
          frame: f,
          entries: by,
        },
      );
    if (f.ref < f.map + pins || f.ref < 1)
      add(
        'thp',
        MEM.frames,
        `huge page ${pfn} has refcount ${f.ref}, below its mapcount ${f.map} + its tails' pins ${pins}`,
        {
          pfn,
          frame: f,
        },
      );
  }
  for (const p of s.processes)
    for (const [vpn, raw] of Object.entries(p.ptes)) {
      const m = /^(\d+):(\d+):([0-3])$/.exec(raw);
      if (m && isCompound(s.frame[m[1]]))
        add(
          'thp',
          procKeys(p.pid).pte,
          `pid ${p.pid}: the PTE at vpn ${vpn} maps pfn ${m[1]} of a huge page`,
          {
            pid: p.pid,
            vpn: Number(vpn),
            pte: raw,
          },
        );
    }
}

const describe = (f: FrameRecord | undefined): string =>
  f ? `${f.state}, gen ${f.gen}, flags ${f.flags ?? 0}, order ${f.reserved ?? 0}` : 'absent';
