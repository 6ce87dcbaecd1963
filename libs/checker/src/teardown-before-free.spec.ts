import { describe, expect, it } from 'vitest';
import {
  A,
  B,
  frameAlloc,
  frameFree,
  mk,
  smapClear,
  smapSet,
  tlbFill,
  tlbFlush,
  verdictOf,
  violating,
} from './test-util';

describe('teardown-before-free', () => {
  it('passes frees after every TLB entry and secondary mapping to the frame is gone', () => {
    const v = verdictOf('teardown-before-free', [
      frameAlloc(7, 1, 0),
      tlbFill('cpu0', A, 7, 1, 1),
      tlbFill('cpu1', A, 7, 1, 1),
      smapSet('hca0', A, 7, 1, 2),
      tlbFlush('cpu0', A, B, 3),
      tlbFlush('cpu1', A - 4096, A + 4096, 3),
      smapClear('hca0', A, 7, 1, 4),
      frameFree(7, 1, 5),
      frameAlloc(7, 2, 6),
      // a TLB entry replaced by a fill of the same page no longer maps the old frame
      tlbFill('cpu0', B, 8, 1, 7),
      tlbFill('cpu0', B, 9, 1, 8),
      frameFree(8, 1, 9),
      // a fill stamped just before the alloc of its own gen (clock skew) is not a reuse
      smapSet('hca0', A, 10, 2, 10),
      frameAlloc(10, 2, 11),
      // a free concerns the translations to its own gen only
      frameFree(10, 1, 12),
    ]);
    expect(v).toEqual({ name: 'teardown-before-free', ok: true, checked: 6, violations: [] });
  });

  it('takes a fenced subscriber as detached: its entries no longer count, other agents still do', () => {
    const stillMapped = smapSet('hca1', A, 7, 1, 2);
    const fenced = mk('mn.fenced', 3, { subscriber: 'hca0', reason: 'liveness lease expired' });
    const free = frameFree(7, 1, 5);
    const v = verdictOf('teardown-before-free', [
      smapSet('hca0', A, 7, 1, 1),
      stillMapped,
      fenced,
      free,
    ]);
    expect(violating(v)).toEqual([[free, stillMapped]]);
  });

  it('takes an offline CPU as flushed: its entries no longer count, another CPU’s still do', () => {
    const stillCached = tlbFill('cpu1', A, 7, 1, 2);
    const offline = mk('cpu.offline', 3, { agent: 'cpu0', pid: 1, reason: 'lease expired' });
    const free = frameFree(7, 1, 5);
    const v = verdictOf('teardown-before-free', [
      tlbFill('cpu0', A, 7, 1, 1),
      stillCached,
      offline,
      free,
    ]);
    expect(violating(v)).toEqual([[free, stillCached]]);
  });

  it('reports a free while a TLB entry and an MTT entry still map the frame', () => {
    const fill = tlbFill('cpu1', A, 7, 1, 1);
    const set = smapSet('hca0', A, 7, 1, 2);
    const free = frameFree(7, 1, 5);
    const v = verdictOf('teardown-before-free', [set, fill, free, smapClear('hca0', A, 7, 1, 6)]);
    expect(v.checked).toBe(1);
    expect(violating(v)).toEqual([[free, fill, set]]);
    expect(v.violations[0].message).toBe(
      'frame pfn 7 gen 1 freed while still mapped by cpu1 (TLB entry, pid 1 at 0x10000000, gen 1), ' +
        'hca0 (secondary-MMU entry, pid 1 at 0x10000000, gen 1)',
    );
  });

  it('removes only the flushing agent’s entries of that pid in [start, end)', () => {
    const other = tlbFill('cpu1', A, 7, 1, 1);
    const outside = tlbFill('cpu0', B, 7, 1, 1);
    const otherPid = { ...tlbFill('cpu0', A, 7, 1, 1), pid: 2 };
    const free = frameFree(7, 1, 5);
    const v = verdictOf('teardown-before-free', [
      other,
      outside,
      otherPid,
      tlbFill('cpu0', A, 7, 1, 1),
      tlbFlush('cpu0', A, B, 2),
      free,
    ]);
    expect(violating(v)).toEqual([[free, other, outside, otherPid]]);
  });

  it('reports a frame reused under a live translation to its old gen, once', () => {
    const set = smapSet('hca0', A, 7, 1, 1);
    const alloc = frameAlloc(7, 2, 3);
    const v = verdictOf('teardown-before-free', [set, alloc, frameAlloc(7, 3, 4)]);
    expect(v.checked).toBe(2);
    expect(violating(v)).toEqual([[alloc, set]]);
    expect(v.violations[0].message).toBe(
      'frame pfn 7 reused as gen 2 while still mapped by hca0 (secondary-MMU entry, pid 1 at 0x10000000, gen 1)',
    );

    // freed and then reused: reported at the free only
    const fill = tlbFill('cpu0', A, 7, 1, 1);
    const free = frameFree(7, 1, 2);
    const w = verdictOf('teardown-before-free', [fill, free, frameAlloc(7, 2, 3)]);
    expect(w.checked).toBe(2);
    expect(violating(w)).toEqual([[free, fill]]);
  });

  it('leaves translations installed after the free to no-stale-access', () => {
    const v = verdictOf('teardown-before-free', [
      frameFree(7, 1, 1),
      smapSet('hca0', A, 7, 1, 2),
      frameAlloc(7, 2, 3),
      frameFree(7, 2, 4),
    ]);
    expect(v).toMatchObject({ ok: true, checked: 3 });
  });

  it('on a tie, takes removals before the free and installs after it', () => {
    const v = verdictOf('teardown-before-free', [
      tlbFill('cpu0', A, 7, 1, 1),
      frameFree(7, 1, 2),
      tlbFlush('cpu0', A, B, 2),
      smapSet('hca0', B, 7, 1, 2),
    ]);
    expect(v.ok).toBe(true);
  });
  it('KVM sPTEs: one per VM and guest frame; smap.flush (a generation bump) removes a VM’s at once', () => {
    const spte = (vm: number, gfn: number, pfn: number, ts: number) =>
      mk('smap.set', ts, { agent: 'kvm0', pid: 1, addr: A, pfn, gen: 1, writable: true, vm, gfn });
    const clear = (vm: number, gfn: number, pfn: number, ts: number) =>
      mk('smap.clear', ts, { agent: 'kvm0', pid: 1, addr: A, pfn, gen: 1, vm, gfn });
    const flush = (vm: number, ts: number) =>
      mk('smap.flush', ts, { agent: 'kvm0', pid: 1, start: 0, end: 2 ** 47, vm, entries: 1 });
    // two VMs (and an alias gfn in one of them) map host page A: clearing one leaves the others
    const v = verdictOf('teardown-before-free', [
      spte(1, 0, 7, 1),
      spte(1, 9, 7, 1),
      spte(2, 0, 7, 1),
      clear(1, 0, 7, 2),
      flush(1, 3),
      frameFree(7, 1, 4),
    ]);
    // the free and the one sPTE still live: VM 2's
    expect(
      violating(v).map((es) => es.map((e) => [e.kind, e.ts, 'vm' in e ? e.vm : null])),
    ).toEqual([
      [
        ['frame.free', 4, null],
        ['smap.set', 1, 2],
      ],
    ]);
    expect(v.violations[0].message).toContain('kvm0');
    const ok = verdictOf('teardown-before-free', [
      spte(1, 0, 7, 1),
      spte(2, 0, 7, 1),
      flush(1, 2),
      flush(2, 2),
      frameFree(7, 1, 3),
    ]);
    expect(ok.ok).toBe(true);
  });
});
