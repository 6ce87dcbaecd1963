/**
 * One line of text per trace event: what the dashboard's event panel, the diagram's row
 * labels and the SVG's tooltips show. Exhaustive over the TraceEvent union, so a new event
 * kind is a compile error here until it is described.
 */
import type { TraceEvent } from '@mmlab/protocol';
import { PAGE_SIZE, hex } from '@mmlab/protocol/units';

const range = (start: number, end: number): string => `[${hex(start)}, ${hex(end)})`;
const ms = (n: number): string => `${Number(n.toFixed(3))} ms`;
const frame = (pfn: number, gen: number): string => `pfn ${pfn}.${gen}`;

/** The event's own fields as text (no kind, id, ts, service, instance). */
export function describeEvent(e: TraceEvent): string {
  switch (e.kind) {
    case 'process.create':
      return `pid ${e.pid}`;
    case 'process.fork':
      return `pid ${e.pid} → child ${e.child}`;
    case 'process.exit':
      return `pid ${e.pid}`;
    case 'vma.map':
      return (
        `pid ${e.pid} ${range(e.start, e.end)} ${e.prot}${e.flags.length ? ' ' + e.flags.join(',') : ''}` +
        (e.file !== undefined ? ` file ${e.file} from page ${e.pgoff ?? 0}` : '')
      );
    case 'vma.unmap':
      return `pid ${e.pid} ${range(e.start, e.end)}`;
    case 'vma.remap':
      return `pid ${e.pid} ${range(e.start, e.end)} → file page ${e.pgoff}${e.nonlinear ? ' (nonlinear)' : ''}`;
    case 'vma.protect':
      return `pid ${e.pid} ${range(e.start, e.end)} → ${e.prot}`;
    case 'vma.move':
      return `pid ${e.pid} ${hex(e.from)} → ${hex(e.to)} (${e.pages} → ${e.newPages} pages)`;
    case 'madvise':
      return `pid ${e.pid} ${range(e.start, e.end)} ${e.advice}`;
    case 'fault.begin':
      return `${e.access} ${hex(e.addr)} pid ${e.pid} from ${e.agent}`;
    case 'fault.end':
      return `${e.result}${e.how ? ` (${e.how})` : ''} ${hex(e.addr)} from ${e.agent}${
        e.pfn !== undefined ? ` ${frame(e.pfn, e.gen ?? 0)}` : ''
      } in ${ms(e.durMs)}${e.retries ? `, ${e.retries} retries` : ''}`;
    case 'ptl.acquire':
      return `${e.lock} pid ${e.pid} token ${e.token}${e.waitMs >= 1 ? `, waited ${ms(e.waitMs)}` : ''}`;
    case 'ptl.release':
      return `${e.lock} pid ${e.pid} token ${e.token}, held ${ms(e.heldMs)}${e.released ? '' : ' (lease lost)'}`;
    case 'mmap_sem.acquire':
      return `${e.mode} pid ${e.pid} token ${e.token}`;
    case 'mmap_sem.release':
      return `${e.mode} pid ${e.pid} token ${e.token}${e.released ? '' : ' (lease lost)'}`;
    case 'pte.set':
      return `${hex(e.addr)} → ${frame(e.pfn, e.gen)} ${e.writable ? 'rw' : 'ro'} (${e.lock})`;
    case 'pte.clear':
      return `${hex(e.addr)} was ${frame(e.pfn, e.gen)} (${e.lock})`;
    case 'pte.reject':
      return `${e.lock}${e.token === null ? '' : ` token ${e.token}`}: ${e.reason}`;
    case 'thp':
      return `pid ${e.pid} ${hex(e.addr)}: huge page ${e.event}${e.pfn === undefined ? '' : ` ${frame(e.pfn, e.gen ?? 0)}`} (order ${e.order})${e.fallbacks === undefined ? '' : `, ${e.fallbacks} fallbacks`}`;
    case 'frame.alloc':
    case 'frame.free':
      return frame(e.pfn, e.gen);
    case 'swap.out':
      return `pid ${e.pid} ${hex(e.addr)}: ${frame(e.pfn, e.gen)} → swap slot ${e.slot}`;
    case 'swap.in':
      return `pid ${e.pid} ${hex(e.addr)}: swap slot ${e.slot} → ${frame(e.pfn, e.gen)}${e.cached ? ' (swap cache)' : ''}`;
    case 'file.create':
      return `file ${e.ino}: ${e.pages} pages${e.xip ? ', XIP' : ''}`;
    case 'writeback':
      return `file ${e.ino} page ${e.page} (${frame(e.pfn, e.gen)}) = ${e.value}, by ${e.why}`;
    case 'xip.unmap':
      return `pid ${e.pid} ${hex(e.addr)}: XIP sparse page ${frame(e.pfn, e.gen)} unmapped for file ${e.ino} page ${e.page}, released`;
    case 'reclaim':
      return `${e.why}: scanned ${e.scanned}, reclaimed ${e.reclaimed}, referenced ${e.referenced}, pinned ${e.pinned}; ${e.free} free`;
    case 'frame.pin':
    case 'frame.unpin':
      return `${frame(e.pfn, e.gen)} by ${e.agent}`;
    case 'ksm.merge':
      return `pid ${e.pid} ${hex(e.addr)} ${frame(e.pfn, e.gen)} ${e.result}${
        e.kpfn !== undefined ? ` → ${frame(e.kpfn, e.kgen ?? 0)}` : ''
      }${e.reason ? ` (${e.reason}${e.refcount !== undefined ? `: mapcount ${e.mapcount}, refcount ${e.refcount}` : ''})` : ''}`;
    case 'tlb.fill':
      return `${hex(e.addr)} → ${frame(e.pfn, e.gen)} ${e.writable ? 'rw' : 'ro'}`;
    case 'tlb.flush':
      return `pid ${e.pid} ${range(e.start, e.end)}, ${e.entries} entries`;
    case 'access':
      return `${e.rw} ${hex(e.addr)} = ${e.value} via ${frame(e.pfn, e.gen)}${
        e.frameFree || e.frameGen !== e.gen ? ' STALE' : ''
      }`;
    case 'access.refused':
      return `${hex(e.addr)}: ${e.reason}`;
    case 'debug.stall':
      return `${e.lock} for ${ms(e.ms)}`;
    case 'crash.point':
      return `${e.point}: ${e.action}${e.held ? ` ${e.held.lock} token ${e.held.token}` : ''}`;
    case 'mn.register':
      return `${e.subscriber} on pid ${e.pid}`;
    case 'mn.unregister':
      return `${e.subscriber} from pid ${e.pid} (${e.reason})`;
    case 'mn.range_start':
      return `${e.event} pid ${e.pid} ${range(e.start, e.end)} inv=${e.inv}`;
    case 'mn.range_end':
      return `${e.event} pid ${e.pid} ${range(e.start, e.end)} inv=${e.inv}${
        e.deadSender ? ` (for dead ${e.deadSender})` : ''
      }`;
    case 'mn.page':
      return `pid ${e.pid} ${hex(e.addr)} inv=${e.inv}`;
    case 'mn.release':
      return `pid ${e.pid} inv=${e.inv}`;
    case 'mn.send':
      return `${e.callback} → ${e.subscriber} inv=${e.inv}${e.attempt > 1 ? ` attempt ${e.attempt}` : ''}${
        e.ptl ? ` UNDER ${e.ptl}` : ''
      }`;
    case 'mn.ack':
      return `${e.callback} ← ${e.subscriber} inv=${e.inv} after ${ms(e.waitedMs)}`;
    case 'mn.ack_ignored':
      return `${e.callback} ← ${e.subscriber} inv=${e.inv} (got ${e.got})`;
    case 'might_sleep':
      return `${e.callback} under ${e.lock} inv=${e.inv}`;
    case 'cpu.offline':
      return `${e.agent} (pid ${e.pid}): ${e.reason}`;
    case 'mn.fenced':
      return `${e.subscriber}: ${e.reason}`;
    case 'mn.recv':
      return `${e.callback} inv=${e.inv}${e.start !== undefined && e.end !== undefined ? ' ' + range(e.start, e.end) : ''}`;
    case 'sub.fault':
      return `${e.fault} on ${e.callback} ${e.inv} at ${e.agent}`;
    case 'mn.done':
      return `${e.callback} inv=${e.inv}`;
    case 'mn.ptl_held':
      return `${e.callback} inv=${e.inv}: ${e.lock} held by ${e.owner}`;
    case 'smap.set':
      return `${vmGfn(e)}${hex(e.addr)} → ${frame(e.pfn, e.gen)} ${e.writable ? 'rw' : 'ro'}`;
    case 'smap.clear':
      return `${vmGfn(e)}${hex(e.addr)} was ${frame(e.pfn, e.gen)}`;
    case 'smap.flush':
      return `${e.vm !== undefined ? `vm${e.vm} ` : ''}${range(e.start, e.end)} pid ${e.pid}: ${e.entries} entries`;
    case 'kvm.fault.begin':
      return `vm${e.vm} vcpu${e.vcpu} ${e.write ? 'write' : 'read'} gfn ${e.gfn} (${hex(e.addr)} pid ${e.pid})`;
    case 'kvm.fault.delay':
      return `vm${e.vm} gfn ${e.gfn} after seq ${e.seq}, up to ${ms(e.ms)}`;
    case 'kvm.fault.end':
      return `${e.result} vm${e.vm} gfn ${e.gfn} in ${ms(e.durMs)}${e.retries ? `, ${e.retries} retries` : ''}`;
    case 'kvm.change_pte':
      return `vm ${e.vm} ${hex(e.addr)} → ${frame(e.pfn, e.gen)} ${e.writable ? 'rw' : 'ro'}: ${
        e.found ? 'sPTE updated' : 'no sPTE (already zapped)'
      }`;
    case 'kvm.mmu_lock':
      return `vm${e.vm} ${e.mode} ${e.what}: held ${ms(e.heldMs)}, waited ${ms(e.waitMs)}${e.zapped ? `, ${e.zapped} zapped` : ''}`;
    case 'npf.begin':
      return `${e.write ? 'write' : 'read'} ${hex(e.addr)}${e.pages > 1 ? ` +${e.pages} pages` : ''} pid ${e.pid}`;
    case 'npf.delay':
      return `${hex(e.addr)} pid ${e.pid} after seq ${e.seq}, up to ${ms(e.ms)}`;
    case 'npf.end':
      return `${e.result} ${hex(e.addr)} in ${ms(e.durMs)}${e.retries ? `, ${e.retries} retries` : ''}`;
    case 'barrier':
      return e.tag;
    case 'chaos.start':
      return `${e.fault} ${e.target}: ${e.label}`;
    case 'chaos.end':
      return `${e.fault} ${e.target} healed`;
    case 'run.start':
      return `${e.scenario}${e.expectViolations.length > 0 ? `, expects: ${e.expectViolations.join(', ')}` : ''}`;
  }
}

/** "vm1 gfn 3: " for a KVM sPTE, "" for a device entry. */
const vmGfn = (e: { vm?: number; gfn?: number }): string =>
  e.vm !== undefined ? `vm${e.vm} gfn ${e.gfn ?? '?'}: ` : '';

/** `kind details`, the one-line form. */
export const summarizeEvent = (e: TraceEvent): string => `${e.kind} ${describeEvent(e)}`;

/** The address range an event touches, if it names one: [start, end). */
export function eventRange(e: TraceEvent): { start: number; end: number } | null {
  if (e.kind === 'npf.begin') return { start: e.addr, end: e.addr + e.pages * PAGE_SIZE };
  if (e.kind === 'vma.move')
    return {
      start: Math.min(e.from, e.to),
      end: Math.max(e.from + e.pages * PAGE_SIZE, e.to + e.newPages * PAGE_SIZE),
    };
  if ('addr' in e) return { start: e.addr, end: e.addr + PAGE_SIZE };
  if ('start' in e && 'end' in e && e.start !== undefined && e.end !== undefined)
    return { start: e.start, end: e.end };
  return null;
}
