/**
 * The live dashboard's files (apps/dashboard, built by `npm run build:dashboard` into
 * dist/dashboard): index.html at / and /dashboard, its hashed assets under /assets and
 * /dashboard/assets (the page refers to them relatively, so it works under either prefix).
 * MMLAB_DASHBOARD_DIR overrides where the build is looked for.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import * as path from 'node:path';
import { Controller, Get, NotFoundException, Param, Res } from '@nestjs/common';
import { ApiDoc } from './openapi';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.map': 'application/json',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

/** dist/dashboard above `start` (or MMLAB_DASHBOARD_DIR), if it holds a build. */
export function findDashboardDir(
  env: NodeJS.ProcessEnv = process.env,
  start: string = __dirname,
): string | null {
  const built = (d: string) => existsSync(path.join(d, 'index.html'));
  if (env.MMLAB_DASHBOARD_DIR)
    return built(env.MMLAB_DASHBOARD_DIR) ? env.MMLAB_DASHBOARD_DIR : null;
  for (let d = path.resolve(start); ; d = path.dirname(d)) {
    // from the sources (apps/observer/src) or from the build (dist/apps/observer/src)
    const candidates = [path.join(d, 'dist', 'dashboard')];
    if (path.basename(d) === 'dist') candidates.unshift(path.join(d, 'dashboard'));
    for (const c of candidates) if (built(c)) return c;
    if (path.dirname(d) === d) return null;
  }
}

@Controller()
export class DashboardController {
  private dir: string | null = null;

  private root(): string {
    this.dir ??= findDashboardDir();
    if (this.dir === null)
      throw new NotFoundException({
        code: 'ENOENT',
        message: 'the dashboard is not built: run npm run build:dashboard',
        definite: true,
      });
    return this.dir;
  }

  private async send(res: ServerResponse, file: string, cache: string): Promise<void> {
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      throw new NotFoundException({ code: 'ENOENT', message: 'no such file', definite: true });
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'Content-Length': body.length,
      'Cache-Control': cache,
      'X-Content-Type-Options': 'nosniff',
    });
    res.end(body);
  }

  @Get()
  @ApiDoc.dashboard()
  index(@Res() res: ServerResponse): Promise<void> {
    return this.send(res, path.join(this.root(), 'index.html'), 'no-cache');
  }

  @Get('dashboard')
  @ApiDoc.dashboard()
  dashboard(@Res() res: ServerResponse): Promise<void> {
    return this.index(res);
  }

  @Get(['assets/:file', 'dashboard/assets/:file'])
  @ApiDoc.asset()
  asset(@Param('file') file: string, @Res() res: ServerResponse): Promise<void> {
    if (!/^[\w-]+(\.[\w-]+)+$/.test(file))
      throw new NotFoundException({ code: 'ENOENT', message: 'no such file', definite: true });
    // hashed names: a new build is a new name
    return this.send(
      res,
      path.join(this.root(), 'assets', file),
      'public, max-age=31536000, immutable',
    );
  }
}
