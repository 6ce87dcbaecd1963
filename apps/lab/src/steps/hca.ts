/**
 * Handlers of the HCA steps (schemas: libs/scenario/src/steps/hca.ts): verbs sent to the HCA
 * that owns the memory region (`hca.reg_mr` binds the MR with its HCA).
 */
import type { HcaStepOp } from '@mmlab/scenario';
import { type StepHandlers, bindAs } from './context';

export const hcaHandlers: StepHandlers<HcaStepOp> = {
  'hca.reg_mr': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    const addr = bindings.addr(step.addr, step.page);
    const req = { pid, addr, pages: step.pages, odp: step.odp, access: step.access };
    const { mr } = await rpc.call('hcaRegMr', req, { id: step.hca, timeoutMs });
    return { value: mr, bind: bindAs(step.as, { hca: step.hca, mr, pid, addr }) };
  },
  'hca.dereg_mr': async (step, { rpc, timeoutMs, bindings }) => {
    const m = bindings.mr(step.mr);
    return { value: await rpc.call('hcaDeregMr', { mr: m.mr }, { id: m.hca, timeoutMs }) };
  },
  'hca.rdma_write': async (step, { rpc, timeoutMs, bindings }) => {
    const m = bindings.mr(step.mr);
    const req = { mr: m.mr, addr: bindings.mrAddr(m, step.addr, step.page), value: step.value };
    return { value: await rpc.call('hcaRdmaWrite', req, { id: m.hca, timeoutMs }) };
  },
  'hca.rdma_read': async (step, { rpc, timeoutMs, bindings }) => {
    const m = bindings.mr(step.mr);
    const req = { mr: m.mr, addr: bindings.mrAddr(m, step.addr, step.page) };
    const r = await rpc.call('hcaRdmaRead', req, { id: m.hca, timeoutMs });
    return { value: r.value };
  },
  'hca.prefetch': async (step, { rpc, timeoutMs, bindings }) => {
    const m = bindings.mr(step.mr);
    const req = {
      mr: m.mr,
      addr: bindings.mrAddr(m, step.addr, step.page),
      pages: step.pages,
      write: step.write,
    };
    return { value: await rpc.call('hcaPrefetch', req, { id: m.hca, timeoutMs }) };
  },
};
