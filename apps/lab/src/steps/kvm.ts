/**
 * Handlers of the KVM steps (schemas: libs/scenario/src/steps/kvm.ts): sent to the KVM
 * instance that holds the VM (`kvm.create_vm` binds the VM with its instance).
 */
import type { KvmStepOp } from '@mmlab/scenario';
import { type StepHandlers, bindAs } from './context';

export const kvmHandlers: StepHandlers<KvmStepOp> = {
  'kvm.create_vm': async (step, { rpc, timeoutMs, bindings }) => {
    const pid = bindings.number(step.process);
    const memslots = step.memslots.map((m) => ({
      gfn: m.gfn,
      pages: m.pages,
      addr: bindings.addr(m.addr, m.page),
    }));
    const req = { pid, memslots, vcpus: step.vcpus };
    const { vm } = await rpc.call('kvmCreateVm', req, { id: step.kvm, timeoutMs });
    return { value: vm, bind: bindAs(step.as, { kvm: step.kvm, vm, pid }) };
  },
  'kvm.destroy_vm': async (step, { rpc, timeoutMs, bindings }) => {
    const v = bindings.vm(step.vm);
    return { value: await rpc.call('kvmDestroyVm', { vm: v.vm }, { id: v.kvm, timeoutMs }) };
  },
  'kvm.guest_write': async (step, { rpc, timeoutMs, bindings }) => {
    const v = bindings.vm(step.vm);
    const req = { vm: v.vm, vcpu: step.vcpu, gfn: step.gfn, value: step.value };
    return { value: await rpc.call('kvmGuestWrite', req, { id: v.kvm, timeoutMs }) };
  },
  'kvm.guest_read': async (step, { rpc, timeoutMs, bindings }) => {
    const v = bindings.vm(step.vm);
    const req = { vm: v.vm, vcpu: step.vcpu, gfn: step.gfn };
    const r = await rpc.call('kvmGuestRead', req, { id: v.kvm, timeoutMs });
    return { value: r.value };
  },
};
