/**
 * state-footprint: Redis bytes per resident page (INFO memory used_memory) with 1k, 10k and
 * 100k pages resident, each on a machine of that many frames (plus a little slack) so that the
 * frames' own records count too: a 1M-frame machine must fit in 256 MB.
 *
 * For each size: FLUSHALL, used_memory of the empty Redis (the baseline, same server, same
 * run), a lab formats its frames on it, then every page of one mapping is faulted in for write
 * (get_user_pages without pinning, in chunks), and used_memory again. Bytes per page =
 * (after − empty) / pages; the formatted-but-idle machine is recorded apart.
 */
import { type Redis } from 'ioredis';
import { Store } from '@mmlab/model';
import { startRedis } from '@mmlab/runner';
import { startTestLab } from '@mmlab/testing';
import { type BenchResult, type Benchmark, type Row, round } from '../lib/harness';
import { barPlot } from '../lib/plot';

const TARGET = 128;
const CHUNK = 4096;

async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  const m = /^used_memory:(\d+)/m.exec(info);
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

export const stateFootprint: Benchmark = {
  name: 'state-footprint',
  measures: 'Redis bytes per resident page from INFO memory at 1k, 10k, 100k pages',
  target: `≤ ${TARGET} B/page; a 1M-frame machine under 256 MB`,
  async run({ quick, log }): Promise<BenchResult> {
    // quick: one size (a lab of its own on an emptied Redis is the cost; the loop is the same)
    const sizes = quick ? [256] : [1000, 10_000, 100_000];
    // no AOF: its buffer would count in used_memory, and an fsync per write is not the point
    const server = await startRedis(undefined, ['--appendonly', 'no']);
    const admin = new Store(server.url);
    const redis = admin.redis as Redis;
    const rows: Row[] = [];
    try {
      for (const pages of sizes) {
        await redis.flushall();
        const empty = await usedMemory(redis);
        const env = await startTestLab(
          // quick: no CPU service (gup faults the pages in; one process less to start)
          {
            mode: 'patched',
            frames: pages + 64,
            cpus: quick ? 0 : 1,
            mmReplicas: 1,
            observer: false,
          },
          {
            trace: false,
            redisUrl: server.url,
            rpcTimeoutMs: 600_000,
            // fsck of 100k resident pages is a benchmark of its own: the quick variant keeps it
            ...(pages > 20_000 ? { fsck: { skip: 'state-footprint at 100k pages' } } : {}),
          },
        );
        try {
          const { rpc } = env;
          const formatted = await usedMemory(redis);
          const { pid } = await rpc.call('processCreate', {});
          const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
          for (let done = 0; done < pages; done += CHUNK)
            await rpc.call('gup', {
              pid,
              addr: addr + done * 4096,
              pages: Math.min(CHUNK, pages - done),
              write: true,
              pin: false,
              agent: 'bench',
            });
          const { allocated } = await rpc.call('meminfo', {});
          const resident = await usedMemory(redis);
          const perPage = (resident - empty) / pages;
          rows.push({
            pages,
            allocatedFrames: allocated,
            emptyBytes: empty,
            formattedBytes: formatted,
            residentBytes: resident,
            bytesPerPage: round(perPage, 1),
            formatBytesPerFrame: round((formatted - empty) / (pages + 64), 1),
          });
          log?.(`state-footprint: ${pages} pages: ${round(perPage, 1)} B/page`);
        } finally {
          await env.stop();
        }
      }
    } finally {
      await admin.quit();
      await server.stop();
    }
    const top = rows[rows.length - 1];
    const perPage = Number(top.bytesPerPage);
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: perPage,
        unit: 'B/page',
        text: `${perPage} B/page at ${String(top.pages)} pages (so 1M frames ≈ ${round(perPage, 0)} MiB)`,
      },
      target: { text: this.target, met: perPage <= TARGET && perPage < 256 },
      rows,
      notes: [
        'bytes per page = (used_memory with every page resident − used_memory of the empty Redis) / pages',
      ],
      plot: barPlot({
        title: 'state-footprint: Redis bytes per resident page',
        rows: rows.map((r) => ({ pages: String(r.pages), bytesPerPage: r.bytesPerPage })),
        x: 'pages',
        y: 'bytesPerPage',
        yTitle: 'bytes per resident page',
      }),
    };
  },
};
