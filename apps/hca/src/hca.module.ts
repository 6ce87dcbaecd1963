/** The HCA on NATS: its verbs on mmlab.hca.<name>.*, its notifier callbacks on mmlab.sub.<name>.*. */
import { Controller, type DynamicModule, Module } from '@nestjs/common';
import type { ReqParsed } from '@mmlab/protocol';
import { Rpc, type Tracer, controlController } from '@mmlab/runtime';
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

/** mmu_notifier_ops, as requests from mm. */
function notifierController(hca: Hca) {
  const n = hca.notifier;
  @Controller()
  class HcaNotifierController {
    @Rpc('mnInvalidateRangeStart', hca.name)
    invalidateRangeStart(req: ReqParsed<'mnInvalidateRangeStart'>) {
      return n.invalidateRangeStart(req);
    }

    @Rpc('mnInvalidateRangeEnd', hca.name)
    invalidateRangeEnd(req: ReqParsed<'mnInvalidateRangeEnd'>) {
      return n.invalidateRangeEnd(req);
    }

    @Rpc('mnInvalidatePage', hca.name)
    invalidatePage(req: ReqParsed<'mnInvalidatePage'>) {
      return n.invalidatePage(req);
    }

    @Rpc('mnChangePte', hca.name)
    changePte(req: ReqParsed<'mnChangePte'>) {
      return n.changePte(req);
    }

    @Rpc('mnClearFlushYoung', hca.name)
    clearFlushYoung(req: ReqParsed<'mnClearFlushYoung'>) {
      return n.clearFlushYoung(req);
    }

    @Rpc('mnTestYoung', hca.name)
    testYoung(req: ReqParsed<'mnTestYoung'>) {
      return n.testYoung(req);
    }

    @Rpc('mnRelease', hca.name)
    release(req: ReqParsed<'mnRelease'>) {
      return n.release(req);
    }

    /** (lab nemesis) the callback-level faults of this subscriber */
    @Rpc('subChaos', hca.name)
    subChaos(req: ReqParsed<'subChaos'>) {
      return hca.subChaos(req);
    }
  }
  return HcaNotifierController;
}

@Module({})
export class HcaModule {
  static register(hca: Hca, tracer: Tracer): DynamicModule {
    return {
      module: HcaModule,
      controllers: [verbsController(hca), notifierController(hca), controlController(tracer)],
    };
  }
}
