/**
 * The provisioned Grafana dashboard and the Prometheus scrape config cannot drift from the
 * metrics the services declare (metrics.ts): every PromQL expression of the dashboard may name
 * only declared series, with their declared labels, and every declared metric is on it.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadEnv } from './config';
import { METRIC_DEFS, type MetricDef, seriesNames } from './metrics';

const root = path.resolve(__dirname, '../../..');
const read = (p: string) => readFileSync(path.join(root, p), 'utf8');

interface Target {
  expr: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: Target[];
  panels?: Panel[];
}
const dashboard = JSON.parse(read('deploy/grafana/dashboards/mmlab.json')) as {
  uid: string;
  title: string;
  panels: Panel[];
};
const panels = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...panels(p.panels ?? [])]);
const queried = panels(dashboard.panels).filter((p) => p.type !== 'row');

/** PromQL functions and aggregation operators a dashboard may use. */
const PROMQL_FUNCTIONS = new Set([
  'abs',
  'avg',
  'avg_over_time',
  'clamp_max',
  'clamp_min',
  'count',
  'delta',
  'deriv',
  'histogram_quantile',
  'increase',
  'irate',
  'max',
  'max_over_time',
  'min',
  'min_over_time',
  'quantile',
  'rate',
  'sum',
  'sum_over_time',
  'topk',
  'vector',
]);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset']);
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['job', 'instance'];

interface PromqlRefs {
  metrics: string[];
  functions: string[];
  labels: string[];
}

/** The series, functions and label names a PromQL expression refers to. */
function promqlRefs(expr: string): PromqlRefs {
  const metrics: string[] = [];
  const functions: string[] = [];
  const labels: string[] = [];
  let s = expr.replace(/\$__\w+/g, '1m');
  // selectors with matchers: name{label="value", ...} or {label="value"}
  s = s.replace(
    /([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g,
    (_m, name: string | undefined, body: string) => {
      if (name) metrics.push(name);
      for (const m of body.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g))
        labels.push(m[1]);
      return ' ';
    },
  );
  s = s.replace(/\[[^\]]*\]/g, ' '); // range and subquery durations
  s = s.replace(
    /\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g,
    (_m, list: string) => {
      labels.push(
        ...list
          .split(',')
          .map((l) => l.trim())
          .filter(Boolean),
      );
      return ' ';
    },
  );
  s = s.replace(/([a-zA-Z_][a-zA-Z0-9_]*)\s*\(/g, (_m, fn: string) => {
    functions.push(fn);
    return ' (';
  });
  s = s.replace(/(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, ' ');
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g))
    if (!KEYWORDS.has(m[0])) metrics.push(m[0]);
  return { metrics, functions, labels };
}

const DEFS: readonly MetricDef[] = Object.values(METRIC_DEFS);
const defOfSeries = new Map<string, MetricDef>(
  DEFS.flatMap((d) => seriesNames(d).map((n) => [n, d] as const)),
);

/** What is wrong with one expression against the declared metrics (empty: nothing). */
function exprProblems(expr: string): string[] {
  const r = promqlRefs(expr);
  const problems: string[] = [];
  if (r.metrics.length === 0) problems.push('refers to no metric');
  const allowed = new Set(TARGET_LABELS);
  for (const name of r.metrics) {
    const d = defOfSeries.get(name);
    if (!d) {
      problems.push(`${name} is not declared in metrics.ts`);
      continue;
    }
    d.labels.forEach((l) => allowed.add(l));
    if (name.endsWith('_bucket')) allowed.add('le');
  }
  for (const fn of r.functions)
    if (!PROMQL_FUNCTIONS.has(fn)) problems.push(`${fn}() is not a known PromQL function`);
  for (const l of r.labels) if (!allowed.has(l)) problems.push(`label ${l} is not declared`);
  return problems;
}

describe('the Grafana dashboard', () => {
  const exprs = queried.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));

  it('has panels with queries', () => {
    expect(dashboard.uid).toBe('mmlab-overview');
    expect(queried.length).toBeGreaterThanOrEqual(10);
    for (const p of queried) expect(p.targets?.length, p.title).toBeGreaterThan(0);
  });

  it('queries only declared metrics, with their declared labels', () => {
    const bad = exprs
      .map((t) => ({ panel: t.panel, expr: t.expr, problems: exprProblems(t.expr) }))
      .filter((t) => t.problems.length > 0);
    expect(bad).toEqual([]);
  });

  it('shows every declared metric', () => {
    const used = new Set(exprs.flatMap((t) => promqlRefs(t.expr).metrics));
    const unused = DEFS.filter((d) => !seriesNames(d).some((n) => used.has(n))).map((d) => d.name);
    expect(unused).toEqual([]);
  });

  it('reads the provisioned Prometheus data source', () => {
    const ds = parse(read('deploy/grafana/provisioning/datasources/prometheus.yaml')) as {
      datasources: Array<{ uid: string; type: string; url: string }>;
    };
    expect(ds.datasources).toHaveLength(1);
    const [prom] = ds.datasources;
    expect(prom).toMatchObject({ type: 'prometheus', url: 'http://prometheus:9090' });
    for (const p of queried) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: prom.uid });
      for (const t of p.targets ?? []) expect(t.datasource, p.title).toEqual(p.datasource);
    }
  });

  it('is provisioned from the folder compose mounts it in', () => {
    const prov = parse(read('deploy/grafana/provisioning/dashboards/mmlab.yaml')) as {
      providers: Array<{ type: string; folder: string; options: { path: string } }>;
    };
    const compose = parse(read('docker-compose.yml'), { merge: true }) as {
      services: Record<string, { volumes?: string[] }>;
    };
    const mount = (compose.services.grafana.volumes ?? [])
      .map((v) => v.split(':'))
      .find(([src]) => src === './deploy/grafana/dashboards');
    expect(mount, 'docker-compose.yml mounts deploy/grafana/dashboards').toBeDefined();
    expect(prov.providers).toHaveLength(1);
    const [provider] = prov.providers;
    expect([provider.type, provider.folder, provider.options.path]).toEqual([
      'file',
      'mmlab',
      mount![1],
    ]);
  });

  // The checks above must be able to fail.
  it('flags an undeclared metric, an undeclared label and an unknown function', () => {
    expect(
      exprProblems('sum by (kind) (rate(mmlab_fault_seconds_count[$__rate_interval]))'),
    ).toEqual([]);
    expect(exprProblems('rate(mmlab_faults_total[5m])')).toEqual([
      'mmlab_faults_total is not declared in metrics.ts',
    ]);
    expect(exprProblems('sum by (lock) (mmlab_fault_seconds_count{kind="anon"})')).toEqual([
      'label lock is not declared',
    ]);
    expect(exprProblems('mmlab_frames_free{cpu="0"}')).toEqual(['label cpu is not declared']);
    expect(exprProblems('histogram_quantil(0.5, mmlab_fault_seconds_bucket)')).toEqual([
      'histogram_quantil() is not a known PromQL function',
    ]);
    expect(
      promqlRefs(
        'histogram_quantile(0.99, sum by (le, subscriber) (rate(mmlab_invalidation_seconds_bucket{subscriber=~"hca.*"}[1m]))) / 1e3',
      ),
    ).toEqual({
      metrics: ['mmlab_invalidation_seconds_bucket'],
      functions: ['histogram_quantile', 'sum', 'rate'],
      labels: ['subscriber', 'le', 'subscriber'],
    });
  });
});

describe('the Prometheus scrape config', () => {
  const prom = parse(read('deploy/prometheus/prometheus.yml')) as {
    scrape_configs: Array<{
      job_name: string;
      dns_sd_configs?: Array<{ names: string[]; type: string; port: number }>;
    }>;
  };
  const compose = parse(read('docker-compose.yml'), { merge: true }) as {
    services: Record<string, { environment?: Record<string, string | number> }>;
  };

  it('scrapes every replica of mm, cpu, hca and kvm on MMLAB_HTTP_PORT and the observer on its port', () => {
    const jobs = Object.fromEntries(
      prom.scrape_configs.map((j) => [j.job_name, j.dns_sd_configs ?? []]),
    );
    expect(Object.keys(jobs).sort()).toEqual(['cpu', 'hca', 'kvm', 'mm', 'observer']);
    for (const svc of ['mm', 'cpu', 'hca', 'kvm']) {
      const port = Number(compose.services[svc].environment?.MMLAB_HTTP_PORT);
      expect(port, `${svc}: MMLAB_HTTP_PORT in docker-compose.yml`).toBe(9464);
      expect(jobs[svc]).toEqual([expect.objectContaining({ names: [svc], type: 'A', port })]);
    }
    const observerPort = Number(
      compose.services.observer.environment?.MMLAB_OBSERVER_PORT ?? loadEnv({}).MMLAB_OBSERVER_PORT,
    );
    expect(jobs.observer).toEqual([
      expect.objectContaining({ names: ['observer'], type: 'A', port: observerPort }),
    ]);
  });
});
