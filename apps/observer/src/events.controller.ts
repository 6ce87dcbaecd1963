/** GET /events, GET /stats, POST /reset: the stored trace. */
import { Body, Controller, Get, HttpCode, Post, Query } from '@nestjs/common';
import { EventsQuery, ResetRequest, parseBody, parseQuery } from './http-query';
import { ApiDoc } from './openapi';
import { TraceIntake } from './trace-intake';
import { type EventPage, TraceStore } from './trace-store';

@Controller()
export class EventsController {
  constructor(
    private readonly store: TraceStore,
    private readonly intake: TraceIntake,
  ) {}

  /** Stored events, oldest first, filtered, one page at a time. */
  @Get('events')
  @ApiDoc.events()
  events(@Query() query: unknown): EventPage & { limit: number } {
    const { offset, limit, kind, ...filter } = parseQuery(EventsQuery, query);
    return { ...this.store.query({ ...filter, kinds: kind }, offset, limit), limit };
  }

  @Get('stats')
  @ApiDoc.stats()
  stats() {
    return {
      events: this.store.size,
      rejected: this.intake.rejected,
      forged: this.intake.forged,
      dropped: this.store.dropped,
      byKind: this.store.byKind(),
      lastRejected: this.intake.lastRejected,
      cap: this.store.cap,
      traceFile: this.intake.file
        ? { path: this.intake.file.path, error: this.intake.file.error }
        : null,
    };
  }

  /**
   * Forget the trace and the counters, for the next run of a long-lived lab. The body is empty
   * or `{}` (fuzz-http: POST /reset {"bogus":1} with the token cleared the trace).
   */
  @Post('reset')
  @ApiDoc.reset()
  @HttpCode(200)
  reset(@Body() body: unknown) {
    parseBody(ResetRequest, body);
    return { cleared: this.intake.reset() };
  }
}
