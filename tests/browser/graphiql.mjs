// A check by hand of the GraphiQL page in Debian's chromium (same driver as the
// portal's test, ./browser.mjs):
//   escr serve --listen 127.0.0.1:4617 &
//   node tests/browser/graphiql.mjs http://127.0.0.1:4617/graphql "$(escr token --role team_manager --purpose care_management)" shot.png
// It prints the requests the page made (only this gateway), the docs pane after the
// token is pasted (the schema loaded), the console, and writes a screenshot.
import { openPage } from './browser.mjs';

const [, , pageUrl, token, shot] = process.argv;
const { browser, page, requests, console: messages } = await openPage();
try {
  await page.goto(pageUrl);
  await page.waitForSelector('.graphiql-container');
  console.log('container: true');
  const set = await page.evaluate((t) => {
    const editors = [...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror);
    const headers = editors.find((e) => e.getValue().includes('Authorization'));
    if (!headers) return `no headers editor: ${editors.length}`;
    headers.setValue(JSON.stringify({ Authorization: `Bearer ${t}`, 'X-Purpose-Of-Use': 'care_management' }, null, 2));
    return 'set';
  }, token);
  console.log('headers:', set);
  await page.waitForTimeout(3000);
  await page.click('[aria-label="Show Documentation Explorer"]').catch(() => {});
  await page.waitForTimeout(1500);
  const docs = await page.evaluate(() => document.querySelector('.graphiql-doc-explorer')?.innerText ?? 'none');
  console.log('docs after token:', JSON.stringify(docs.slice(0, 200)));
  console.log('requests:', [...new Set(requests)].join(' '));
  console.log('console:', messages.join('\n'));
  if (shot) await page.screenshot({ path: shot });
} finally {
  await browser.close();
}
