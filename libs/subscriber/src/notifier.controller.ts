/**
 * A subscriber's mmu_notifier_ops as requests from mm (mmlab.sub.<name>.*), plus the lab
 * nemesis's subChaos: one Nest controller per subscriber, bound to its NotifierSubscriber.
 */
import { Controller, type Type } from '@nestjs/common';
import { RPC, type ReqParsed, type RpcName, subjectFor } from '@mmlab/protocol';
import { Rpc } from '@mmlab/runtime';
import type { NotifierSubscriber } from './subscriber';

/** The mmu_notifier_ops requests mm sends a subscriber (not subChaos: the nemesis's). */
export const NOTIFIER_CALLBACK_RPCS = [
  'mnInvalidateRangeStart',
  'mnInvalidateRangeEnd',
  'mnInvalidatePage',
  'mnChangePte',
  'mnClearFlushYoung',
  'mnTestYoung',
  'mnRelease',
] as const satisfies readonly RpcName[];

/**
 * Is subject one of subscriber name's callbacks from mm? (A clean shutdown keeps answering
 * them while it unregisters: MmlabServerNats.stopTaking.)
 */
export function isCallbackSubjectOf(name: string): (subject: string) => boolean {
  const subjects = new Set<string>(NOTIFIER_CALLBACK_RPCS.map((r) => subjectFor(RPC[r], name)));
  return (subject) => subjects.has(subject);
}

export function notifierController(sub: NotifierSubscriber): Type<unknown> {
  @Controller()
  class NotifierController {
    @Rpc('mnInvalidateRangeStart', sub.name)
    invalidateRangeStart(req: ReqParsed<'mnInvalidateRangeStart'>) {
      return sub.invalidateRangeStart(req);
    }

    @Rpc('mnInvalidateRangeEnd', sub.name)
    invalidateRangeEnd(req: ReqParsed<'mnInvalidateRangeEnd'>) {
      return sub.invalidateRangeEnd(req);
    }

    @Rpc('mnInvalidatePage', sub.name)
    invalidatePage(req: ReqParsed<'mnInvalidatePage'>) {
      return sub.invalidatePage(req);
    }

    @Rpc('mnChangePte', sub.name)
    changePte(req: ReqParsed<'mnChangePte'>) {
      return sub.changePte(req);
    }

    @Rpc('mnClearFlushYoung', sub.name)
    clearFlushYoung(req: ReqParsed<'mnClearFlushYoung'>) {
      return sub.clearFlushYoung(req);
    }

    @Rpc('mnTestYoung', sub.name)
    testYoung(req: ReqParsed<'mnTestYoung'>) {
      return sub.testYoung(req);
    }

    @Rpc('mnRelease', sub.name)
    release(req: ReqParsed<'mnRelease'>) {
      return sub.release(req);
    }

    /** (lab nemesis) the callback-level faults of this subscriber */
    @Rpc('subChaos', sub.name)
    subChaos(req: ReqParsed<'subChaos'>) {
      return sub.subChaos(req);
    }
  }
  return NotifierController;
}
