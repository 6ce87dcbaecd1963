/**
 * Fuzz every NATS subject of the protocol (issue 15): at least PER_SUBJECT generated malformed
 * or hostile requests per subject (fast-check, batches of BATCH sent at once), on one lab with
 * two mm replicas, two CPUs, an HCA and a KVM. Subjects come from the protocol's registry
 * (ALL_RPCS, subjectFor): a subject added or renamed there is fuzzed without an edit here; a
 * per-instance subject is sent to every instance that serves it.
 *
 * Each request is, by what the service will see (SafeNatsDeserializer, then the subject's zod
 * schema):
 *   garbage        not JSON, invalid UTF-8, JSON that is no request, deep nesting → EBADMSG
 *   oversized      a packet within 4 KiB of the server's max_payload               → EBADMSG
 *   broken         a valid request with one field made wrong (type, missing, huge,
 *                  negative, non-integer, 1e999, past 2^53 and 2^64, too long, an
 *                  unknown key or enum value)                                       → EBADMSG
 *   hostile-valid  schema-valid, but naming an unknown process, MR, VM or file, or a
 *                  real process with an unaligned or wrapping range (past TASK_SIZE) → a typed
 *                  error of errors.ts, or an answer that changed nothing
 * and every one must be answered within RPC_DEADLINE_MS (no timeout) with a reply that is a
 * typed wire error (never EINTERNAL) or a reply its response schema accepts.
 *
 * After each batch: Redis is unchanged (a digest of every key's DUMP, less the keys that timers
 * rewrite whatever the requests: VOLATILE_KEYS) when every reply was an error or an answer that
 * changes nothing; after each subject: no PT lock or mmap_sem lease is held (meminfo), fsck finds
 * nothing, every service process still runs. At the end every instance answers ping, and works.
 *
 * The seed is printed (MMLAB_FUZZ_SEED=<seed> replays a run); so are the counts per subject.
 * Replaces test/malformed.e2e-spec.ts (5 hand-written payloads × every subject).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { RequestStrategy } from 'nats';
import {
  ALL_RPCS,
  ERROR_CODES,
  MALFORMED,
  MMAP_BASE,
  PAGE_SIZE,
  ReplyPacket,
  type RpcDef,
  type RpcName,
  TASK_SIZE,
  WireErrorSchema,
  subjectFor,
} from '@mmlab/protocol';
import { type RpcClient, SafeNatsDeserializer } from '@mmlab/runtime';
import { type LocalLab, repoRoot } from '@mmlab/runner';
import type { Store } from '@mmlab/model';
import { type TestLab, codeOf, startTestLab, until } from '@mmlab/testing';
import {
  type FuzzFigures,
  type PayloadKind,
  brokenOf,
  encode,
  figureLines,
  fuzzSeed,
  garbage,
  oversized,
  validOf,
} from './support/fuzz';
import { changedKeys, digest } from './support/redis-digest';

const PER_SUBJECT = 1000;
/** The external device of the lab (kind dev: examples/byo/toy-gpu.ts as its own process). */
const DEV = 'gpu0';
/** The reaper's index of who may own invalidations where (keys.ts mmKeys, MM_INDEX). */
const INDEX_KEYS = [/^\{mm\}:invpids:/, /^\{mm\}:invowners$/];
const BATCH = 200;
/** Oversized payloads per subject (each near 1 MiB: the rest of the batch is small). */
const OVERSIZED_PER_SUBJECT = 4;
/** How long an answer may take: RpcClient's default deadline, doubled for a loaded machine. */
const RPC_DEADLINE_MS = 10_000;
/**
 * The keys a write fault changes when it refills its replica's page batch (rmqueueBulk:
 * frames charged ahead, the frames installed since reported) and indexes a real pid for it,
 * before it knows whether it will be refused: a batch whose changes are confined to these is
 * sent again, and the second time must change nothing at all.
 */
const BATCH_REFILL_KEYS = [
  /^\{mem\}:(frames|meta|pending)$/,
  /^\{p:\d+\}:rsv$/,
  /^\{mm\}:(invowners|invpids:.*)$/,
];
/** Codes that mean a crash, a hang or a service gone, never a refusal. */
const NOT_A_REFUSAL = new Set(['EINTERNAL', 'ETIMEDOUT', 'ENOHANDLER', 'ESHUTDOWN', 'EOWNERDEAD']);

const seed = fuzzSeed();

/** A request and what its bytes are to the service. */
interface Shot {
  kind: PayloadKind;
  subject: string;
  bytes: Uint8Array;
  /** the request's data, as the service will see it, passes the subject's schema */
  valid: boolean;
}

/** What came back: the code ('ok' for an answer), or why it is not a typed answer. */
type Outcome = { code: string; untyped?: string };

const deserializer = new SafeNatsDeserializer();

function classify(d: RpcDef, subject: string, kind: PayloadKind, bytes: Uint8Array): Shot {
  const data: unknown = deserializer.deserialize(bytes, { channel: subject, replyTo: '_' }).data;
  const malformed = typeof data === 'object' && data !== null && MALFORMED in data;
  return { kind, subject, bytes, valid: !malformed && d.request.safeParse(data).success };
}

/** One reply's outcome (a typed error, an answer its schema accepts, or what is wrong). */
function outcomeOf(d: RpcDef, bytes: Uint8Array): Outcome {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { code: 'untyped', untyped: `reply is not JSON: ${Buffer.from(bytes).toString()}` };
  }
  const pkt = ReplyPacket.safeParse(raw);
  if (!pkt.success) return { code: 'untyped', untyped: `reply is no packet: ${String(raw)}` };
  if (pkt.data.err !== undefined) {
    const w = WireErrorSchema.safeParse(pkt.data.err);
    return w.success
      ? { code: w.data.code }
      : { code: 'untyped', untyped: `untyped error ${JSON.stringify(pkt.data.err)}` };
  }
  return d.response.safeParse(pkt.data.response).success
    ? { code: 'ok' }
    : { code: 'untyped', untyped: `answer breaks its schema: ${JSON.stringify(raw)}` };
}

/** Things of the lab that hostile requests name (a real process, MR, VM) besides unknown ones. */
interface Real {
  pid: number;
  addr: number;
  pages: number;
  mr: number;
  vm: number;
}

const UNKNOWN_IDS = [2 ** 31 - 1, 2 ** 53 - 1, 4_242_424];
/** Schema-valid addresses no request may use as a range start: unaligned, at or near TASK_SIZE. */
const BAD_ADDRS = [MMAP_BASE + 1, MMAP_BASE + PAGE_SIZE - 1, TASK_SIZE, TASK_SIZE - PAGE_SIZE];
/** Addresses no process maps (an access there is SIGSEGV / EFAULT / EINVAL). */
const POINT_ADDRS = [TASK_SIZE, TASK_SIZE - PAGE_SIZE, 0, PAGE_SIZE];
/** With BAD_ADDRS' high ones, ranges that run past TASK_SIZE (and past 2^53 bytes: 2^20 pages). */
const BAD_PAGES = [1 << 20, (1 << 20) - 1];

/**
 * Fields a hostile-valid request may set, by name (the protocol's names: Pid, Addr, Pages ...):
 * `unknown` values make the request name something that does not exist; `range` values make a
 * range impossible. A request is hostile-valid when it names something unknown, or names the
 * real process (MR, VM) with an impossible range: it must be refused.
 */
function hostileFields(
  real: Real,
): Record<string, { unknown?: unknown[]; real?: unknown; range?: unknown[]; always?: boolean }> {
  return {
    pid: { unknown: UNKNOWN_IDS, real: real.pid },
    mr: { unknown: UNKNOWN_IDS, real: real.mr },
    vm: { unknown: UNKNOWN_IDS, real: real.vm },
    ino: { unknown: UNKNOWN_IDS },
    addr: { range: BAD_ADDRS },
    start: { range: BAD_ADDRS },
    end: { range: [MMAP_BASE + 1, TASK_SIZE] },
    pages: { range: BAD_PAGES },
    newPages: { range: BAD_PAGES },
    gfn: { range: [2 ** 35, 2 ** 35 - 1] },
    vcpu: { range: [64, 2 ** 31, 2 ** 53 - 1] },
    page: { range: [2 ** 53 - 1, 2 ** 32] },
    // never a live (pfn, gen): unpin of a frame one does not hold is a forged identity (the
    // lead's part of issue 15), not bad input
    pfn: { range: [2 ** 53 - 1, 2 ** 32, 2 ** 24], always: true },
    gen: { range: [2 ** 53 - 1, 2 ** 32], always: true },
  };
}

/** Top-level and nested (in arrays of objects) keys of a value, with their paths. */
function keyPaths(v: unknown, path: Array<string | number> = []): Array<Array<string | number>> {
  if (Array.isArray(v)) return v.flatMap((x, i) => keyPaths(x, [...path, i]));
  if (typeof v !== 'object' || v === null) return [];
  return Object.entries(v).flatMap(([k, x]) => [[...path, k], ...keyPaths(x, [...path, k])]);
}

function setPath(v: unknown, path: Array<string | number>, x: unknown): void {
  let o = v as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) o = o[p] as Record<string | number, unknown>;
  o[path[path.length - 1]] = x;
}

/**
 * A schema-valid request that must be refused: some hostile field overridden (an unknown id, or
 * the real one with a bad range). Null for subjects with no such field (they get no such shot).
 */
function hostileValid(d: RpcDef, real: Real): fc.Arbitrary<unknown> | null {
  const fields = hostileFields(real);
  const sample = fc.sample(validOf(d.request), { seed: 1, numRuns: 20 });
  const names = new Set(sample.flatMap((v) => keyPaths(v).map((p) => String(p[p.length - 1]))));
  if (![...names].some((n) => fields[n]?.unknown)) return null;
  return fc
    .tuple(validOf(d.request), fc.infiniteStream(fc.nat()))
    .map(([base, picks]) => {
      const v = structuredClone(base);
      const it = picks[Symbol.iterator]();
      const pick = <T>(xs: readonly T[]): T => xs[it.next().value % xs.length];
      let unknown = false;
      let realId = false;
      let range = false;
      for (const path of keyPaths(v)) {
        const f = fields[String(path[path.length - 1])];
        // a parent replaced already (pages: a count, where unpin has a list)
        const parent = path
          .slice(0, -1)
          .reduce<unknown>((o, p) => (o as Record<string | number, unknown> | null)?.[p], v);
        if (!f || typeof parent !== 'object' || parent === null) continue;
        const choice = f.always ? 1 : it.next().value % 3;
        // an address with no length is a point (an access): only an unmapped one is hostile
        const point = !('pages' in parent) && !('end' in parent);
        if (f.range && point && path[path.length - 1] === 'addr') {
          if (choice !== 2) {
            setPath(v, path, pick(POINT_ADDRS));
            range = true;
          }
        } else if (f.unknown && choice === 0) {
          setPath(v, path, pick(f.unknown));
          unknown = true;
        } else if (f.real !== undefined && choice === 1) {
          setPath(v, path, f.real);
          realId = true;
        } else if (f.range && (f.always || choice !== 2)) {
          setPath(v, path, pick(f.range));
          // a length alone is no bad range (mmap of 2^20 pages is fine): with an address it is
          range ||= !String(path[path.length - 1])
            .toLowerCase()
            .includes('pages');
        }
      }
      return { v, must: unknown || (realId && range) };
    })
    .filter(({ v, must }) => must && d.request.safeParse(v).success)
    .map(({ v }) => v);
}

/** The request text: a Nest packet (as RpcClient sends) or, now and then, bare data. */
const asPacket = (subject: string, bare: boolean) => (data: unknown) =>
  Buffer.from(bare ? encode(data) : encode({ id: 'fz', pattern: subject, data }));

function shots(
  name: RpcName,
  d: RpcDef,
  subjects: string[],
  real: Real,
  maxPayload: number,
): fc.Arbitrary<Shot> {
  const subject = fc.constantFrom(...subjects);
  const hostile = hostileValid(d, real);
  const schema = d.request;
  const kinds: Array<fc.WeightedArbitrary<Shot>> = [
    {
      weight: 2,
      arbitrary: subject.chain((s) => garbage(s).map((b) => classify(d, s, 'garbage', b))),
    },
    {
      weight: 5,
      arbitrary: fc
        .tuple(subject, brokenOf(schema), fc.integer({ min: 0, max: 4 }))
        .map(([s, v, bare]) => classify(d, s, 'broken', asPacket(s, bare === 0)(v)))
        .filter((sh) => !sh.valid),
    },
  ];
  if (hostile)
    kinds.push({
      weight: 3,
      arbitrary: fc
        .tuple(subject, hostile)
        .map(([s, v]) => classify(d, s, 'hostile-valid', asPacket(s, false)(v))),
    });
  void name;
  void maxPayload;
  return fc.oneof(...kinds);
}

describe('fuzz: every NATS subject', () => {
  let t: TestLab | undefined;
  let lab: LocalLab;
  let nc: NatsConnection;
  let rpc: RpcClient;
  let store: Store;
  let real: Real;
  let maxPayload: number;
  /** the external device (examples/byo/toy-gpu.ts), its own process */
  let gpu: ChildProcess | undefined;
  /** every instance that answers a broadcast: the lab's and the device */
  const everyone = (): string[] => [...lab.instances, DEV];
  /** per subject: shots by kind, answers by code */
  const figures = new Map<string, FuzzFigures>();

  beforeAll(async () => {
    t = await startTestLab(
      {
        mode: 'patched',
        frames: 64,
        cpus: 2,
        mmReplicas: 2,
        subscribers: [
          { name: 'hca0', kind: 'hca' },
          { name: 'kvm0', kind: 'kvm' },
          // a device the user runs (examples/byo): the lab makes its identity, we start it
          { name: DEV, kind: 'external' },
        ],
      },
      { rpcTimeoutMs: RPC_DEADLINE_MS, trace: false },
    );
    ({ lab, nc, rpc, store } = t);
    const creds = t.lab.deviceCreds(DEV);
    gpu = spawn(process.execPath, [path.join(repoRoot(), 'dist/examples/byo/toy-gpu.js')], {
      env: {
        ...process.env,
        ...creds.env,
        NATS_URL: creds.natsUrl,
        REDIS_URL: creds.redisUrl,
        MMLAB_INSTANCE: DEV,
      },
      stdio: 'ignore',
    });
    await until(
      async () =>
        (await rpc.gather('ping', {}, { timeoutMs: 500 })).some((p) => p.instance === DEV),
      `${DEV} answers ping`,
    );
    maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    // the real things hostile requests may name: a process with a written mapping, an ODP MR
    // and a VM over it
    const { pid } = await rpc.call('processCreate', {});
    const pages = 8;
    const { addr } = await rpc.call('mmap', { pid, pages, prot: 'rw' });
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 7 }, { id: 0 });
    const { mr } = await rpc.call(
      'hcaRegMr',
      { pid, addr, pages, odp: true, access: ['read', 'write'] },
      { id: 'hca0' },
    );
    const { vm } = await rpc.call(
      'kvmCreateVm',
      { pid, memslots: [{ gfn: 0, pages, addr }], vcpus: 1 },
      { id: 'kvm0' },
    );
    await rpc.call('devAttach', { pid }, { id: DEV });
    expect((await rpc.call('devAccess', { pid, addr, op: 'read' }, { id: DEV })).value).toBe(7);
    real = { pid, addr, pages, mr, vm };
    console.log(`fuzz-nats: seed ${seed} (MMLAB_FUZZ_SEED=${seed} replays this run)`);
  });

  afterAll(async () => {
    const { rows, total } = figureLines(figures, 'messages');
    console.log(
      `fuzz-nats: seed ${seed}, ${total} messages over ${figures.size} subjects:\n${rows.join('\n')}`,
    );
    if (gpu && gpu.exitCode === null) {
      const exited = new Promise((r) => gpu!.once('exit', r));
      gpu.kill('SIGTERM');
      await exited;
    }
    await t?.stop();
  });

  /** The instances that answer a per-instance subject (every lab instance and CPU id is tried). */
  async function servedIds(d: RpcDef, as?: string): Promise<string[]> {
    const ids = [
      ...everyone(),
      ...lab.specs.filter((s) => s.app === 'cpu').map((s) => s.env.MMLAB_CPU_ID),
    ];
    const served = await Promise.all(
      ids.map(async (id) => {
        try {
          await nc.request(subjectFor(d, id, as), 'probe', { timeout: RPC_DEADLINE_MS });
          return id;
        } catch {
          return null;
        }
      }),
    );
    return served.filter((x): x is string => x !== null);
  }

  /** Send one shot; every reply it gets (broadcast: one per instance) as an outcome. */
  async function fire(d: RpcDef, shot: Shot): Promise<Outcome[]> {
    // near max_payload, each service parses a MiB twice: a loaded machine takes its time
    const deadline = shot.kind === 'oversized' ? 3 * RPC_DEADLINE_MS : RPC_DEADLINE_MS;
    try {
      if (!d.broadcast) {
        const m = await nc.request(shot.subject, shot.bytes, { timeout: deadline });
        return [outcomeOf(d, m.data)];
      }
      const out: Outcome[] = [];
      const it = await nc.requestMany(shot.subject, shot.bytes, {
        strategy: RequestStrategy.Count,
        maxMessages: everyone().length,
        maxWait: deadline,
      });
      for await (const m of it) out.push(outcomeOf(d, m.data));
      if (out.length < everyone().length)
        out.push({
          code: 'ETIMEDOUT',
          untyped: `${out.length} of ${everyone().length} answered`,
        });
      return out;
    } catch (e) {
      return [{ code: 'ETIMEDOUT', untyped: `no reply: ${String(e)}` }];
    }
  }

  /** No PT lock or mmap_sem lease held (a request's own hold ends with it: wait a little). */
  async function noLocks(): Promise<void> {
    let left: unknown[] = [];
    for (let i = 0; i < 30; i++) {
      left = (await rpc.call('meminfo', {})).locks;
      if (left.length === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(left, 'locks held after the batch').toEqual([]);
  }

  it('covers every subject of the protocol', () => {
    expect(ALL_RPCS.length).toBeGreaterThanOrEqual(50);
  });

  for (const [name, d] of ALL_RPCS)
    it(`${d.subject}: ${PER_SUBJECT}+ hostile messages, each a typed refusal, nothing changed`, async () => {
      // a subject that acts for an identity ({as}: mmlab.mm.by.<as>.gup) is sent as each of
      // the lab's subscribers (a request whose actor field names another is refused: EPERM)
      const actors = d.subject.includes('{as}')
        ? (lab.cfg.subscribers ?? []).map((s) => s.name)
        : [undefined];
      const subjects: string[] = [];
      for (const as of actors)
        if (d.subject.includes('{id}'))
          subjects.push(...(await servedIds(d, as)).map((id) => subjectFor(d, id, as)));
        else subjects.push(subjectFor(d, undefined, as));
      expect(subjects.length, `nobody serves ${d.subject}`).toBeGreaterThan(0);
      const f = { sent: {} as Record<string, number>, codes: {} as Record<string, number> };
      figures.set(d.subject, f);
      const count = (sh: Shot, outs: Outcome[]) => {
        f.sent[sh.kind] = (f.sent[sh.kind] ?? 0) + 1;
        for (const o of outs) f.codes[o.code] = (f.codes[o.code] ?? 0) + 1;
      };
      /** What is wrong with the outcomes of one shot (empty: nothing). */
      const problems = (sh: Shot, outs: Outcome[]): string[] =>
        outs.flatMap((o) => {
          const what = `${sh.kind} ${Buffer.from(sh.bytes).toString('utf8').slice(0, 300)}`;
          if (o.untyped) return [`${o.untyped.slice(0, 300)} ← ${what}`];
          if (!sh.valid && o.code !== 'EBADMSG') return [`${o.code}, not EBADMSG ← ${what}`];
          if (NOT_A_REFUSAL.has(o.code)) return [`${o.code} ← ${what}`];
          if (o.code !== 'ok' && !(ERROR_CODES as readonly string[]).includes(o.code))
            return [`unknown code ${o.code} ← ${what}`];
          return [];
        });

      await fc.assert(
        fc.asyncProperty(
          fc.array(shots(name, d, subjects, real, maxPayload), {
            minLength: BATCH,
            maxLength: BATCH,
          }),
          async (batch) => {
            const before = await digest(store);
            const outs = await Promise.all(batch.map((sh) => fire(d, sh)));
            batch.forEach((sh, i) => count(sh, outs[i]));
            expect(batch.flatMap((sh, i) => problems(sh, outs[i]))).toEqual([]);
            const after = await digest(store);
            const accepted = batch.filter((_, i) => outs[i].some((o) => o.code === 'ok'));
            if (accepted.length === 0) {
              const changed = changedKeys(before, after);
              if (
                changed.length > 0 &&
                changed.every((k) => BATCH_REFILL_KEYS.some((re) => re.test(k.split(' ')[0])))
              ) {
                // a page batch refilled (allocator state, not a process's): fsck must agree
                f.codes.refilled = (f.codes.refilled ?? 0) + 1;
                expect((await t!.fsck()).findings).toEqual([]);
                return;
              }
              expect(changed, 'Redis changed by refused requests').toEqual([]);
              return;
            }
            // Some were accepted (an answer that may legitimately change state): the refused ones
            // again, alone, must change nothing.
            const refused = batch.filter((_, i) => outs[i].every((o) => o.code !== 'ok'));
            const again = await digest(store);
            const outs2 = await Promise.all(refused.map((sh) => fire(d, sh)));
            expect(refused.flatMap((sh, i) => problems(sh, outs2[i]))).toEqual([]);
            expect(
              changedKeys(again, await digest(store)),
              'Redis changed by refused requests',
            ).toEqual([]);
            // An accepted request on a pid may index it for the replica's incarnation (once per
            // incarnation and pid: {mm}:invpids:<it>, {mm}:invowners, orphan_ranges.ts) before
            // its intent: bookkeeping of the replica that served it, not a change it made.
            const changed = changedKeys(before, after).filter(
              (k) => !INDEX_KEYS.some((re) => re.test(k.split(' ')[0])),
            );
            expect(
              accepted
                .filter((sh) => changed.length > 0 && sh.kind === 'hostile-valid')
                .map((sh) => `${changed.join(' ')} ← ${Buffer.from(sh.bytes).toString()}`),
              'hostile requests accepted while Redis changed',
            ).toEqual([]);
          },
        ),
        { seed, numRuns: PER_SUBJECT / BATCH, endOnFailure: true },
      );
      // the oversized ones, a few per subject (each near max_payload)
      const big = fc.sample(
        fc
          .constantFrom(...subjects)
          .chain((s) => oversized(s, maxPayload).map((b) => classify(d, s, 'oversized', b))),
        { seed, numRuns: OVERSIZED_PER_SUBJECT },
      );
      const before = await digest(store);
      const bigOuts = await Promise.all(big.map((sh) => fire(d, sh)));
      big.forEach((sh, i) => count(sh, bigOuts[i]));
      expect(big.flatMap((sh, i) => problems(sh, bigOuts[i]))).toEqual([]);
      expect(changedKeys(before, await digest(store))).toEqual([]);

      await noLocks();
      const report = await t!.fsck();
      expect(report.findings).toEqual([]);
      expect(lab.instances.filter((i) => lab.proc(i).exitCode !== null)).toEqual([]);
      expect(gpu?.exitCode).toBeNull();
    });

  it('answers well-formed but impossible requests with their own typed errors', async () => {
    // (from the former test/malformed.e2e-spec.ts)
    const { pid } = real;
    expect(await codeOf(rpc.call('mmap', { pid: 9999, pages: 1, prot: 'rw' }))).toBe('ESRCH');
    expect(
      await codeOf(
        rpc.call('fault', { pid: 9999, addr: MMAP_BASE, access: 'read', agent: 'cpu0' }),
      ),
    ).toBe('ESRCH');
    expect(await codeOf(rpc.call('munmap', { pid, addr: MMAP_BASE + 1, pages: 1 }))).toBe('EINVAL');
    expect(
      await codeOf(rpc.call('cpuAccess', { pid, addr: MMAP_BASE, op: 'write' }, { id: 0 })),
    ).toBe('EBADMSG');
    expect(
      await codeOf(
        rpc.call('cpuAccess', { pid, addr: TASK_SIZE - PAGE_SIZE, op: 'read' }, { id: 0 }),
      ),
    ).toBe('SIGSEGV');
    // regressions: a range past TASK_SIZE is EINVAL, not a munmap of nothing that took mmap_sem
    expect(await codeOf(rpc.call('munmap', { pid, addr: TASK_SIZE - PAGE_SIZE, pages: 2 }))).toBe(
      'EINVAL',
    );
    // an unpin naming a pfn past what BITFIELD can address: EINVAL, not EINTERNAL
    expect(['EINVAL', 'EPERM']).toContain(
      await codeOf(rpc.call('unpin', { pid, pages: [{ pfn: 2 ** 32, gen: 1 }], agent: 'hca0' })),
    );
  });

  it('leaves every service answering, and working', async () => {
    const replies = await rpc.gather('ping', {}, { expect: everyone().length, timeoutMs: 5000 });
    expect(replies.map((r) => r.instance).sort()).toEqual(everyone().sort());
    const { pid, addr } = real;
    await rpc.call('cpuAccess', { pid, addr, op: 'write', value: 5 }, { id: 1 });
    expect((await rpc.call('cpuAccess', { pid, addr, op: 'read' }, { id: 0 })).value).toBe(5);
    expect((await rpc.call('hcaRdmaRead', { mr: real.mr, addr }, { id: 'hca0' })).value).toBe(5);
    expect(
      (await rpc.call('kvmGuestRead', { vm: real.vm, vcpu: 0, gfn: 0 }, { id: 'kvm0' })).value,
    ).toBe(5);
    await rpc.call('devAttach', { pid }, { id: DEV }); // again, if a fuzzed detach detached it
    expect((await rpc.call('devAccess', { pid, addr, op: 'read' }, { id: DEV })).value).toBe(5);
    expect((await rpc.call('munmap', { pid, addr, pages: real.pages })).zapped).toBeGreaterThan(0);
    expect(lab.instances.every((i) => lab.proc(i).exitCode === null)).toBe(true);
  });
});
