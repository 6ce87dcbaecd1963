import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_USER_RULE,
  REDIS_ACL,
  REDIS_KINDS,
  aclCommands,
  aclFile,
  aclRule,
  luaCommands,
} from './acl';
import { aclFiles } from './gen-acl';
import { SCRIPTS } from './scripts';

const root = path.resolve(__dirname, '../../..');

/** Commands no service may send: admin, dangerous or keyspace-wide. */
const FORBIDDEN = [
  'flushall',
  'flushdb',
  'config',
  'keys',
  'scan',
  'monitor',
  'acl',
  'debug',
  'shutdown',
  'save',
  'bgsave',
  'bgrewriteaof',
  'replicaof',
  'slaveof',
  'module',
  'script|flush',
  'function',
  'client|kill',
  'migrate',
  'restore',
  'rename',
  'sort',
  'eval_ro',
  'fcall',
];

describe('Redis ACL users (acl.ts)', () => {
  it('names the command of every redis.call as a literal, so the derived lists are complete', () => {
    for (const [name, d] of Object.entries(SCRIPTS)) {
      const calls = d.lua.match(/redis\.p?call\(/g)?.length ?? 0;
      const literal = d.lua.match(/redis\.p?call\(\s*'[A-Za-z_]+'/g)?.length ?? 0;
      expect(literal, name).toBe(calls);
    }
    expect(luaCommands("redis.call('HGET', k) redis.pcall('BITFIELD_RO', k)")).toEqual([
      'bitfield_ro',
      'hget',
    ]);
  });

  it.each(REDIS_KINDS.filter((k) => k !== 'lab'))(
    '%s: every command of its scripts, none forbidden, no write to every key',
    (kind) => {
      const d = REDIS_ACL[kind];
      const cmds = aclCommands(kind);
      const scripts = d.scripts === 'all' ? Object.keys(SCRIPTS) : d.scripts;
      for (const s of scripts)
        for (const c of luaCommands(SCRIPTS[s as keyof typeof SCRIPTS].lua))
          expect(cmds, `${kind} runs ${s}`).toContain(c);
      for (const c of FORBIDDEN) expect(cmds, kind).not.toContain(c);
      expect(
        cmds.some((c) => c.startsWith('@')),
        kind,
      ).toBe(false);
      expect(d.write, kind).not.toContain('*');
      const rule = aclRule(kind);
      expect(rule).toMatch(/^resetkeys resetchannels -@all /);
      // the script selector grants nothing but the script calls
      expect(/\(([^)]*)\)$/.exec(rule)?.[1]).toMatch(/^\+evalsha \+eval( ~\S+)+$/);
    },
  );

  it('fsck only reads; hca, kvm and cpu cannot write a lock, a VMA or the frame counts', () => {
    expect(REDIS_ACL.fsck.write).toEqual([]);
    for (const k of ['hca', 'kvm', 'cpu'] as const) {
      const writes = REDIS_ACL[k].write;
      for (const p of ['{p:*}:*', '{p:*}:ptl:*', '{p:*}:vma', '{mem}:meta', '{mem}:*'])
        expect(writes, k).not.toContain(p);
    }
    expect(REDIS_ACL.hca.write).not.toContain('{p:*}:pte');
  });

  it("gives an instance's keys to that instance only, with glob characters escaped", () => {
    const rule = aclRule('hca', ['hca0', 'h*[1]']);
    expect(rule).toContain('~{sub}:live:hca0 ');
    expect(rule).toContain('~{sub}:live:h\\*\\[1\\] ');
    expect(aclRule('cpu')).toContain('~{sub}:live:cpu* ');
  });

  it('writes an aclfile with the default user off and hashed passwords', () => {
    const f = aclFile({ mm: { passwordSha256: 'ab'.repeat(32) } });
    expect(f.split('\n')[0]).toBe(`user default ${DEFAULT_USER_RULE}`);
    expect(DEFAULT_USER_RULE).toMatch(/^off /);
    expect(f).toContain(`user mm on #${'ab'.repeat(32)} resetkeys`);
    expect(f).not.toContain('user cpu');
  });

  it('has deploy/redis/users.acl and the k8s ConfigMap up to date (npm run redis:acl)', () => {
    for (const [file, text] of Object.entries(aclFiles(root)))
      expect(readFileSync(path.join(root, file), 'utf8'), file).toBe(text);
  });
});
