import { describe, expect, it } from 'vitest';
import { ScenarioConfig, parseScenario } from '@mmlab/scenario';
import { conformBattery, conformDocument } from './conform';
import { byoNames, upConfig } from './up-command';

const config = ScenarioConfig.parse({ mode: 'patched', frames: 64, cpus: 1, mmReplicas: 1 });

describe('mmlab conform: the battery', () => {
  it('every scenario parses and checks as a scenario file on an external device', () => {
    const battery = conformBattery('gpu0', config);
    expect(battery.map((s) => s.name)).toEqual([
      'fork-cow',
      'munmap',
      'mprotect',
      'mremap',
      'madvise',
      'exit',
      'reclaim',
      'ksm',
      'slow-callbacks',
      'paused-callbacks',
      'resends',
    ]);
    for (const s of battery) {
      const r = parseScenario(conformDocument(s, 'gpu0', config), s.name);
      expect(r.ok ? [] : r.errors, s.name).toEqual([]);
      if (!r.ok) continue;
      expect(r.scenario.config.subscribers).toContainEqual({ name: 'gpu0', kind: 'external' });
      expect(r.scenario.expect.violations).toEqual([]);
      expect(r.scenario.steps.some((st) => st.op === 'dev.attach')).toBe(true);
    }
  });

  it('reclaim is skipped on a lab without swap, run on one with it', () => {
    const skip = (c: ScenarioConfig) =>
      conformBattery('gpu0', c).find((s) => s.name === 'reclaim')?.skip;
    expect(skip(config)).toMatch(/no swap/);
    expect(skip({ ...config, swapSlots: 64 })).toBeUndefined();
  });

  it('a device step naming no external subscriber is refused at parse time', () => {
    const s = conformBattery('gpu0', config)[1];
    const doc = JSON.parse(conformDocument(s, 'gpu0', config)) as { steps: unknown[] };
    doc.steps.push({ op: 'dev.read', dev: 'nope', process: 'p', addr: 'buf' });
    const bad = parseScenario(JSON.stringify(doc), 'x');
    expect(bad.ok ? [] : bad.errors.join('\n')).toMatch(
      /dev "nope" is not a configured subscriber of kind external/,
    );
  });
});

describe('mmlab up --byo', () => {
  const opts = { mode: 'patched', frames: '64', cpus: '1', mmReplicas: '1', hca: '1', kvm: '0' };
  const up = { ...opts, apiPort: '8081', logs: 'x' };

  it('adds external subscribers, named once each', () => {
    expect(byoNames(['gpu0,gpu1', 'npu'])).toEqual(['gpu0', 'gpu1', 'npu']);
    expect(upConfig({ ...up, byo: ['gpu0'] }).subscribers).toEqual([
      { name: 'hca0', kind: 'hca' },
      { name: 'gpu0', kind: 'external' },
    ]);
  });

  it.each([['hca0'], ['cpu1'], ['mm-0'], ['observer'], ['a b'], ['gpu0,gpu0']])(
    'refuses --byo %s (EINVAL)',
    (n) => {
      expect(() => byoNames([n])).toThrow(/--byo/);
    },
  );
});
