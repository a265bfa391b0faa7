// Drives examples/portal in chromium as a practitioner does: settings, a search, a
// click on the person found; prints what the page shows as JSON (one object per case)
// and writes a screenshot per case. tests/it/portal.rs runs it and checks the result
// against the gateway.
//   node tests/browser/portal.mjs '<spec JSON>'
// A person's first letter is opened (`person.opened`).
// spec: { portal: "http://127.0.0.1:p/", gateway: "http://127.0.0.1:q",
//         cases: [{ token, purpose, search, person, shot }] }
import { openPage } from './browser.mjs';

const spec = JSON.parse(process.argv[2]);
const { browser, page, requests, console: messages } = await openPage();
const seen = [];
try {
  await page.goto(`${spec.portal}?gateway=${encodeURIComponent(spec.gateway)}`);
  for (const c of spec.cases) {
    await page.fill('#token', c.token);
    await page.selectOption('#purpose', c.purpose);
    await page.fill('#query', c.search);
    await page.click('#search button[type=submit]');
    await page.waitForFunction(() => !document.querySelector('#status').textContent.startsWith('Searching'));
    const results = await page.$$eval('#results button', (bs) => bs.map((b) => ({ id: b.dataset.person, text: b.textContent })));
    const status = await page.textContent('#status');
    let person = null;
    if (c.person && results.some((r) => r.id === c.person)) {
      await page.click(`#results button[data-person="${c.person}"]`);
      await page.waitForSelector('#person:not([hidden])');
      person = await page.$eval('#person', (a) => ({
        heading: a.querySelector('h2')?.textContent ?? '',
        ids: a.querySelector('.ids')?.textContent ?? '',
        sections: Object.fromEntries([...a.querySelectorAll('section[data-field]')].map((s) => [s.dataset.field, {
          rows: [...s.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent)),
          withheld: [...s.querySelectorAll('.withheld')].map((w) => ({ code: w.dataset.code, text: w.textContent })),
        }])),
        withheldTop: [...a.querySelectorAll(':scope > .withheld')].map((w) => ({ code: w.dataset.code, text: w.textContent })),
      }));
      // Open the first letter, as a practitioner clicks it.
      const open = await page.$('section[data-field=documents] button.open');
      if (open) {
        await open.click();
        const done = await page.waitForSelector('section[data-field=documents] a.opened, section[data-field=documents] span.error');
        person.opened = await done.evaluate((e) => ({ text: e.textContent, bytes: Number(e.dataset.bytes ?? 0), type: e.dataset.type ?? '' }));
      }
    }
    await page.screenshot({ path: c.shot, fullPage: true });
    seen.push({ search: c.search, status, results, person });
  }
} finally {
  await browser.close();
}
// What the page fetched (the test checks it called only the portal and the gateway).
console.log(JSON.stringify({ seen, requests: [...new Set(requests)], console: messages }));
