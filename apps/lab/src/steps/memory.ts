/**
 * Handlers of the memory steps (schemas: libs/scenario/src/steps/memory.ts): each is the RPC of
 * the wire contract it names, a process's syscall to mm or a CPU's access.
 */
import type { AddrRef, MemoryStepOp } from '@mmlab/scenario';
import { type Bindings, type StepHandlers, bindAs } from './context';

/** The range a step names (process, addr + page, pages) as the syscall's {pid, addr, pages}. */
const rangeOf = (
  step: { process: string; addr: AddrRef; page: number; pages: number },
  bindings: Bindings,
) => ({
  pid: bindings.number(step.process),
  addr: bindings.addr(step.addr, step.page),
  pages: step.pages,
});

export const memoryHandlers: StepHandlers<MemoryStepOp> = {
  'process.create': async (step, { rpc, timeoutMs }) => {
    const { pid } = await rpc.call('processCreate', {}, { timeoutMs });
    return { value: pid, bind: bindAs(step.as, pid) };
  },
  mmap: async (step, { rpc, timeoutMs, bindings }) => {
    const req = {
      pid: bindings.number(step.process),
      pages: step.pages,
      prot: step.prot,
      flags: step.flags,
      ...(step.file !== undefined && { file: bindings.number(step.file), pgoff: step.filePage }),
    };
    const { addr } = await rpc.call('mmap', req, { timeoutMs });
    return { value: addr, bind: bindAs(step.as, addr) };
  },
  munmap: async (step, { rpc, timeoutMs, bindings }) => ({
    value: await rpc.call('munmap', rangeOf(step, bindings), { timeoutMs }),
  }),
  'cpu.read': async (step, { rpc, timeoutMs, bindings }) => {
    const req = {
      pid: bindings.number(step.process),
      addr: bindings.addr(step.addr, step.page),
      op: 'read' as const,
    };
    const r = await rpc.call('cpuAccess', req, { id: step.cpu, timeoutMs });
    return { value: r.value };
  },
  'cpu.write': async (step, { rpc, timeoutMs, bindings }) => {
    const req = {
      pid: bindings.number(step.process),
      addr: bindings.addr(step.addr, step.page),
      op: 'write' as const,
      value: step.value,
    };
    const r = await rpc.call('cpuAccess', req, { id: step.cpu, timeoutMs });
    return { value: r.value };
  },
  fork: async (step, { rpc, timeoutMs, bindings }) => {
    const { pid } = await rpc.call('fork', { pid: bindings.number(step.process) }, { timeoutMs });
    return { value: pid, bind: bindAs(step.as, pid) };
  },
  mprotect: async (step, { rpc, timeoutMs, bindings }) => {
    const req = { ...rangeOf(step, bindings), prot: step.prot };
    return { value: await rpc.call('mprotect', req, { timeoutMs }) };
  },
  mremap: async (step, { rpc, timeoutMs, bindings }) => {
    const req = {
      ...rangeOf(step, bindings),
      ...(step.newPages !== undefined && { newPages: step.newPages }),
    };
    const r = await rpc.call('mremap', req, { timeoutMs });
    return { value: r, bind: bindAs(step.as, r.addr) };
  },
  madvise: async (step, { rpc, timeoutMs, bindings }) => {
    const req = { ...rangeOf(step, bindings), advice: step.advice };
    return { value: await rpc.call('madvise', req, { timeoutMs }) };
  },
  reclaim: async (step, { rpc, timeoutMs }) => ({
    value: await rpc.call('reclaim', { pages: step.pages }, { timeoutMs }),
  }),
  'file.create': async (step, { rpc, timeoutMs }) => {
    const { ino } = await rpc.call(
      'fileCreate',
      { pages: step.pages, xip: step.xip },
      { timeoutMs },
    );
    return { value: ino, bind: bindAs(step.as, ino) };
  },
  'file.write': async (step, { rpc, timeoutMs, bindings }) => {
    const req = { ino: bindings.number(step.file), page: step.page, value: step.value };
    return { value: await rpc.call('fileWrite', req, { timeoutMs }) };
  },
  'file.read': async (step, { rpc, timeoutMs, bindings }) => {
    const req = { ino: bindings.number(step.file), page: step.page };
    const r = await rpc.call('fileRead', req, { timeoutMs });
    return { value: r.value };
  },
  msync: async (step, { rpc, timeoutMs, bindings }) => ({
    value: await rpc.call('msync', rangeOf(step, bindings), { timeoutMs }),
  }),
  remap_file_pages: async (step, { rpc, timeoutMs, bindings }) => ({
    value: await rpc.call(
      'remapFilePages',
      { ...rangeOf(step, bindings), pgoff: step.filePage },
      { timeoutMs },
    ),
  }),
  exit: async (step, { rpc, timeoutMs, bindings }) => ({
    value: await rpc.call('exit', { pid: bindings.number(step.process) }, { timeoutMs }),
  }),
};
