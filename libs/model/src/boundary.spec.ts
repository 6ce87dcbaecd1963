import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MmlabError } from '@mmlab/protocol';
import {
  Int,
  Ints,
  PfnGen,
  type ScriptDecl,
  decodeReply,
  encodeCall,
  oneOf,
  tagged,
} from './boundary';
import {
  MEM,
  MEM_KEYS,
  MEM_ROLES,
  PAGE_TABLE_LOCK,
  procKeys,
  pteLockName,
  pteLockOfVpn,
} from './keys';
import { LUA_HELPERS } from './lua';
import { MEM_SCRIPTS } from './mem/scripts';
import { MM_SCRIPTS } from './mm/scripts';
import { REPLICA_SCRIPTS } from './replica/scripts';
import { HUGETLB_SCRIPTS } from './mm/hugetlb-scripts';
import { KSM_SCRIPTS } from './ksm/scripts';
import { MEM_THP_SCRIPTS } from './mem/thp-scripts';
import { THP_SCRIPTS } from './mm/thp-scripts';
import { SCRIPTS } from './scripts';
import { redisDoc } from './gen-doc';

const body = (d: ScriptDecl): string =>
  d.lua.startsWith(LUA_HELPERS) ? d.lua.slice(LUA_HELPERS.length) : d.lua;
const maxIndex = (lua: string, of: 'KEYS' | 'ARGV'): number =>
  Math.max(0, ...[...lua.matchAll(new RegExp(`${of}\\[(\\d+)\\]`, 'g'))].map((m) => Number(m[1])));

describe('script declarations', () => {
  const all = Object.entries(SCRIPTS) as Array<[string, ScriptDecl]>;

  it('declares every script once, in one room, with a models line and a doc', () => {
    const rooms = [
      MEM_SCRIPTS,
      MM_SCRIPTS,
      REPLICA_SCRIPTS,
      KSM_SCRIPTS,
      HUGETLB_SCRIPTS,
      MEM_THP_SCRIPTS,
      THP_SCRIPTS,
    ].map((r) => Object.keys(r));
    expect(all.length).toBe(rooms.reduce((n, r) => n + r.length, 0));
    // no name in two rooms
    expect(new Set(rooms.flat()).size).toBe(all.length);
    for (const [name, d] of all) {
      expect(d.models.length, name).toBeGreaterThan(5);
      expect(d.doc.length, name).toBeGreaterThan(5);
      expect(d.reply.description, name).toMatch(/./);
    }
  });

  it('gives every {mem} script all the {mem} keys, in MEM_ROLES order', () => {
    for (const d of Object.values(MEM_SCRIPTS) as ScriptDecl[])
      expect(d.keys).toEqual([...MEM_ROLES]);
    expect(MEM_KEYS).toEqual(MEM_ROLES.map((r) => MEM[r]));
  });

  it('declares as many KEYS and ARGV as each Lua body reads', () => {
    for (const [name, d] of all) {
      const lua = body(d);
      if (d.varKeys) expect(d.keys, name).toEqual([]);
      else expect(maxIndex(lua, 'KEYS'), name).toBeLessThanOrEqual(d.keys.length);
      // a spread (array) argument may be read past the declared count
      const args = Object.values(d.args as Record<string, z.ZodType>);
      if (!args.some((a) => a instanceof z.ZodArray))
        expect(maxIndex(lua, 'ARGV'), name).toBeLessThanOrEqual(args.length);
    }
  });

  it('names address-space keys only by roles procKeys resolves', () => {
    const k = procKeys(7);
    const roles = new Set([...Object.keys(k), 'lease']);
    for (const [name, d] of Object.entries({ ...MM_SCRIPTS, ...THP_SCRIPTS }) as Array<
      [string, ScriptDecl]
    >)
      for (const role of d.keys) expect(roles.has(role), `${name}: ${role}`).toBe(true);
  });
});

describe('encodeCall', () => {
  const d: ScriptDecl = {
    doc: 'test',
    models: 'test()',
    keys: ['b', 'a'],
    args: { kind: z.enum(['map', 'ref']), n: Int, pages: z.array(PfnGen) },
    argsSchema: z.strictObject({ kind: z.enum(['map', 'ref']), n: Int, pages: z.array(PfnGen) }),
    reply: Int,
    lua: 'return 1',
  };

  it('builds KEYS by role and ARGV by name, in declared order, spreading the last list', () => {
    const e = encodeCall(
      't',
      d,
      { a: 'A', b: 'B' },
      {
        pages: [
          { gen: 2, pfn: 1 },
          { pfn: 3, gen: 4 },
        ],
        n: 9,
        kind: 'ref',
      },
    );
    expect(e).toEqual({ keys: ['B', 'A'], argv: ['ref', 9, 1, 2, 3, 4] });
  });

  it('refuses a bad argument or a missing key with EINVAL', () => {
    const bad = () => encodeCall('t', d, { a: 'A', b: 'B' }, { kind: 'x', n: 1, pages: [] });
    expect(bad).toThrow(MmlabError);
    expect(bad).toThrow(/kind/);
    const frac = () => encodeCall('t', d, { a: 'A', b: 'B' }, { kind: 'map', n: 1.5, pages: [] });
    expect(frac).toThrow(MmlabError);
    const noKey = () => encodeCall('t', d, { a: 'A' }, { kind: 'map', n: 1, pages: [] });
    expect(noKey).toThrow(/missing key/);
  });
});

describe('replies', () => {
  const r = oneOf(tagged('OK', { pfn: Int, freed: Ints }), tagged('ENOMEM'));

  it("reads {'CODE', a, b} as { r: 'CODE', a, b }", () => {
    const d = { reply: r } as unknown as ScriptDecl;
    expect(decodeReply('t', d, ['OK', 3, [4, 5]])).toEqual({ r: 'OK', pfn: 3, freed: [4, 5] });
    expect(decodeReply('t', d, ['ENOMEM'])).toEqual({ r: 'ENOMEM' });
    expect(r.description).toBe("{'OK', pfn, freed} | {'ENOMEM'}");
  });

  it('refuses a reply off its schema (a field too many, a wrong type, an unknown code)', () => {
    const d = { reply: r } as unknown as ScriptDecl;
    expect(() => decodeReply('t', d, ['OK', 3, [4], 9])).toThrow(/answered/);
    expect(() => decodeReply('t', d, ['OK', '3', [4]])).toThrow(/answered/);
    expect(() => decodeReply('t', d, ['BUSY'])).toThrow(/answered/);
  });

  it("parses the fault script's replies, the optional undone included", () => {
    const f = SCRIPTS.fault.reply;
    expect(f.parse(['ZERO', 0, 1, 0, 7])).toEqual({ r: 'ZERO', pfn: 0, gen: 1, w: 0, seq: 7 });
    expect(f.parse(['NEED_WP', 5, 2, 0, 7, 1])).toMatchObject({ r: 'NEED_WP', undone: 1 });
    expect(f.parse(['BUSY', 'ptl'])).toEqual({ r: 'BUSY', what: 'ptl' });
  });
});

describe('keys', () => {
  it('builds every PT-lock name in one place', () => {
    expect(pteLockName(3)).toBe('ptl:3');
    expect(pteLockOfVpn(512 * 4 + 7)).toBe('ptl:4');
    expect(procKeys(2).ptl(pteLockName(0))).toBe('{p:2}:ptl:0');
    expect(procKeys(2).ptl(PAGE_TABLE_LOCK)).toBe('{p:2}:ptl:mm');
  });
});

describe('docs/redis.md', () => {
  it('lists every script with its models line, keys and reply', () => {
    const doc = redisDoc();
    for (const [name, d] of Object.entries(SCRIPTS) as Array<[string, ScriptDecl]>) {
      expect(doc).toContain(`### ${name}\n`);
      expect(doc).toContain(`Models: ${d.models}.`);
    }
    expect(doc).toContain('| 1 | `pages` | integer |');
    expect(doc).toContain('| 4.. | `pages` |');
  });
});
