/**
 * The optional on-disk copy of the trace (MMLAB_TRACE_FILE): one JSON event per line,
 * appended. Writes are corked for the rest of the tick, so a burst of NATS messages parsed
 * from one socket read becomes a single writev; the stream's own buffer absorbs the rest.
 * A write error (disk full, bad path) is logged once and disables the file; the in-memory
 * store, which the checker uses, goes on.
 */
import { once } from 'node:events';
import { type WriteStream, createWriteStream, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { Logger } from '@nestjs/common';
import type { TraceEvent } from '@mmlab/protocol';

export class TraceFile {
  private readonly log = new Logger('TraceFile');
  private corked = false;
  private failed: Error | null = null;
  private lines = 0;

  private constructor(
    readonly path: string,
    private readonly stream: WriteStream,
  ) {
    stream.on('error', (e) => {
      if (!this.failed) this.log.error(`trace file ${path} disabled: ${e.message}`);
      this.failed = e;
    });
  }

  /** Open for appending, creating the directory if needed; waits until the file is open. */
  static async open(file: string): Promise<TraceFile> {
    mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    const stream = createWriteStream(file, { flags: 'a' });
    await once(stream, 'open');
    return new TraceFile(file, stream);
  }

  /** Lines handed to the stream so far. */
  get written(): number {
    return this.lines;
  }

  get error(): string | null {
    return this.failed?.message ?? null;
  }

  append(e: TraceEvent): void {
    if (this.failed || this.stream.writableEnded) return;
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => this.uncork());
    }
    this.stream.write(JSON.stringify(e) + '\n');
    this.lines++;
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.stream.uncork();
  }

  /** Write out what is buffered and close the file. */
  async close(): Promise<void> {
    if (this.failed || this.stream.writableEnded) return;
    this.uncork();
    await new Promise<void>((resolve) => this.stream.end(() => resolve()));
  }
}
