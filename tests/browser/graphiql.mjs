// GraphiQL in Debian's chromium (same driver as the portal's test, ./browser.mjs), with
// every request that leaves the gateway's origin refused, as on a network without
// internet: the page must render from the binary's own assets and, once a token is
// pasted into its headers, load the schema by itself.
//   node tests/browser/graphiql.mjs http://127.0.0.1:4617/graphql "$(escr token --role team_manager --purpose care_management)" [shot.png]
// Prints one JSON object: whether the page rendered, the headers set, the docs pane's
// text after the token, every request made and refused, the console. Run by
// tests/it/portal.rs (`graphiql_works_offline_and_loads_the_schema_after_a_token`).
import { openPage } from './browser.mjs';

const [, , pageUrl, token, shot] = process.argv;
const origin = new URL(pageUrl).origin;
const { browser, page, requests, console: messages } = await openPage();
const refused = [];
const result = { rendered: false, headers: null, docs: '', requests, refused, console: messages };
try {
  await page.route(
    (url) => url.origin !== origin,
    (route) => {
      refused.push(route.request().url());
      return route.abort('internetdisconnected');
    },
  );
  await page.goto(pageUrl);
  await page.waitForSelector('.graphiql-container', { timeout: 15000 });
  result.rendered = true;
  result.headers = await page.evaluate((t) => {
    const editors = [...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror);
    const headers = editors.find((e) => e.getValue().includes('Authorization'));
    if (!headers) return `no headers editor among ${editors.length}`;
    headers.setValue(JSON.stringify({ Authorization: `Bearer ${t}`, 'X-Purpose-Of-Use': 'care_management' }, null, 2));
    return 'set';
  }, token);
  await page.click('[aria-label="Show Documentation Explorer"]').catch(() => {});
  // The schema is fetched again after the headers change; wait for the docs to show it.
  await page
    .waitForFunction(() => (document.querySelector('.graphiql-doc-explorer')?.innerText ?? '').includes('Query'), null, { timeout: 15000 })
    .catch(() => {});
  result.docs = await page.evaluate(() => document.querySelector('.graphiql-doc-explorer')?.innerText ?? '');
  if (shot) await page.screenshot({ path: shot });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
