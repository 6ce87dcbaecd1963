/**
 * Writes docs/redis.md from the script declarations (as libs/protocol's gen-doc.ts writes
 * docs/protocol.md): the Redis boundary as enforced, so it cannot drift. `--check` fails when the
 * file is out of date instead of writing it.
 *
 *   node dist/libs/model/src/gen-doc.js [--check] docs/redis.md
 */
import { z } from 'zod';
import { docMain } from '@mmlab/protocol/doc-file';
import { aclDoc } from './acl';
import type { ScriptDecl } from './boundary';
import { MEM } from './keys';
import { MEM_SCRIPTS } from './mem/scripts';
import { MM_SCRIPTS } from './mm/scripts';
import { REPLICA_SCRIPTS } from './replica/scripts';
import { MEM_THP_SCRIPTS } from './mem/thp-scripts';
import { THP_SCRIPTS } from './mm/thp-scripts';
import { HUGETLB_SCRIPTS } from './mm/hugetlb-scripts';
import { KSM_SCRIPTS } from './ksm/scripts';

/** A short type of an argument's schema: its description, else its JSON Schema in brief. */
function typeOf(s: z.ZodType): string {
  if (s.description) return s.description;
  const j = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const brief = (x: Record<string, unknown>): string => {
    if (Array.isArray(x.enum)) return x.enum.map((v) => JSON.stringify(v)).join(' | ');
    if (x.const !== undefined) return JSON.stringify(x.const);
    if (Array.isArray(x.anyOf))
      return (x.anyOf as Array<Record<string, unknown>>).map(brief).join(' | ');
    if (x.type === 'array' && x.items) return `${brief(x.items as Record<string, unknown>)}...`;
    if (x.type === 'object' && x.properties)
      return `(${Object.entries(x.properties as Record<string, Record<string, unknown>>)
        .map(([k, v]) => `${k}: ${brief(v)}`)
        .join(', ')})`;
    return typeof x.type === 'string' ? x.type : 'any';
  };
  return brief(j);
}

const cell = (t: string): string => t.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function room(out: string[], title: string, intro: string, table: Record<string, ScriptDecl>) {
  out.push(`## ${title}`, '', intro, '');
  out.push('| script | models | keys | reply |', '|---|---|---|---|');
  for (const [name, d] of Object.entries(table))
    out.push(
      `| [\`${name}\`](#${name.toLowerCase()}) | ${cell(d.models)} | ${d.varKeys ? `${cell(d.varKeys)} (a list)` : d.keys.join(' ')} | \`${cell(d.reply.description ?? '?')}\` |`,
    );
  out.push('');
  for (const [name, d] of Object.entries(table)) {
    out.push(`### ${name}`, '', d.doc, '', `Models: ${d.models}.`, '');
    out.push(
      `KEYS: ${d.varKeys ? `${d.varKeys} (as many as the caller gives)` : d.keys.map((k, i) => `${i + 1} \`${k}\``).join(', ') || 'none'}`,
      '',
    );
    const args = Object.entries(d.args as Record<string, z.ZodType>);
    if (args.length === 0) out.push('ARGV: none', '');
    else {
      out.push('| ARGV | name | type |', '|---|---|---|');
      args.forEach(([n, s], i) => {
        const spread = s instanceof z.ZodArray;
        out.push(`| ${spread ? `${i + 1}..` : i + 1} | \`${n}\` | ${cell(typeOf(s))} |`);
      });
      out.push('');
    }
    out.push(`Reply: \`${d.reply.description ?? '?'}\``, '');
  }
}

export function redisDoc(): string {
  const out: string[] = [];
  out.push('# mmlab Redis boundary', '');
  out.push('Generated from `libs/model` by `npm run redis:doc`; do not edit by hand.', '');
  out.push(
    "Every state change of the lab is one Lua script, declared once in `libs/model/src/mem/scripts.ts`, `libs/model/src/mm/scripts.ts`, `libs/model/src/replica/scripts.ts`, `libs/model/src/ksm/scripts.ts` or `libs/model/src/mm/hugetlb-scripts.ts` with its KEYS by role, its ARGV by name and type, the schema of its reply and the kernel step it models. `Store.call(script, keysByRole, argsByName)` builds KEYS and ARGV in the order below and parses the reply with its schema; a reply `{'CODE', a, b}` is read as `{ r: 'CODE', a, b }`. An argument shown with `..` is a list spread over the rest of ARGV. Key layout and invariants: `libs/model/src/keys.ts`.",
    '',
  );
  room(
    out,
    'Physical memory ({mem})',
    `Every script here receives all the {mem} keys, in this order: ${Object.entries(MEM)
      .map(([role, k]) => `\`${role}\` (${k})`)
      .join(', ')}.`,
    MEM_SCRIPTS,
  );
  room(
    out,
    'Address spaces ({p:<pid>})',
    'The keys of one address space (`procKeys(pid)`: `mm`, `vma`, `pte`, `pmds`, `semW`, `semR`, `ptl` (one PT lock: `ptl:<pmd>` or `ptl:mm`), `ptlmax`, `fence`, `cpumask`, `inv`, `invown`, `fenced`, `intents`, `intent` (one intent record; the `mm` key when the step has none), `lease` (any lease key of the space)).',
    MM_SCRIPTS,
  );
  room(
    out,
    'mm replicas ({mm})',
    'The keys of the mm replicas (`mmKeys(incarnation)`: `live` (its liveness lease), `invpids` (the pids it may owe ends or operations on); `MM_INDEX.invowners` (the incarnations that have an `invpids` set)).',
    REPLICA_SCRIPTS,
  );
  room(
    out,
    'KSM ({mem}:ksm, and the PTE steps of a merge)',
    "ksmd's scripts (`libs/model/src/ksm/scripts.ts`): a {mem} one receives all the {mem} keys in the order above (`ksm` being the stable tree); an address-space one the keys of one address space.",
    KSM_SCRIPTS,
  );
  room(
    out,
    'hugetlbfs ({mem}:hugetlb and {p:<pid>}:hugetlb)',
    'The hugetlbfs pool and the huge entries (`libs/model/src/mm/hugetlb-scripts.ts`): a pool script receives `meta`, `frames` and `pool` ({mem}:hugetlb); an address-space one the keys of one address space, `huge` being its {p:<pid>}:hugetlb.',
    HUGETLB_SCRIPTS,
  );
  room(
    out,
    'Transparent huge pages ({mem} and {p:<pid>})',
    'The compound pages of {mem} (`libs/model/src/mem/thp-scripts.ts`: all the {mem} keys, as above) and the huge entries of an address space (`libs/model/src/mm/thp-scripts.ts`: `pmdhuge`, and `ptlmm`, its `ptl:mm` = mm->page_table_lock).',
    { ...MEM_THP_SCRIPTS, ...THP_SCRIPTS },
  );
  out.push(...aclDoc());
  return out.join('\n');
}

if (require.main === module)
  docMain(process.argv.slice(2), 'docs/redis.md', redisDoc, 'npm run redis:doc');
