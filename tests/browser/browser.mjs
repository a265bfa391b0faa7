// Debian's chromium (/usr/bin/chromium, from apt: scripts/test-servers.sh installs it),
// driven by playwright-core: no browser of playwright's own is downloaded. Shared by
// the checks of the gateway's pages (graphiql.mjs, portal.mjs).
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.ESCR_CHROMIUM || '/usr/bin/chromium';

// A headless browser and a page that records every request it makes and every console
// message and page error (a check prints them when it fails).
export async function openPage() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container has no user namespaces for chromium's sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const requests = [];
  const console = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
  return { browser, page, requests, console };
}
