/**
 * observer-intake: trace events per second the observer takes in without losing one. Runs
 * bench/observer-intake.ts (built: dist/bench/observer-intake.js) as its own process at the
 * target rate: nats-server and the observer as real processes, realistic events published at a
 * paced rate, then the observerSync barrier and a count of what was stored. The figure is the
 * rate achieved with nothing lost; the publisher's own ceiling is recorded beside it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '@mmlab/runner';
import { type BenchResult, type Benchmark, round } from '../lib/harness';
import { barPlot } from '../lib/plot';

const TARGET = 50_000;

interface IntakeOut {
  sent: number;
  stored: number;
  lost: number;
  achievedRate: number;
  targetRate: number;
  seconds: number;
  maxBacklogEvents: number;
  finalSyncMs: number;
  observer: { cpuPercent: number; rssMB: number; peakRssMB: number } | null;
}

function runIntake(args: string[]): Promise<IntakeOut> {
  const script = path.join(repoRoot(), 'dist', 'bench', 'observer-intake.js');
  if (!existsSync(script)) throw new Error(`${script} is missing: run npm run build`);
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.on('error', reject);
    p.on('exit', () => {
      const start = out.indexOf('{');
      if (start < 0) return reject(new Error(`observer-intake printed no result: ${err}`));
      try {
        resolve(JSON.parse(out.slice(start)) as IntakeOut);
      } catch (e) {
        reject(new Error(`observer-intake: ${String(e)}: ${out} ${err}`));
      }
    });
  });
}

export const observerIntake: Benchmark = {
  name: 'observer-intake',
  measures: 'events/s taken in without loss',
  target: `≥ ${TARGET.toLocaleString('en')}/s (batched)`,
  async run({ quick, log }): Promise<BenchResult> {
    const seconds = quick ? 1 : 10;
    const rate = quick ? 2000 : TARGET;
    const r = await runIntake(['--seconds', String(seconds), '--rate', String(rate)]);
    log?.(`observer-intake: ${round(r.achievedRate, 0)}/s offered, ${r.lost} lost`);
    const kept = r.lost === 0 ? r.achievedRate : (r.stored / r.sent) * r.achievedRate;
    const rows = [
      {
        offeredRate: rate,
        seconds,
        sent: r.sent,
        stored: r.stored,
        lost: r.lost,
        achievedRate: round(r.achievedRate, 0),
        maxBacklogEvents: r.maxBacklogEvents,
        finalSyncMs: round(r.finalSyncMs, 0),
        observerCpuPercent: r.observer ? round(r.observer.cpuPercent, 0) : null,
        observerPeakRssMB: r.observer ? round(r.observer.peakRssMB, 0) : null,
      },
    ];
    return {
      name: this.name,
      measures: this.measures,
      quick,
      figure: {
        value: round(kept, 0),
        unit: 'events/s',
        text: `${round(kept, 0)}/s offered ${rate}/s for ${seconds} s, ${r.lost} lost (sync ${round(r.finalSyncMs, 0)} ms)`,
      },
      target: {
        text: this.target,
        met: quick ? null : r.lost === 0 && r.achievedRate >= TARGET * 0.98,
      },
      rows,
      notes: [
        'the figure is the rate the publishers achieved when nothing was lost; below the offered rate, the publisher is the limit',
      ],
      plot: barPlot({
        title: 'observer-intake: events sent, stored, lost',
        rows: [
          { what: 'sent', events: r.sent },
          { what: 'stored', events: r.stored },
          { what: 'lost', events: r.lost },
        ],
        x: 'what',
        y: 'events',
      }),
    };
  },
};
