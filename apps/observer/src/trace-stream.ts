/**
 * The live side of the store: every event stored is handed to the stream's listeners as it
 * arrives (GET /stream, one listener per client), and a reset tells them to start over.
 *
 * SseClient is one GET /stream response: a replay of stored events, then live events, in
 * batches, written only as fast as the client reads. Live events wait in a bounded queue while
 * the socket is full; when the queue overflows the client gets a `lagged` message and the
 * stream ends, rather than the observer buffering without bound (the client reloads).
 */
import type { ServerResponse } from 'node:http';
import { Logger } from '@nestjs/common';
import type { TraceEvent } from '@mmlab/protocol';
import { TraceStore } from './trace-store';

export interface StreamListener {
  event(e: TraceEvent): void;
  /** the store was cleared (POST /reset) */
  reset(): void;
}

export class StreamingTraceStore extends TraceStore {
  private readonly log = new Logger('TraceStream');
  private readonly listeners = new Set<StreamListener>();

  override add(e: TraceEvent): void {
    super.add(e);
    for (const l of this.listeners) {
      try {
        l.event(e);
      } catch (err) {
        // a broken client must not stop the intake
        this.log.warn(`stream listener failed: ${String(err)}`);
        this.listeners.delete(l);
      }
    }
  }

  override clear(): number {
    const n = super.clear();
    for (const l of this.listeners) l.reset();
    return n;
  }

  /** Listen from now on; returns the unsubscribe function. */
  subscribe(l: StreamListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }
}

export interface SseOptions {
  /** live events queued while the client does not read, before it is told it lagged */
  maxQueue: number;
  /** events per SSE message at most */
  batch: number;
  /** ms to gather live events into one message */
  flushMs: number;
  /** ms between keep-alive comments */
  heartbeatMs: number;
}

export const DEFAULT_SSE: SseOptions = {
  maxQueue: 50_000,
  batch: 2_000,
  flushMs: 25,
  heartbeatMs: 15_000,
};

/** The part of an HTTP response SseClient writes to (a ServerResponse, or a fake in tests). */
export interface SseSink {
  /** false: the socket is full, wait for 'drain' */
  write(chunk: string): boolean;
  end(): unknown;
  once(event: 'drain', listener: () => void): unknown;
  readonly writableEnded: boolean;
}
/** A ServerResponse is one. */
export const sinkOf = (res: ServerResponse): SseSink => res;

export class SseClient implements StreamListener {
  private replay: TraceEvent[];
  private replayAt = 0;
  private queue: TraceEvent[] = [];
  private waitingDrain = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private done = false;
  /** events written to the response so far */
  sent = 0;

  constructor(
    private readonly out: SseSink,
    replay: TraceEvent[],
    private readonly opts: SseOptions,
    private readonly onClose: () => void,
    hello: Record<string, unknown> = {},
  ) {
    this.replay = replay;
    // retry: the browser's EventSource waits this long before reconnecting
    this.write(
      `retry: 2000\nevent: hello\ndata: ${JSON.stringify({ ...hello, replay: replay.length })}\n\n`,
    );
    this.heartbeat = setInterval(() => {
      if (!this.waitingDrain && !this.done) this.write(': ping\n\n');
    }, opts.heartbeatMs);
    this.heartbeat.unref();
    this.schedule(0);
  }

  get closed(): boolean {
    return this.done;
  }

  /** Events waiting to be written (replay left and live queue). */
  get backlog(): number {
    return this.replay.length - this.replayAt + this.queue.length;
  }

  event(e: TraceEvent): void {
    if (this.done) return;
    this.queue.push(e);
    if (this.queue.length > this.opts.maxQueue) return this.lag();
    this.schedule(this.opts.flushMs);
  }

  reset(): void {
    if (this.done) return;
    this.replay = [];
    this.replayAt = 0;
    this.queue = [];
    this.write('event: reset\ndata: {}\n\n');
  }

  /** End the stream (client gone, or the observer shutting down). */
  close(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    this.replay = [];
    this.queue = [];
    if (!this.out.writableEnded) this.out.end();
    this.onClose();
  }

  private lag(): void {
    const dropped = this.backlog;
    this.replay = [];
    this.queue = [];
    // Written past the full socket buffer on purpose: one small message, then the end.
    this.out.write(
      `event: lagged\ndata: ${JSON.stringify({ dropped, sent: this.sent, message: 'lagged, reload' })}\n\n`,
    );
    this.close();
  }

  private schedule(ms: number): void {
    if (this.timer || this.waitingDrain || this.done) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, ms);
  }

  private write(chunk: string): boolean {
    const ok = this.out.write(chunk);
    if (!ok && !this.waitingDrain) {
      this.waitingDrain = true;
      this.out.once('drain', () => {
        this.waitingDrain = false;
        this.flush();
      });
    }
    return ok;
  }

  /** Write batches until the socket is full or nothing is left. */
  private flush(): void {
    while (!this.done && !this.waitingDrain) {
      let batch: TraceEvent[];
      let replaying = false;
      if (this.replayAt < this.replay.length) {
        batch = this.replay.slice(this.replayAt, this.replayAt + this.opts.batch);
        this.replayAt += batch.length;
        replaying = true;
      } else if (this.queue.length > 0) {
        batch =
          this.queue.length <= this.opts.batch ? this.queue : this.queue.slice(0, this.opts.batch);
        this.queue = batch === this.queue ? [] : this.queue.slice(batch.length);
      } else return;
      this.sent += batch.length;
      let msg = `event: events\nid: ${batch[batch.length - 1].ts}\ndata: ${JSON.stringify(batch)}\n\n`;
      if (replaying && this.replayAt >= this.replay.length) {
        msg += `event: replayed\ndata: ${JSON.stringify({ events: this.replay.length })}\n\n`;
        this.replay = [];
        this.replayAt = 0;
      }
      this.write(msg);
    }
  }
}
