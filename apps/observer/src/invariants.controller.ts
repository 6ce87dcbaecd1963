/** GET /invariants: the checker over everything stored. */
import { Controller, Get, Inject, Query } from '@nestjs/common';
import { type InvariantVerdict, checkInvariants } from '@mmlab/checker';
import { OBSERVER_SETTINGS, type ObserverSettings } from './observer.config';
import { InvariantsQuery, parseQuery } from './http-query';
import { ApiDoc } from './openapi';
import { TraceStore } from './trace-store';

/** A verdict as served: at most maxViolations listed, all of them counted. */
export type ServedVerdict = InvariantVerdict & { violationCount: number };

@Controller()
export class InvariantsController {
  constructor(
    private readonly store: TraceStore,
    @Inject(OBSERVER_SETTINGS) private readonly settings: ObserverSettings,
  ) {}

  @Get('invariants')
  @ApiDoc.invariants()
  invariants(@Query() query: unknown): {
    events: number;
    softlockupMs: number;
    verdicts: ServedVerdict[];
  } {
    const q = parseQuery(InvariantsQuery, query);
    const softlockupMs = q.softlockupMs ?? this.settings.softlockupMs;
    const events = this.store.all();
    const verdicts = checkInvariants(events, { softlockupMs }).map((v) => ({
      ...v,
      violationCount: v.violations.length,
      violations: v.violations.slice(0, q.maxViolations),
    }));
    return { events: events.length, softlockupMs, verdicts };
  }
}
