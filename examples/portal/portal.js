// The practitioner portal: plain JavaScript, no build step, no library. It calls the
// gateway's GraphQL API across origins (the gateway's `server.cors_origins` names this
// page's origin) with the practitioner's token and purpose of use, and shows what the
// gateway released; what it withheld is shown as withheld, with the code and reason
// of the gateway's error for it. Values are put in the page as text, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);

// A `?gateway=http://host:port` in the page's address sets the gateway.
const fromAddress = new URLSearchParams(location.search).get('gateway');
if (fromAddress) $('gateway').value = fromAddress;

const SEARCH = `query($name: String!) {
  searchPeople(name: $name, first: 20) {
    totalCount
    edges { node { id name { family given } birthDate gender } }
  }
}`;

const BY_NHS_NUMBER = `query($nhs: String!) {
  personByNhsNumber(nhsNumber: $nhs) { id name { family given } birthDate gender }
}`;

const PERSON = `query($id: ID!) {
  person(id: $id) {
    id nhsNumber birthDate gender
    name { family given }
    sourceRecords { source localId }
    allocations { start end worker { name } team { name } }
    alerts { code start narrative }
    services { type deliveryMechanism start end provider }
    episodes { kind category start end }
    documents { date title contentUrl }
    timeline(first: 50) {
      totalCount
      edges { node { kind at summary provenance { source localId } } }
    }
  }
}`;

// The person's sections: the GraphQL field, its heading, and how a row reads.
const SECTIONS = [
  ['allocations', 'Allocated to', ['start', 'end', (a) => a.worker?.name, (a) => a.team?.name], ['from', 'to', 'worker', 'team']],
  ['alerts', 'Alerts', ['code', 'start', 'narrative'], ['alert', 'from', 'detail']],
  ['services', 'Services', ['type', 'deliveryMechanism', 'start', 'end', 'provider'], ['service', 'delivered as', 'from', 'to', 'provider']],
  ['episodes', 'Episodes', ['kind', 'category', 'start', 'end'], ['kind', 'category', 'from', 'to']],
  ['documents', 'Letters and documents', ['date', 'title', (d) => openButton(d)], ['date', 'title', '']],
  ['timeline', 'Timeline', ['at', 'kind', 'summary', (t) => `${t.provenance.source} ${t.provenance.localId}`], ['when', 'kind', 'what', 'from']],
];

const gateway = () => $('gateway').value.replace(/\/$/, '');

// The caller's headers: the token and the purpose of use, on every call.
function callerHeaders() {
  const token = $('token').value.trim();
  if (!token) throw new Error('paste a token first (cargo run -- token ...)');
  return { Authorization: `Bearer ${token}`, 'X-Purpose-Of-Use': $('purpose').value };
}

async function graphql(query, variables) {
  const response = await fetch(`${gateway()}/graphql`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...callerHeaders() },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json().catch(() => null);
  if (!body) throw new Error(`the gateway answered ${response.status}`);
  if (!body.data && body.errors) {
    const e = body.errors[0];
    throw new Error(`${e.extensions?.code ?? response.status}: ${e.message}`);
  }
  return body;
}

// A document's file is fetched with the same token and purpose (a link cannot carry
// them) and opened from memory; the gateway decides and audits as for the record.
function openButton(doc) {
  if (!doc.contentUrl) return '';
  const button = el('button', { type: 'button', class: 'open' }, 'Open');
  button.addEventListener('click', async () => {
    try {
      const response = await fetch(`${gateway()}${doc.contentUrl}`, { headers: callerHeaders() });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error(body?.errors?.[0]?.message ?? `the gateway answered ${response.status}`);
      }
      const file = await response.blob();
      button.replaceWith(el('a', { class: 'opened', href: URL.createObjectURL(file), target: '_blank', 'data-bytes': String(file.size), 'data-type': file.type },
        `Opened (${file.type || 'file'}, ${file.size} bytes)`));
    } catch (e) {
      button.replaceWith(el('span', { class: 'error' }, `Could not open: ${e.message}`));
    }
  });
  return button;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
}

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

// A withheld notice: what was withheld, the gateway's code and its reason.
function withheld(error) {
  return el('div', { class: 'withheld', 'data-code': error.extensions?.code ?? '' },
    'Withheld: ', el('span', { class: 'code' }, error.extensions?.code ?? 'ERROR'), ' — ', error.message);
}

function personLabel(p) {
  const name = p.name ? `${p.name.family ?? ''}, ${p.name.given ?? ''}` : '(name withheld)';
  return `${name} · born ${p.birthDate ?? 'unknown'} · ${p.gender ?? ''}`;
}

async function search(event) {
  event.preventDefault();
  const query = $('query').value.trim();
  $('results').replaceChildren();
  $('person').hidden = true;
  status('Searching…');
  try {
    let people;
    let total;
    // Ten digits (spaces allowed) are an NHS number.
    if (/^[0-9 ]{10,14}$/.test(query) && query.replace(/ /g, '').length === 10) {
      const r = await graphql(BY_NHS_NUMBER, { nhs: query });
      people = r.data.personByNhsNumber ? [r.data.personByNhsNumber] : [];
      total = people.length;
    } else {
      const r = await graphql(SEARCH, { name: query });
      people = r.data.searchPeople.edges.map((e) => e.node);
      total = r.data.searchPeople.totalCount;
    }
    status(`${total} found${total > people.length ? `, the first ${people.length} shown` : ''}`);
    const list = el('ul');
    for (const p of people) {
      const button = el('button', { type: 'button', 'data-person': p.id }, personLabel(p));
      button.addEventListener('click', () => openPerson(p.id));
      list.append(el('li', {}, button));
    }
    $('results').append(list);
  } catch (e) {
    status(e.message, true);
  }
}

function table(rows, columns, headings) {
  const head = el('tr', {}, ...headings.map((h) => el('th', {}, h)));
  const body = rows.map((row) =>
    el('tr', {}, ...columns.map((c) => {
      const value = typeof c === 'function' ? c(row) : row[c];
      return el('td', {}, value instanceof Node ? value : String(value ?? ''));
    })));
  return el('table', {}, el('thead', {}, head), el('tbody', {}, ...body));
}

async function openPerson(id) {
  status('Opening the record…');
  const article = $('person');
  article.replaceChildren();
  try {
    const r = await graphql(PERSON, { id });
    const p = r.data.person;
    const errors = r.errors ?? [];
    // An error's path names what it withheld: person.<section>[.<index>...].
    const errorsOf = (field) => errors.filter((e) => e.path?.[0] === 'person' && e.path?.[1] === field);
    if (!p) {
      article.append(el('h2', {}, 'Record not available'), ...errors.map(withheld));
      article.hidden = false;
      status('');
      return;
    }
    article.append(
      el('h2', {}, personLabel(p)),
      el('p', { class: 'ids' }, `NHS number ${p.nhsNumber ?? '(none)'} · records: `,
        p.sourceRecords.map((s) => `${s.source} ${s.localId}`).join(', ')),
      ...['name', 'nhsNumber', 'birthDate', 'gender'].flatMap((f) => errorsOf(f).map(withheld)),
    );
    for (const [field, heading, columns, headings] of SECTIONS) {
      const section = el('section', { 'data-field': field }, el('h3', {}, heading));
      const value = field === 'timeline' ? p.timeline?.edges.map((e) => e.node) : p[field];
      const problems = errorsOf(field);
      if (value && value.length) section.append(table(value, columns, headings));
      else if (!problems.length) section.append(el('p', { class: 'empty' }, 'None recorded.'));
      section.append(...problems.map(withheld));
      article.append(section);
    }
    article.hidden = false;
    status('');
  } catch (e) {
    status(e.message, true);
  }
}

$('search').addEventListener('submit', search);
