// A check by hand of the GraphiQL page in a real browser (Debian's chromium):
//   escr serve --listen 127.0.0.1:4617 &
//   chromium --headless=new --no-sandbox --remote-debugging-port=9222 --user-data-dir=/tmp/gq about:blank &
//   node --experimental-websocket scripts/check-graphiql.mjs http://127.0.0.1:4617/graphql "$(escr token --role team_manager --purpose care_management)" shot.png
// It prints the requests the page made (only this gateway), the docs pane after the
// token is pasted (the schema loaded), and writes a screenshot.
const [,, pageUrl, token, shot] = process.argv;
const list = await (await fetch('http://127.0.0.1:9222/json/list')).json();
const target = list.find(t => t.type === 'page');
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise(r => ws.addEventListener('open', r));
let id = 0; const pending = new Map(); const events = [];
ws.addEventListener('message', m => { const d = JSON.parse(m.data); if (d.id && pending.has(d.id)) { pending.get(d.id)(d); pending.delete(d.id); } else events.push(d); });
const send = (method, params = {}) => new Promise(r => { const i = ++id; pending.set(i, r); ws.send(JSON.stringify({ id: i, method, params })); });
const evalJs = async (expr) => (await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true })).result?.result?.value;
const sleep = ms => new Promise(r => setTimeout(r, ms));
await send('Network.enable'); await send('Page.enable'); await send('Log.enable'); await send('Runtime.enable');
await send('Page.navigate', { url: pageUrl });
await sleep(4000);
console.log('container:', await evalJs("!!document.querySelector('.graphiql-container')"));
console.log('before token, docs pane text:', JSON.stringify((await evalJs("(document.querySelector('.graphiql-doc-explorer, .graphiql-sidebar')||{}).innerText||''"))?.slice(0,80)));
const set = await evalJs(`(() => { const eds = [...document.querySelectorAll('.CodeMirror')].map(e => e.CodeMirror); const h = eds.find(e => e.getValue().includes('Authorization')); if (!h) return 'no headers editor: ' + eds.length; h.setValue(JSON.stringify({Authorization: 'Bearer ${token}', 'X-Purpose-Of-Use': 'care_management'}, null, 2)); return 'set'; })()`);
console.log('headers:', set);
await sleep(3000);
await evalJs("(() => { const b = document.querySelector('[aria-label=\"Show Documentation Explorer\"]'); if (b) b.click(); return !!b; })()");
await sleep(1500);
console.log('docs after token:', JSON.stringify((await evalJs("(document.querySelector('.graphiql-doc-explorer')||{}).innerText||'none'"))?.slice(0,200)));
const urls = events.filter(e => e.method === 'Network.requestWillBeSent').map(e => e.params.request.url);
console.log('requests:', [...new Set(urls)].join(' '));
const errs = events.filter(e => e.method === 'Log.entryAdded' || e.method === 'Runtime.exceptionThrown').map(e => JSON.stringify(e.params).slice(0,300));
console.log('console:', errs.join('\n'));
const png = await send('Page.captureScreenshot', { format: 'png' });
(await import('fs')).writeFileSync(shot, Buffer.from(png.result.data, 'base64'));
ws.close();
