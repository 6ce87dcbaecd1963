/**
 * Writes the `authorization` block of the compose and Kubernetes labs' nats-server configs from
 * the permissions libs/protocol declares (permissions.ts: DEPLOYED_IDENTITIES), so that the
 * deployed users cannot drift from the subjects. `--check` fails when a file is out of date.
 *
 *   node dist/libs/protocol/src/gen-nats-conf.js [--check] deploy/nats/nats.conf deploy/k8s/base/nats.yaml
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { DEPLOYED_IDENTITIES, passwordVar, renderNatsUsers } from './permissions';

/** text with its `authorization { … }` block (at any indentation) rendered anew. */
export function withAuthorization(text: string): string {
  const m = /^([ \t]*)authorization \{\n[\s\S]*?\n\1\}$/m.exec(text);
  if (!m) throw new Error('no authorization { … } block');
  const ind = m[1];
  const users = renderNatsUsers(DEPLOYED_IDENTITIES, (who) => `$${passwordVar(who)}`);
  const block = [
    `${ind}authorization {`,
    `${ind}  # generated from libs/protocol/src/permissions.ts (npm run build; gen-nats-conf.js)`,
    `${ind}  users = [`,
    ...users.map((u) => `${ind}    ${u}`),
    `${ind}  ]`,
    `${ind}}`,
  ].join('\n');
  return text.slice(0, m.index) + block + text.slice(m.index + m[0].length);
}

if (require.main === module) {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  let stale = 0;
  for (const file of args.filter((a) => a !== '--check')) {
    const text = readFileSync(file, 'utf8');
    const next = withAuthorization(text);
    if (next === text) continue;
    if (check) {
      console.error(`${file} is out of date: node dist/libs/protocol/src/gen-nats-conf.js ${file}`);
      stale++;
    } else {
      writeFileSync(file, next);
      console.log(`wrote ${file}`);
    }
  }
  process.exit(stale ? 1 : 0);
}
