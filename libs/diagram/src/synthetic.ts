/**
 * A synthetic trace with the shapes real runs produce (CPU faults, device page faults,
 * munmaps with range invalidations and TLB shootdowns, COW faults with invalidate_page),
 * deterministic for a seed: for the render benchmark and the dashboard's load tests, where a
 * run of 10,000 events would take a lab minutes to produce.
 */
import type { TraceEvent, TraceInput } from '@mmlab/protocol';
import { MMAP_BASE, PAGE_SIZE } from '@mmlab/protocol/units';

export interface SyntheticOptions {
  seed?: number;
  mm?: number;
  cpus?: number;
  subscribers?: readonly string[];
  /** ts of the first event (ms since the epoch) */
  t0?: number;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Generate about `n` events (exactly n: the last episode is cut). */
export function syntheticTrace(n: number, opts: SyntheticOptions = {}): TraceEvent[] {
  const rnd = mulberry32(opts.seed ?? 1);
  const mms = Array.from({ length: opts.mm ?? 2 }, (_, i) => `mm-${i}`);
  const cpus = Array.from({ length: opts.cpus ?? 2 }, (_, i) => `cpu${i}`);
  const subs = opts.subscribers ?? ['hca0'];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const out: TraceEvent[] = [];
  const seqs = new Map<string, number>();
  const opSeq = new Map<string, number>();
  let ts = opts.t0 ?? 1_800_000_000_000;
  let pfn = 1;
  let token = 1;
  const emit = (service: string, instance: string, input: TraceInput): void => {
    if (out.length >= n) return;
    ts += 0.05 + rnd() * 0.4;
    const s = (seqs.get(instance) ?? 0) + 1;
    seqs.set(instance, s);
    out.push({ ...input, id: `${instance}:${s}`, ts, service, instance } as TraceEvent);
  };
  const opId = (instance: string, what: string): string => {
    const s = (opSeq.get(instance) ?? 0) + 1;
    opSeq.set(instance, s);
    return `${instance}/${what}#${s}`;
  };
  const pids = [1, 2, 3];
  const base = (pid: number) => MMAP_BASE + (pid - 1) * 0x100000;
  for (const pid of pids)
    emit('mm', mms[0], { kind: 'process.create', pid, op: opId(mms[0], 'create') });

  const cpuFault = () => {
    const mm = pick(mms);
    const cpu = pick(cpus);
    const pid = pick(pids);
    const addr = base(pid) + Math.floor(rnd() * 64) * PAGE_SIZE;
    const op = opId(mm, 'fault');
    const f = { pid, addr, access: 'write' as const, agent: cpu };
    const p = pfn++;
    emit('mm', mm, { kind: 'fault.begin', op, ...f });
    emit('mm', mm, { kind: 'frame.alloc', op, pfn: p, gen: 1 });
    emit('mm', mm, {
      kind: 'pte.set',
      op,
      pid,
      addr,
      pfn: p,
      gen: 1,
      writable: true,
      lock: 'ptl:128',
      token: null,
    });
    emit('mm', mm, {
      kind: 'fault.end',
      op,
      ...f,
      result: 'ok',
      how: 'anon',
      pfn: p,
      gen: 1,
      durMs: 2,
      retries: 0,
    });
    emit('cpu', cpu, { kind: 'tlb.fill', agent: cpu, pid, addr, pfn: p, gen: 1, writable: true });
    const t = ts;
    emit('cpu', cpu, {
      kind: 'access',
      agent: cpu,
      pid,
      addr,
      rw: 'write',
      value: 1,
      pfn: p,
      gen: 1,
      frameGen: 1,
      frameFree: false,
      tStart: t,
      tEnd: t + 0.1,
    });
  };

  const npf = () => {
    const mm = pick(mms);
    const hca = pick(subs);
    const pid = pick(pids);
    const addr = base(pid) + Math.floor(rnd() * 64) * PAGE_SIZE;
    const hop = opId(hca, 'rdma_read');
    const op = opId(mm, 'fault');
    const p = pfn++;
    emit('hca', hca, { kind: 'npf.begin', op: hop, agent: hca, pid, addr, pages: 1, write: false });
    emit('mm', mm, { kind: 'fault.begin', op, pid, addr, access: 'read', agent: hca });
    emit('mm', mm, { kind: 'frame.alloc', op, pfn: p, gen: 1 });
    emit('mm', mm, {
      kind: 'pte.set',
      op,
      pid,
      addr,
      pfn: p,
      gen: 1,
      writable: true,
      lock: 'ptl:128',
      token: null,
    });
    emit('mm', mm, {
      kind: 'fault.end',
      op,
      pid,
      addr,
      access: 'read',
      agent: hca,
      result: 'ok',
      how: 'anon',
      pfn: p,
      gen: 1,
      durMs: 2,
      retries: 0,
    });
    emit('hca', hca, {
      kind: 'smap.set',
      op: hop,
      agent: hca,
      pid,
      addr,
      pfn: p,
      gen: 1,
      writable: true,
    });
    emit('hca', hca, {
      kind: 'npf.end',
      op: hop,
      agent: hca,
      pid,
      addr,
      retries: 0,
      result: 'ok',
      durMs: 3,
    });
  };

  const callback = (
    mm: string,
    op: string,
    pid: number,
    inv: string,
    cb: 'invalidate_range_start' | 'invalidate_range_end' | 'invalidate_page',
    start: number,
    end: number,
  ) => {
    for (const s of subs)
      emit('mm', mm, {
        kind: 'mn.send',
        op,
        pid,
        subscriber: s,
        callback: cb,
        inv,
        attempt: 1,
        ptl: null,
      });
    for (const s of subs) {
      const sop = opId(s, cb);
      emit('hca', s, { kind: 'mn.recv', op: sop, agent: s, pid, callback: cb, inv, start, end });
      if (cb !== 'invalidate_range_end')
        emit('hca', s, { kind: 'smap.clear', op: sop, agent: s, pid, addr: start, pfn: 1, gen: 1 });
      emit('hca', s, { kind: 'mn.done', op: sop, agent: s, pid, callback: cb, inv });
    }
    for (const s of subs)
      emit('mm', mm, { kind: 'mn.ack', op, pid, subscriber: s, callback: cb, inv, waitedMs: 5 });
  };

  const munmap = () => {
    const mm = pick(mms);
    const pid = pick(pids);
    const start = base(pid) + Math.floor(rnd() * 60) * PAGE_SIZE;
    const end = start + 4 * PAGE_SIZE;
    const op = opId(mm, 'munmap');
    const inv = `${op}~1`;
    const owner = `${mm}/${op}`;
    const sem = token++;
    emit('mm', mm, { kind: 'mmap_sem.acquire', op, pid, mode: 'write', owner, token: sem });
    emit('mm', mm, { kind: 'vma.unmap', op, pid, start, end });
    emit('mm', mm, { kind: 'mn.range_start', op, pid, start, end, event: 'unmap', inv });
    callback(mm, op, pid, inv, 'invalidate_range_start', start, end);
    const t = token++;
    emit('mm', mm, { kind: 'ptl.acquire', op, pid, lock: 'ptl:128', owner, token: t, waitMs: 0.2 });
    for (let a = start; a < end; a += 2 * PAGE_SIZE)
      emit('mm', mm, {
        kind: 'pte.clear',
        op,
        pid,
        addr: a,
        pfn: 1,
        gen: 1,
        lock: 'ptl:128',
        token: t,
      });
    for (const c of cpus)
      emit('cpu', c, { kind: 'tlb.flush', op, agent: c, pid, start, end, entries: 1 });
    emit('mm', mm, {
      kind: 'ptl.release',
      op,
      pid,
      lock: 'ptl:128',
      owner,
      token: t,
      heldMs: 1,
      released: true,
    });
    emit('mm', mm, { kind: 'frame.free', op, pfn: 1, gen: 1 });
    emit('mm', mm, { kind: 'mn.range_end', op, pid, start, end, event: 'unmap', inv });
    callback(mm, op, pid, inv, 'invalidate_range_end', start, end);
    emit('mm', mm, {
      kind: 'mmap_sem.release',
      op,
      pid,
      mode: 'write',
      owner,
      token: sem,
      released: true,
    });
  };

  const cow = () => {
    const mm = pick(mms);
    const cpu = pick(cpus);
    const pid = pick(pids);
    const addr = base(pid) + Math.floor(rnd() * 64) * PAGE_SIZE;
    const op = opId(mm, 'fault');
    const inv = `${op}~1`;
    const t = token++;
    const f = { pid, addr, access: 'write' as const, agent: cpu };
    emit('mm', mm, { kind: 'fault.begin', op, ...f });
    emit('mm', mm, { kind: 'frame.alloc', op, pfn: pfn++, gen: 1 });
    emit('mm', mm, {
      kind: 'ptl.acquire',
      op,
      pid,
      lock: 'ptl:128',
      owner: `${mm}/${op}`,
      token: t,
      waitMs: 0.1,
    });
    emit('mm', mm, { kind: 'pte.clear', op, pid, addr, pfn: 1, gen: 1, lock: 'ptl:128', token: t });
    emit('cpu', cpu, {
      kind: 'tlb.flush',
      op,
      agent: cpu,
      pid,
      start: addr,
      end: addr + PAGE_SIZE,
      entries: 1,
    });
    emit('mm', mm, {
      kind: 'pte.set',
      op,
      pid,
      addr,
      pfn: pfn - 1,
      gen: 1,
      writable: true,
      lock: 'ptl:128',
      token: t,
    });
    emit('mm', mm, {
      kind: 'ptl.release',
      op,
      pid,
      lock: 'ptl:128',
      owner: `${mm}/${op}`,
      token: t,
      heldMs: 1,
      released: true,
    });
    emit('mm', mm, { kind: 'mn.page', op, pid, addr, inv });
    callback(mm, op, pid, inv, 'invalidate_page', addr, addr + PAGE_SIZE);
    emit('mm', mm, {
      kind: 'fault.end',
      op,
      ...f,
      result: 'ok',
      how: 'wp-copy',
      pfn: pfn - 1,
      gen: 1,
      durMs: 4,
      retries: 0,
    });
  };

  const episodes = [cpuFault, cpuFault, npf, npf, munmap, cow];
  while (out.length < n) pick(episodes)();
  return out;
}
