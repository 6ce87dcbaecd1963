/**
 * The live dashboard's files (apps/dashboard, built by `npm run build:dashboard` into
 * dist/dashboard): index.html at / and /dashboard, its hashed assets under /assets and
 * /dashboard/assets (the page refers to them relatively, so it works under either prefix).
 * MMLAB_DASHBOARD_DIR overrides where the build is looked for.
 *
 * The page carries the lab's token (`<meta name="mmlab-token">`, MMLAB_LAB_TOKEN), so that the
 * dashboard can make the lab's mutating requests; a page of another origin cannot read it (no
 * CORS), and index.html is never cached.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import * as path from 'node:path';
import { Controller, Get, Inject, NotFoundException, Param, Res } from '@nestjs/common';
import { OBSERVER_SETTINGS, type ObserverSettings } from './observer.config';
import { ApiDoc } from './openapi';

/** The meta tag the dashboard reads its token from (apps/dashboard/src/lab-token.tsx). */
export const LAB_TOKEN_META = 'mmlab-token';

const ATTR_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '"': '&quot;',
  '<': '&lt;',
  '>': '&gt;',
  "'": '&#39;',
};

/** index.html with the lab's token in a meta tag at the end of its head (none: unchanged). */
export function withLabToken(html: string, token: string | undefined): string {
  if (!token) return html;
  const value = token.replace(/[&"<>']/g, (c) => ATTR_ESCAPES[c]);
  const meta = `<meta name="${LAB_TOKEN_META}" content="${value}" />`;
  if (html.includes('</head>')) return html.replace('</head>', `${meta}</head>`);
  // no head written out: right after the doctype (before it, the page would be in quirks mode)
  const doctype = /^\s*<!doctype[^>]*>/i.exec(html);
  return doctype ? doctype[0] + meta + html.slice(doctype[0].length) : meta + html;
}

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

  constructor(@Inject(OBSERVER_SETTINGS) private readonly settings: ObserverSettings) {}

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

  private async send(
    res: ServerResponse,
    file: string,
    cache: string,
    edit?: (html: string) => string,
  ): Promise<void> {
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      throw new NotFoundException({ code: 'ENOENT', message: 'no such file', definite: true });
    }
    if (edit) body = Buffer.from(edit(body.toString('utf8')), 'utf8');
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
    // the page holds the lab's token: never stored by a cache
    return this.send(res, path.join(this.root(), 'index.html'), 'no-store', (html) =>
      withLabToken(html, this.settings.labToken),
    );
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
