/**
 * `mmlab conform --subscriber NAME`: the conformance battery (conform.ts) against an external
 * device on a running lab (NATS_URL, MMLAB_OBSERVER_URL as for `mmlab run`): it waits until the
 * device answers ping, reads the lab's config, runs each scenario with the scenario runner and
 * the checker, and prints one verdict per scenario — PASS, FAIL with the rule broken and its
 * events (or the step that went wrong), SKIP when the lab cannot run it. Exit 0: every scenario
 * run passed; 1: one failed; 2: the battery could not run (no such device, no lab).
 */
import { MmlabError } from '@mmlab/protocol';
import { EnvSchema, RpcClient, connectNats, sleep } from '@mmlab/runtime';
import { parseScenario } from '@mmlab/scenario';
import { conformBattery, conformDocument } from './conform';
import { connectLab, runningConfig } from './lab-connection';
import type { Io } from './run-command';
import { ScenarioRunner } from './scenario-runner';
import { eventLine, notOkSteps } from './summary';
import { natsUrlWithCredentials } from './token-file';

export interface ConformOptions {
  subscriber: string;
  /** comma-separated scenario names: run only these */
  only?: string;
  /** how long to wait for the device to answer ping (ms) */
  waitMs: string;
  /** print each step as it runs */
  verbose?: boolean;
}

/** Until name answers ping (or ms passed); returns whether it did. */
async function waitForDevice(rpc: RpcClient, name: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const pongs = await rpc.gather('ping', {}, { timeoutMs: 500 });
    if (pongs.some((p) => p.instance === name)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(250);
  }
}

export async function conformCommand(opts: ConformOptions, io: Io): Promise<number> {
  const name = opts.subscriber;
  const waitMs = Number(opts.waitMs);
  if (!Number.isInteger(waitMs) || waitMs < 0)
    throw new MmlabError('EINVAL', `--wait-ms must be an integer ≥ 0, got ${opts.waitMs}`);
  const natsUrl = natsUrlWithCredentials(EnvSchema.shape.NATS_URL.parse(io.env.NATS_URL), io.env);
  const nc = await connectNats(natsUrl, 'mmlab-conform').catch((e: unknown) => {
    const shown = natsUrl.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
    io.err(`conform: cannot reach NATS at ${shown}: ${e instanceof Error ? e.message : String(e)}`);
    return null;
  });
  if (!nc) return 2;
  let config;
  try {
    const rpc = new RpcClient(nc);
    if (!(await waitForDevice(rpc, name, waitMs))) {
      io.err(`conform: ${name} does not answer ping within ${waitMs} ms: is the device running?`);
      return 2;
    }
    const pongs = await rpc.gather('ping', {}, { timeoutMs: 1000 });
    const configs = await rpc.gather('config', {}, { expect: pongs.length, timeoutMs: 2000 });
    const mem = await rpc.call('meminfo', {});
    config = runningConfig(configs, mem.frames).config;
  } finally {
    await nc.close();
  }
  const mine = (config.subscribers ?? []).find((s) => s.name === name);
  if (mine?.kind !== 'external') {
    io.err(
      `conform: ${name} is ${mine ? `a subscriber of kind ${mine.kind}` : 'no subscriber'} of this lab; ` +
        'conform checks an external device (libs/subscriber runDevice; mmlab up --byo NAME)',
    );
    return 2;
  }
  const only = opts.only?.split(',').filter((s) => s !== '');
  const battery = conformBattery(name, config).filter((s) => !only || only.includes(s.name));
  if (only && battery.length !== only.length) {
    const known = conformBattery(name, config).map((s) => s.name);
    io.err(`conform: --only names no scenario of the battery (${known.join(', ')})`);
    return 2;
  }
  const lab = await connectLab(config, io.env, (l) => io.err(`warning: ${l}`));
  const failed: string[] = [];
  let ran = 0;
  try {
    io.out(`conform ${name}: ${battery.length} scenarios on a ${config.mode} lab`);
    for (const s of battery) {
      if (s.skip) {
        io.out(`  SKIP ${s.name}: ${s.skip}`);
        continue;
      }
      const parsed = parseScenario(conformDocument(s, name, config), `conform:${s.name}`);
      if (!parsed.ok) throw new Error(`conform: scenario ${s.name}: ${parsed.errors.join('; ')}`);
      const outcome = await new ScenarioRunner(parsed.scenario, lab, {
        log: opts.verbose ? io.err : () => undefined,
      }).run();
      ran++;
      if (outcome.verdict === 'valid') {
        io.out(`  PASS ${s.name} (${s.about})`);
        continue;
      }
      failed.push(s.name);
      const broken = outcome.invariants.filter((i) => !i.ok);
      io.out(
        `  ${outcome.verdict === 'invalid' ? 'FAIL' : 'UNKNOWN'} ${s.name} (${s.about})` +
          (broken.length > 0 ? `: ${broken.map((i) => i.name).join(', ')}` : ''),
      );
      if (outcome.error) io.out(`    could not complete: ${outcome.error}`);
      for (const i of broken) {
        io.out(
          `    ${i.name}: ${i.violations.length} violation(s), first: ${i.violations[0]?.message}`,
        );
        for (const e of i.violations[0]?.events.slice(0, 8) ?? []) io.out(`      ${eventLine(e)}`);
      }
      for (const st of notOkSteps(outcome.steps))
        io.out(
          `    step ${st.path ?? st.index} ${st.op}: ${st.reason ?? 'not ok'}` +
            (st.error ? ` [${st.error.code}: ${st.error.message}]` : ''),
        );
    }
  } finally {
    await lab.close();
  }
  io.out(
    failed.length === 0
      ? `conform ${name}: PASS (${ran} scenarios run)`
      : `conform ${name}: FAIL (${failed.length} of ${ran}: ${failed.join(', ')})`,
  );
  return failed.length === 0 ? 0 : 1;
}
