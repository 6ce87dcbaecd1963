/**
 * Redis ACL users per service kind (libs/model acl.ts) on a native lab: every service connects
 * as its kind's user, the default user can do nothing, and what a kind may not do is refused
 * by Redis itself (NOPERM, or its in-script form) with nothing changed, whether sent as a
 * plain command or from a Lua script of the kind's own. The rest of the suite runs with the
 * same users (LocalLab's default) and fails on any refusal at teardown (ACL LOG: test-lab.ts).
 */
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@mmlab/protocol';
import { MEM, type RedisKind, procKeys, subKeys } from '@mmlab/model';
import { type TestLab, startTestLab } from '@mmlab/testing';

/** What Redis answers a refused command: NOPERM, or inside a script its ERR form. */
const REFUSED = /NOPERM|user executing the script can't/;

describe('Redis ACL users per kind', () => {
  let t: TestLab;
  let pid: number;
  const clients: Redis[] = [];

  /** A raw client as kind's user (what a compromised service of that kind could send). */
  const as = (kind: RedisKind): Redis => {
    return client(t.lab.redisUrlFor(kind));
  };
  const client = (url: string): Redis => {
    const c = new Redis(url, {
      maxRetriesPerRequest: 1,
      lazyConnect: true,
      retryStrategy: () => null,
    });
    c.on('error', () => undefined); // a refused AUTH is what some tests expect
    clients.push(c);
    return c;
  };

  /**
   * Every key and its DUMP: the whole state, to compare before and after refused requests. The
   * liveness leases ({sub}:live:*, {mm}:live:*) are left out: their owners renew them meanwhile.
   */
  const state = async (): Promise<Map<string, string>> => {
    const r = t.store.redis as Redis;
    const keys = (await r.keys('*')).filter((k) => !k.includes(':live:')).sort();
    const out = new Map<string, string>();
    for (const k of keys) out.set(k, ((await r.dumpBuffer(k)) ?? Buffer.alloc(0)).toString('hex'));
    return out;
  };

  /** Each command is refused to kind, and the state is unchanged afterwards. */
  const refused = async (kind: RedisKind, cmds: Array<Array<string | number>>) => {
    const before = await state();
    const c = as(kind);
    for (const [cmd, ...args] of cmds)
      await expect(
        c.call(String(cmd), ...args),
        `${kind}: ${cmd} ${args.join(' ')}`,
      ).rejects.toThrow(REFUSED);
    expect(await state()).toEqual(before);
  };

  const evalWrite = (cmd: string, key: string, ...args: string[]) => [
    'EVAL',
    `return redis.call('${cmd}', KEYS[1]${args.map((a) => `, '${a}'`).join('')})`,
    1,
    key,
  ];

  beforeAll(async () => {
    t = await startTestLab({
      mode: 'patched',
      frames: 32,
      cpus: 1,
      mmReplicas: 1,
      subscribers: [
        { name: 'hca0', kind: 'hca' },
        { name: 'kvm0', kind: 'kvm' },
      ],
    });
    // some state to protect: a process with a mapped, written page (PTE, VMA, frame, lease keys)
    ({ pid } = await t.rpc.call('processCreate', {}));
    const { addr } = await t.rpc.call('mmap', { pid, pages: 2, prot: 'rw' });
    await t.rpc.call('cpuAccess', { pid, addr, op: 'write', value: 7 }, { id: 0 });
    await t.rpc.call('cpuAccess', { pid, addr: addr + PAGE_SIZE, op: 'read' }, { id: 0 });
  });

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    // the refusals above were provoked on purpose: clear them before the teardown's check
    if (t) await t.store.redis.call('ACL', 'LOG', 'RESET');
    await t?.stop();
  });

  it('connects every service as its own kind; the observer gets no user; default is off', async () => {
    const list = String(await t.store.redis.call('CLIENT', 'LIST'));
    const users = new Set([...list.matchAll(/ user=(\S+)/g)].map((m) => m[1]));
    for (const k of ['mm', 'cpu', 'hca', 'kvm'] as const) expect(users).toContain(k);
    expect(users).not.toContain('default');
    // mm names its connection after its instance: that one is the mm user
    expect(list).toMatch(/name=mm-0 .* user=mm /);
    expect(t.lab.redisUrlFor('observer')).toBe('');
    const acl = (await t.store.redis.call('ACL', 'LIST')) as string[];
    expect(acl.map((l) => l.split(' ')[1]).sort()).toEqual(
      ['cpu', 'default', 'fsck', 'hca', 'kvm', 'lab', 'mm'].sort(),
    );
    expect(acl.find((l) => l.startsWith('user default '))).toMatch(/ off /);
    // no user name and password: nothing (the default user is off)
    const anon = () => client(t.lab.redisUrl.replace(/\/\/[^@]*@/, '//'));
    await expect(anon().get(MEM.frames)).rejects.toThrow(/NOAUTH/);
    await expect(anon().call('FLUSHALL')).rejects.toThrow(/NOAUTH/);
    // nor can anyone become the default user (it is off; it keeps rights for the AOF replay only)
    const asDefault = client(t.lab.redisUrl.replace(/\/\/[^@]*@/, '//default:anything@'));
    await expect(asDefault.get(MEM.frames)).rejects.toThrow(/WRONGPASS|NOAUTH|closed/);
    // a wrong password for a real user: refused too
    const wrong = client(t.lab.redisUrlFor('hca').replace(/:[0-9a-f]+@/, ':nope@'));
    await expect(wrong.get(MEM.frames)).rejects.toThrow(/WRONGPASS|NOAUTH|closed/);
  });

  it('hca and kvm write no page table, VMA, lock, registration, frame count or other lease', async () => {
    const k = procKeys(pid);
    for (const kind of ['hca', 'kvm'] as const) {
      await refused(kind, [
        ['HSET', k.pte, '0', 'x'],
        evalWrite('HSET', k.pte, '0', 'x'),
        ['ZADD', k.vma, 0, '0:1:rw:'],
        ['SET', k.ptl('ptl:0'), 'me|1'],
        evalWrite('SET', k.ptl('ptl:0'), 'me|1'),
        ['DEL', k.ptl('ptl:mm')],
        ['HSET', k.mn, kind === 'hca' ? 'kvm0' : 'hca0', '0|'],
        ['HSET', MEM.meta, 'free', '1'],
        evalWrite('HSET', MEM.meta, 'free', '1'),
        ['SET', subKeys(kind === 'hca' ? 'kvm0' : 'hca0').live, '1'],
        ['SET', subKeys('cpu0').live, '1'],
        ['FLUSHALL'],
        ['CONFIG', 'SET', 'appendonly', 'no'],
        ['KEYS', '*'],
      ]);
      // what it does need: read a PT lock (ptlHeldBy), read and write frames, its own lease
      const c = as(kind);
      expect(await c.call('GET', k.ptl('ptl:0'))).toBeNull();
      expect(
        await c.call('EVAL', "return redis.call('GET', KEYS[1])", 1, k.ptl('ptl:0')),
      ).toBeNull();
      expect(await c.call('SISMEMBER', MEM.fenced, `${kind}0`)).toBe(0);
    }
  });

  it('cpu takes no lock, changes no VMA or frame count, and has no admin command', async () => {
    const k = procKeys(pid);
    await refused('cpu', [
      ['SET', k.ptl('ptl:0'), 'cpu0|1'],
      ['ZADD', k.vma, 0, '0:1:rw:'],
      ['HSET', k.mm, 'state', 'dead'],
      ['SADD', k.intents, 'x'],
      ['HSET', MEM.meta, 'nr_free', '0'],
      evalWrite('HSET', MEM.meta, 'nr_free', '0'),
      evalWrite('DEL', MEM.pending),
      ['SET', subKeys('hca0').live, '1'],
      ['FLUSHALL'],
      ['FLUSHDB'],
      ['CONFIG', 'GET', 'requirepass'],
      ['ACL', 'LIST'],
      ['MONITOR'],
      ['SHUTDOWN', 'NOSAVE'],
    ]);
  });

  it('fsck reads every key and writes none, from a script or not', async () => {
    const k = procKeys(pid);
    const c = as('fsck');
    expect(Number(await c.call('HGET', MEM.meta, 'frames'))).toBe(32);
    expect(await c.call('EVAL', "return #redis.call('HKEYS', KEYS[1])", 1, k.pte)).toBeGreaterThan(
      0,
    );
    await refused('fsck', [
      ['HSET', k.pte, '0', 'x'],
      evalWrite('HSET', k.pte, '0', 'x'),
      evalWrite('DEL', MEM.frames),
      ['DEL', MEM.frames],
      ['SET', 'anything', '1'],
      ['FLUSHALL'],
    ]);
  });

  it('mm, the kernel, has no admin or keyspace-wide command and no key outside the layout', async () => {
    await refused('mm', [
      ['FLUSHALL'],
      ['FLUSHDB'],
      ['CONFIG', 'SET', 'appendonly', 'no'],
      ['KEYS', '*'],
      ['SCAN', 0],
      ['ACL', 'SETUSER', 'mm', '+@all'],
      ['MONITOR'],
      ['BGREWRITEAOF'],
      ['SHUTDOWN', 'NOSAVE'],
      ['SET', 'outside-the-layout', '1'],
      evalWrite('SET', 'outside-the-layout', '1'),
    ]);
  });

  it('logs each refusal under the user that tried it (ACL LOG)', async () => {
    const log = (await t.store.redis.call('ACL', 'LOG', 128)) as Array<Array<string | number>>;
    const field = (e: Array<string | number>, f: string) => String(e[e.indexOf(f) + 1]);
    // the refused commands and keys (the wrong passwords of the first test are 'auth' entries)
    const who = new Set(
      log.filter((e) => field(e, 'reason') !== 'auth').map((e) => field(e, 'username')),
    );
    expect([...who].sort()).toEqual(['cpu', 'fsck', 'hca', 'kvm', 'mm']);
  });
});
