/**
 * Debian's Chromium (the `chromium` package; scripts/ensure-deps.sh installs it) driven by
 * playwright-core, headless, with the flags this machine's closed network needs.
 *
 * playwright-core is loaded when a browser is launched, not when @mmlab/testing is imported:
 * every integration file imports this library, one (the dashboard's) launches a browser, and
 * loading playwright-core was a third of the import's CPU (~0.5 CPU-s per file).
 */
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `no ${CHROMIUM}: ./scripts/ensure-deps.sh --for test installs the chromium package`,
    );
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}
