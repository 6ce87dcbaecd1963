/** KVM on NATS: its ioctls and guest accesses on mmlab.kvm.<name>.*, its notifier callbacks on mmlab.sub.<name>.*. */
import { Controller, type DynamicModule, Module } from '@nestjs/common';
import type { ReqParsed } from '@mmlab/protocol';
import { Rpc, type Tracer, controlController } from '@mmlab/runtime';
import { notifierController } from '@mmlab/subscriber';
import type { Kvm } from './kvm';

/** The VMM's ioctls (KVM_CREATE_VM, ...) and what its vCPUs execute. */
function kvmController(kvm: Kvm) {
  @Controller()
  class KvmController {
    @Rpc('kvmCreateVm', kvm.name)
    createVm(req: ReqParsed<'kvmCreateVm'>) {
      return kvm.createVm(req);
    }

    @Rpc('kvmDestroyVm', kvm.name)
    destroyVm(req: ReqParsed<'kvmDestroyVm'>) {
      return kvm.destroyVm(req.vm);
    }

    @Rpc('kvmGuestWrite', kvm.name)
    async guestWrite(req: ReqParsed<'kvmGuestWrite'>) {
      const r = await kvm.guestAccess(req.vm, req.vcpu, req.gfn, 'write', req.value);
      return { pfn: r.pfn, gen: r.gen, faults: r.faults, tlbHit: r.tlbHit, stale: r.stale };
    }

    @Rpc('kvmGuestRead', kvm.name)
    guestRead(req: ReqParsed<'kvmGuestRead'>) {
      return kvm.guestAccess(req.vm, req.vcpu, req.gfn, 'read');
    }
  }
  return KvmController;
}

@Module({})
export class KvmModule {
  static register(kvm: Kvm, tracer: Tracer): DynamicModule {
    return {
      module: KvmModule,
      controllers: [
        kvmController(kvm),
        notifierController(kvm.notifier),
        controlController(tracer),
      ],
    };
  }
}
