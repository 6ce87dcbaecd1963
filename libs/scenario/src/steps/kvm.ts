/**
 * The KVM steps: create a VM on a process (its memslots and vCPUs), guest loads and stores by
 * one of its vCPUs, destroy it. Executed by apps/lab/src/steps/kvm.ts.
 */
import { z } from 'zod';
import { Gfn, Pages, Value } from '@mmlab/protocol';
import { AddrRef, Binding, PageOffset, SubscriberName, step } from './common';

/** A memslot: guest frames [gfn, gfn + pages) backed by the process's [addr + page, ...). */
export const MemslotSpec = z.strictObject({
  gfn: Gfn,
  pages: Pages,
  addr: AddrRef,
  page: PageOffset,
});

export const KvmCreateVmStep = step('kvm.create_vm', {
  /** a configured subscriber of kind kvm */
  kvm: SubscriberName,
  /** the VMM's address space */
  process: Binding,
  memslots: z.array(MemslotSpec).min(1).max(32),
  vcpus: z.number().int().positive().max(64).default(1),
  /** binds the VM (its KVM instance, number and pid) */
  as: Binding.optional(),
});
export const KvmDestroyVmStep = step('kvm.destroy_vm', { vm: Binding });
const vcpuGfn = { vm: Binding, vcpu: z.number().int().nonnegative().default(0), gfn: Gfn };
export const KvmGuestWriteStep = step('kvm.guest_write', { ...vcpuGfn, value: Value });
export const KvmGuestReadStep = step('kvm.guest_read', {
  ...vcpuGfn,
  /** the value the guest load must return */
  expect: Value.optional(),
});

/** The KVM steps, in the order of the Step union. */
export const kvmSteps = [
  KvmCreateVmStep,
  KvmDestroyVmStep,
  KvmGuestWriteStep,
  KvmGuestReadStep,
] as const;
export type KvmStepOp = z.output<(typeof kvmSteps)[number]>['op'];
