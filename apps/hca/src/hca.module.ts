/** The HCA on NATS: its verbs on mmlab.hca.<name>.*, its notifier callbacks on mmlab.sub.<name>.*. */
import { Controller, type DynamicModule, Module } from '@nestjs/common';
import type { ReqParsed } from '@mmlab/protocol';
import { Rpc, type Tracer, controlController } from '@mmlab/runtime';
import { notifierController } from '@mmlab/subscriber';
import type { Hca } from './hca';

/** ibv_* verbs and the RDMA operations peers execute on this device. */
function verbsController(hca: Hca) {
  @Controller()
  class HcaVerbsController {
    @Rpc('hcaRegMr', hca.name)
    regMr(req: ReqParsed<'hcaRegMr'>) {
      return hca.regMr(req);
    }

    @Rpc('hcaDeregMr', hca.name)
    deregMr(req: ReqParsed<'hcaDeregMr'>) {
      return hca.deregMr(req.mr);
    }

    @Rpc('hcaRdmaWrite', hca.name)
    async rdmaWrite(req: ReqParsed<'hcaRdmaWrite'>) {
      const r = await hca.rdma(req.mr, req.addr, 'write', req.value);
      return { pfn: r.pfn, gen: r.gen, npf: r.npf, stale: r.stale };
    }

    @Rpc('hcaRdmaRead', hca.name)
    rdmaRead(req: ReqParsed<'hcaRdmaRead'>) {
      return hca.rdma(req.mr, req.addr, 'read');
    }

    @Rpc('hcaPrefetch', hca.name)
    prefetch(req: ReqParsed<'hcaPrefetch'>) {
      return hca.prefetch(req);
    }
  }
  return HcaVerbsController;
}

@Module({})
export class HcaModule {
  static register(hca: Hca, tracer: Tracer): DynamicModule {
    return {
      module: HcaModule,
      controllers: [
        verbsController(hca),
        notifierController(hca.notifier),
        controlController(tracer),
      ],
    };
  }
}
