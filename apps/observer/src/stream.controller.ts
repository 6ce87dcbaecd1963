/**
 * GET /stream: Server-Sent Events, every stored event as it arrives, for the live dashboard.
 *
 *   ?from=<ts>   first replay the stored events with ts >= from (oldest first), then go live
 *   ?tail=<n>    replay only the last n of those
 *   Last-Event-ID (sent by a reconnecting EventSource) overrides from, so a reconnect resumes
 *
 * Messages: `hello` {stored, replay, from}; `events` (data: a JSON array of TraceEvents, id:
 * the ts of the last one); `replayed` {events} once the replay is written; `reset` when the
 * store is cleared; `lagged` {dropped, sent, message} when the client fell too far behind,
 * after which the stream ends; `: ping` comments keep idle connections open.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  Controller,
  Get,
  Inject,
  type OnModuleDestroy,
  Optional,
  Query,
  Req,
  Res,
} from '@nestjs/common';
import type { TraceEvent } from '@mmlab/protocol';
import { parseQuery } from './http-query';
import { ApiDoc } from './openapi';
import { DECIMAL, StreamQuery } from './stream-query';
import { TraceStore } from './trace-store';
import {
  DEFAULT_SSE,
  SseClient,
  type SseOptions,
  StreamingTraceStore,
  sinkOf,
} from './trace-stream';

export const SSE_OPTIONS = Symbol('SSE_OPTIONS');

/** The stored events a stream replays: ts >= from, the last `tail` of them, in arrival order. */
export function replayOf(stored: TraceEvent[], from: number, tail?: number): TraceEvent[] {
  const since = stored.filter((e) => e.ts >= from);
  return tail !== undefined && since.length > tail ? since.slice(since.length - tail) : since;
}

@Controller()
export class StreamController implements OnModuleDestroy {
  private readonly clients = new Set<SseClient>();
  private readonly store: StreamingTraceStore;
  private readonly opts: SseOptions;

  constructor(store: TraceStore, @Optional() @Inject(SSE_OPTIONS) opts?: Partial<SseOptions>) {
    if (!(store instanceof StreamingTraceStore))
      throw new Error('GET /stream needs the observer to store events in a StreamingTraceStore');
    this.store = store;
    this.opts = { ...DEFAULT_SSE, ...opts };
  }

  get clientCount(): number {
    return this.clients.size;
  }

  @Get('stream')
  @ApiDoc.stream()
  stream(@Query() query: unknown, @Req() req: IncomingMessage, @Res() res: ServerResponse): void {
    const q = parseQuery(StreamQuery, query);
    const lastId = req.headers['last-event-id'];
    const from = typeof lastId === 'string' && DECIMAL.test(lastId) ? Number(lastId) : q.from;
    // The snapshot and the subscription happen in one tick: no event is missed or sent twice.
    const replay = from === undefined ? [] : replayOf(this.store.all(), from, q.tail);
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    let off: (() => void) | null = null;
    const client = new SseClient(
      sinkOf(res),
      replay,
      this.opts,
      () => {
        off?.();
        this.clients.delete(client);
      },
      { stored: this.store.size, from: from ?? null },
    );
    off = this.store.subscribe(client);
    this.clients.add(client);
    res.on('close', () => client.close());
  }

  /** End every stream first, or the HTTP server would wait for them to close. */
  onModuleDestroy(): void {
    for (const c of [...this.clients]) c.close();
  }
}
