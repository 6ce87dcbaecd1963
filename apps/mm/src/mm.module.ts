import { Controller, type DynamicModule, Module } from '@nestjs/common';
import type { ReqParsed } from '@mmlab/protocol';
import { Rpc, controlController } from '@mmlab/runtime';
import type { MmContext } from './kernel/context';
import { drainLocalPagesFor } from './kernel/page_alloc';
import { MmController, mmFastHandlers } from './mm.controller';
import { MM_CONTEXT } from './tokens';

/**
 * mmlab.mm.<instance>.debug and .crash_point: a subject per replica, so a test can pick which one
 * stalls, or arm a crash point (kernel/crash_point.ts); and .drain_pages, the IPI of
 * drain_all_pages() (kernel/page_alloc.ts): another replica asks this one for its batch.
 */
function debugController(ctx: MmContext) {
  @Controller()
  class MmDebugController {
    @Rpc('mmDebug', ctx.instance)
    arm(req: ReqParsed<'mmDebug'>) {
      ctx.stallUnderPtlMs = req.stallUnderPtlMs;
      return { armed: req.stallUnderPtlMs > 0 };
    }

    @Rpc('mmCrashPoint', ctx.instance)
    armCrash(req: ReqParsed<'mmCrashPoint'>) {
      ctx.crash = req.point ? { point: req.point, token: req.token, action: req.action } : null;
      return { armed: ctx.crash !== null };
    }

    @Rpc('mmDrainPages', ctx.instance)
    async drainPages(req: ReqParsed<'mmDrainPages'>) {
      return { drained: await drainLocalPagesFor(ctx, req.incarnation) };
    }
  }
  return MmDebugController;
}

@Module({})
export class MmModule {
  /** What startMicroservice serves on raw subscriptions next to this module (the fault). */
  static fast = mmFastHandlers;

  static register(ctx: MmContext): DynamicModule {
    return {
      module: MmModule,
      controllers: [MmController, debugController(ctx), controlController(ctx.tracer)],
      providers: [{ provide: MM_CONTEXT, useValue: ctx }],
    };
  }
}
