#!/usr/bin/env node
/**
 * mmlab: the lab's command line (`npx mmlab run FILE [--local] [--out DIR]`, `up`,
 * `api`, `chaos`, `heal`, `fsck`).
 * Exit codes: 0 valid, 1 invalid, 2 unknown (also: a scenario that does not parse, bad usage,
 * a fault the lab API refused).
 */
import { Command, CommanderError, Option } from 'commander';
import { MmlabError, MmuLockMode, Mode } from '@mmlab/protocol';
import type { ApiOptions } from './api/api-command';
import { LAB_API_PORT } from './api/lab-api-port';
import { registerChaosCommands } from './chaos-command';
import type { ConformOptions } from './conform-command';
import type { FsckCommandOptions } from './fsck-command';
import type { UpOptions } from './up-command';

// Each command's module is loaded when that command runs: `mmlab run` and `mmlab chaos` (many
// a test runs dozens of them) do not load the lab API's server (Nest, OpenAPI) at start-up.

const program = new Command('mmlab')
  .description('A distributed lab for the Linux MMU-notifier protocol')
  // 1 means "invalid verdict": usage errors exit 2 instead of commander's 1.
  .exitOverride((e: CommanderError) => {
    throw e;
  });

program
  .command('run')
  .description('run a scenario and write results.json (verdict valid/invalid/unknown: exit 0/1/2)')
  .argument('<file>', 'scenario YAML file')
  .option(
    '--local',
    'start a lab for this run (nats-server, redis-server, every service) and stop it after',
  )
  .option('--out <dir>', 'where results.json, trace.jsonl and logs/ go (default: results/<name>/)')
  .option('--no-report', 'write results.json and trace.jsonl only: no report.html and no plots')
  .action(async (file: string, opts: { local?: boolean; out?: string; report?: boolean }) => {
    const { runCommand } = await import('./run-command');
    process.exitCode = await runCommand(file, opts);
  });

program
  .command('up')
  .description(
    'start the whole lab natively (nats-server, redis-server, every service) until Ctrl-C',
  )
  .addOption(
    new Option('--mode <mode>', 'the kernel modelled').choices(Mode.options).default('patched'),
  )
  .option('--frames <n>', 'physical frames', '256')
  .option(
    '--swap-slots <n>',
    'slots of the swap device (default none: anonymous memory is never reclaimed)',
  )
  .option('--cpus <n>', 'CPU agents', '4')
  .option('--mm-replicas <n>', 'mm replicas in the queue group', '2')
  .option('--hca <n>', 'HCA subscribers hca0..hca(n-1)', '1')
  .option('--kvm <n>', 'KVM subscribers kvm0..kvm(n-1)', '0')
  .addOption(
    new Option(
      '--mmu-lock <mode>',
      "the KVMs' mmu_lock for a range zap: spin (v3.7, default), sleep or generation",
    ).choices(MmuLockMode.options),
  )
  .option(
    '--invalidate-latency <spec>',
    'every subscriber\'s invalidation latency: ms, "uniform:a:b", "normal:mean:sd" or "pareto:scale:shape"',
  )
  .option(
    '--api-port <port>',
    'the lab API (the nemesis: mmlab chaos); a busy port is replaced by a free one',
    String(LAB_API_PORT),
  )
  .option('--free-ports', 'any free ports instead of 4222, 6379, 8080 (and 8081 unless --api-port)')
  .option(
    '--byo <names...>',
    'external subscribers (bring your own device): their NATS identities and Redis user are made and written to <runtime dir>/dev-<name>.json for the device (--creds); the lab does not start them',
  )
  .option('--logs <dir>', 'service logs', '.lab/logs')
  .option(
    '--check',
    'check the options and exit, starting nothing (scripts/lab.sh does, before a build)',
  )
  .action(async (opts: UpOptions) => {
    const { upCommand } = await import('./up-command');
    process.exitCode = await upCommand(opts);
  });

program
  .command('api')
  .description(
    'serve the lab API (the nemesis, for mmlab chaos) for a lab already running at NATS_URL: callback faults only',
  )
  .option('--port <port>', 'HTTP port (a busy one is replaced by a free one)', String(LAB_API_PORT))
  .option('--host <host>', 'address to bind (default: MMLAB_HTTP_HOST, else 127.0.0.1)')
  .action(async (opts: ApiOptions) => {
    const { apiCommand } = await import('./api/api-command');
    process.exitCode = await apiCommand(opts);
  });

program
  .command('fsck')
  .description(
    "check the lab's state in Redis (PTEs in VMAs, frame counts, free list, leases and open invalidations of dead replicas): exit 0 clean, 1 findings, 2 unreadable",
  )
  .option('--redis <url>', "the lab's Redis (default: REDIS_URL)")
  .option('--settle <ms>', 'read again until clean or this long has passed', '0')
  .option('--json', 'print the findings as JSON')
  .action(async (opts: FsckCommandOptions) => {
    const [{ fsckCommand }, { defaultIo }] = await Promise.all([
      import('./fsck-command'),
      import('./run-command'),
    ]);
    process.exitCode = await fsckCommand(opts, defaultIo);
  });

program
  .command('conform')
  .description(
    'run the conformance battery against an external device on a running lab (NATS_URL, MMLAB_OBSERVER_URL): a verdict per scenario with the violating events; exit 0 pass, 1 fail, 2 could not run',
  )
  .requiredOption('--subscriber <name>', 'the external device (mmlab up --byo NAME)')
  .option('--only <names>', 'comma-separated scenarios of the battery to run (default all)')
  .option('--wait-ms <ms>', 'how long to wait for the device to answer ping', '10000')
  .option('--verbose', 'print every step')
  .action(async (opts: ConformOptions) => {
    const [{ conformCommand }, { defaultIo }] = await Promise.all([
      import('./conform-command'),
      import('./run-command'),
    ]);
    process.exitCode = await conformCommand(opts, defaultIo);
  });

registerChaosCommands(program, (code) => {
  process.exitCode = code;
});

program.parseAsync(process.argv).then(
  () => {
    // Exit even if a stray handle (a half-closed socket, a log stream) would keep node alive.
    setTimeout(() => process.exit(), 2000).unref();
  },
  (e: unknown) => {
    if (e instanceof CommanderError) {
      const quiet = e.code === 'commander.helpDisplayed' || e.code === 'commander.version';
      process.exit(quiet ? 0 : 2);
    }
    // a bad option or argument (a typed error) is one line; anything else is a bug: its stack
    const text =
      e instanceof MmlabError
        ? e.toWire().message
        : e instanceof Error
          ? (e.stack ?? e.message)
          : String(e);
    process.stderr.write(`mmlab: ${text}\n`);
    process.exit(2);
  },
);
