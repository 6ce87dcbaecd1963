/** Run the built `mmlab` CLI (dist/apps/lab, bundled) as a child process, as a user would. */
import { spawn } from 'node:child_process';
import { repoRoot, serviceCommand } from '@mmlab/runner';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** env: the CLI's whole environment (default: this process's). */
export function runMmlab(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CliRun> {
  const root = repoRoot();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [...serviceCommand('lab'), ...args], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
