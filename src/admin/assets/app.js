// The branchgate dashboard: renders the JSON views of the admin API and
// follows three Server-Sent Event streams (events, requests, container logs).
// Everything from the API reaches the page as text nodes or attribute values,
// never as markup, so no name or message can inject HTML.
'use strict';

const MAX_EVENTS = 200;
const MAX_REQUESTS = 200;
const MAX_LOG_LINES = 2000;
/** Event kinds after which the routes, branches and certificates may have changed. */
const REFRESH_KINDS = new Set(['container', 'publish', 'acme']);
const ANSI_COLOURS = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];
/**
 * One terminal escape (or stray control character) per match: CSI with its
 * parameters (group 1) and final byte (group 2); OSC/DCS/APC strings up to
 * their terminator; any other ESC sequence; C0 controls other than tab.
 */
const ESCAPES =
  /\x1b\[([0-?]*)[ -\/]*([@-~])|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -\/]*[0-~]?|[\x00-\x08\x0a-\x1f\x7f]/g;

// ---------- DOM and time helpers ----------

const $ = (selector) => document.querySelector(selector);

/** Builds an element; children may be nodes, strings, numbers or (nested) arrays; null and false are skipped. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'data') Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Shows `text` in a state badge; `state` picks its colour. */
function setState(selector, state, text) {
  const node = $(selector);
  node.dataset.state = state;
  node.textContent = text;
}

function debounce(fn, ms) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

const pad = (n) => String(n).padStart(2, '0');

function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A duration in seconds, in its largest whole unit: "42s", "5m", "3h", "12d". */
function span(seconds) {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

const ago = (ms) => `${span(Math.max(0, Math.round((Date.now() - ms) / 1000)))} ago`;

function relative(ms) {
  const seconds = Math.round((ms - Date.now()) / 1000);
  return seconds > 0 ? `in ${span(seconds)}` : ago(ms);
}

/** "3s ago", kept current by `refreshAgo`; "never" for null. */
const agoNode = (ms) => (ms == null ? 'never' : el('span', { class: 'ago', data: { ms } }, ago(ms)));

function refreshAgo() {
  for (const node of document.querySelectorAll('.ago')) node.textContent = ago(Number(node.dataset.ms));
}

function date(unixSeconds) {
  if (unixSeconds == null) return '—';
  return `${new Date(unixSeconds * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

// ---------- fetching ----------

async function getJson(url) {
  const response = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (response.status === 401) {
    location.assign('/login');
    throw new Error('signed out');
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** An EventSource refused outright hides the HTTP status; a plain fetch reveals a lost session (and redirects). */
function checkSession() {
  getJson('/api/warnings').catch(() => {});
}

// ---------- small renderers ----------

function table(headers, rows, className) {
  return el('div', { class: 'scroll' },
    el('table', { class: className },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
}

function healthDot(healthy, label) {
  const text = `${label ? `${label}: ` : ''}${healthy ? 'healthy' : 'unhealthy'}`;
  return el('span', { class: `dot ${healthy ? 'up' : 'down'}`, title: text, role: 'img', 'aria-label': text });
}

function logsButton(container) {
  if (!container) return null;
  return el('button', { type: 'button', class: 'logs-btn', data: { container }, title: `logs of ${container}` }, 'logs');
}

const tag = (text) => el('span', { class: 'tag' }, text);

// ---------- the views ----------

/** Container names per view, offered as suggestions in the logs panel. */
const knownContainers = { branches: [], routes: [] };

function rememberContainers(view, names) {
  knownContainers[view] = names;
  const all = [...new Set([...knownContainers.branches, ...knownContainers.routes])].sort();
  $('#logs-containers').replaceChildren(...all.map((name) => el('option', { value: name })));
}

function renderMatrix(data) {
  const sides = [...data.frontends, ...data.backends];
  rememberContainers('branches', sides.flatMap((side) => side.containers));
  if (!data.domain) return el('p', { class: 'empty' }, 'no --branch-domain set');
  if (sides.length === 0) return el('p', { class: 'empty' }, 'no branch containers');

  const header = (side) => [
    el('span', { class: 'slug', title: side.branch }, side.slug), ' ',
    healthDot(side.healthy), ' ', logsButton(side.containers[0]),
  ];
  const rows = data.frontends.map((fe) =>
    el('tr', {},
      el('th', { scope: 'row' }, header(fe)),
      data.backends.map((be) => el('td', {}, envCell(data, fe, be)))));
  return table([el('span', { class: 'muted' }, 'frontend \\ backend'), ...data.backends.map(header)], rows, 'matrix');
}

function envCell(data, fe, be) {
  const name = `${fe.slug}.${be.slug}`;
  const scheme = data.url_scheme === 'https' ? 'https' : 'http';
  const port = data.url_port == null ? '' : `:${data.url_port}`;
  const times = [fe.last_request_ms, be.last_request_ms].filter((ms) => ms != null);
  return [
    el('a', { class: 'env', href: `${scheme}://${name}.${data.domain}${port}/`, target: '_blank', rel: 'noopener' }, name),
    el('span', { class: 'sides' }, healthDot(fe.healthy, `frontend ${fe.slug}`), healthDot(be.healthy, `backend ${be.slug}`)),
    el('span', { class: 'last' }, 'last request: ', agoNode(times.length ? Math.max(...times) : null)),
  ];
}

function renderRoutes(data) {
  const containers = [];
  const rows = [];
  for (const route of data.routes) {
    for (const path of route.paths) {
      const upstreams = path.upstreams ?? [];
      containers.push(...upstreams.map((u) => u.container).filter(Boolean));
      rows.push(el('tr', {},
        el('td', { class: 'host' }, route.host),
        el('td', { class: 'path' }, path.path, path.dest ? ` → ${path.dest}` : null, routeTags(path)),
        el('td', {}, path.source ?? '—'),
        el('td', {}, upstreamList(upstreams))));
    }
  }
  rememberContainers('routes', containers);
  return [
    el('p', { class: 'meta' }, `generation ${data.generation} · ${data.routes.length} ${data.routes.length === 1 ? 'host' : 'hosts'}`),
    rows.length ? table(['host', 'path', 'source', 'upstreams'], rows, 'routes') : el('p', { class: 'empty' }, 'no routes'),
  ];
}

function routeTags(path) {
  const acme = path.acme_hosts ?? [];
  return [
    path.https_method && tag(`https: ${path.https_method}`),
    path.cert_name && tag(`cert: ${path.cert_name}`),
    acme.length > 0 && tag(`acme: ${acme.join(', ')}`),
    path.cors && tag('cors'),
    path.auth_basic && tag(`basic auth: ${path.auth_basic}`),
    path.allow && tag(`allow: ${path.allow}`),
    path.max_body != null && tag(`max body: ${path.max_body} B`),
    path.response_timeout_ms != null && tag(`response timeout: ${path.response_timeout_ms} ms`),
  ];
}

function upstreamList(upstreams) {
  if (upstreams.length === 0) return el('span', { class: 'muted' }, 'no upstreams');
  return el('ul', { class: 'upstreams' }, upstreams.map((u) =>
    el('li', {},
      healthDot(u.healthy), ' ',
      el('span', { class: 'name' }, u.container ?? u.addr), ' ',
      u.container ? el('span', { class: 'addr' }, u.addr) : null, ' ',
      el('span', { class: 'inflight', title: 'requests in flight' }, `${u.in_flight} in flight`), ' ',
      logsButton(u.container))));
}

function renderWarnings(data) {
  if (data.warnings.length === 0) return el('p', { class: 'empty' }, 'no warnings');
  return el('ul', { class: 'warnings' }, data.warnings.map((w) =>
    el('li', { class: `warning sev-${w.severity}`, title: w.kind },
      el('span', { class: 'severity' }, w.severity), ' ',
      el('span', { class: 'source' }, w.source), ' ',
      el('code', { class: 'setting' }, `${w.key}=${w.value ?? ''}`), ' ',
      el('span', { class: 'message' }, w.message))));
}

function renderCertificates(data) {
  const now = Date.now() / 1000;
  const rows = [
    ...data.files.map((f) => certRow({
      names: f.names, source: el('span', { title: f.file }, 'file'), issuer: f.issuer,
      notAfter: f.not_after, status: f.not_after < now ? 'expired' : 'valid', error: null, next: null,
    })),
    ...Object.entries(data.acme ?? {}).map(([id, c]) => certRow({
      names: c.names, source: el('span', { title: id }, 'ACME'), issuer: c.issuer,
      notAfter: c.not_after, status: c.state, error: c.last_error, next: c.next_attempt ?? c.renew_at,
    })),
  ];
  if (rows.length === 0) return el('p', { class: 'empty' }, 'no certificates');
  const headers = ['names', 'source', 'issuer', 'not after', 'status', 'last error', 'next renewal'];
  return table(headers, rows, 'certificates');
}

/** A not-after cell's classes: `expired`, or `soon` within two weeks. */
function expiryClass(notAfter) {
  const left = notAfter * 1000 - Date.now();
  if (notAfter == null || left > 14 * 86400e3) return 'date';
  return left < 0 ? 'date expired' : 'date soon';
}

function certRow({ names, source, issuer, notAfter, status, error, next }) {
  return el('tr', {},
    el('td', { class: 'names' }, names.map((name) => el('div', {}, name))),
    el('td', {}, source),
    el('td', { class: 'issuer' }, issuer ?? '—'),
    el('td', { class: expiryClass(notAfter), title: notAfter == null ? null : relative(notAfter * 1000) }, date(notAfter)),
    el('td', { class: `status state-${status}` }, status),
    el('td', { class: 'error' }, error ?? ''),
    el('td', { class: 'date', title: next == null ? null : relative(next * 1000) }, date(next)));
}

const VIEWS = [
  { id: 'matrix', url: '/api/branches', render: renderMatrix },
  { id: 'routes', url: '/api/routes', render: renderRoutes },
  { id: 'warnings', url: '/api/warnings', render: renderWarnings },
  { id: 'certificates', url: '/api/certificates', render: renderCertificates },
];
/** The latest request per view: an older response that arrives late is dropped. */
const viewTickets = {};

async function refreshView({ id, url, render }) {
  const ticket = (viewTickets[id] = (viewTickets[id] ?? 0) + 1);
  let content;
  try {
    const data = await getJson(url);
    if (ticket !== viewTickets[id]) return;
    content = render(data);
  } catch (err) {
    if (ticket !== viewTickets[id]) return;
    content = el('p', { class: 'error' }, `could not load ${url}: ${err.message}`);
  }
  $(`#${id}-body`).replaceChildren(...[content].flat());
}

const refreshViews = () => VIEWS.forEach(refreshView);
const refreshSoon = debounce(refreshViews, 200);

// ---------- events feed ----------

/** The newest event shown; a reconnect replays events already shown, which are skipped. */
const lastEvent = { seq: 0, atMs: 0 };

function openEvents() {
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => {
    // Events may have been missed while away; the views catch up.
    if ($('#status').dataset.state === 'reconnecting') refreshSoon();
    setState('#status', 'live', 'live');
  });
  source.addEventListener('message', (msg) => {
    const event = JSON.parse(msg.data);
    if (addEvent(event) && REFRESH_KINDS.has(event.kind)) refreshSoon();
  });
  source.addEventListener('error', () => {
    setState('#status', 'reconnecting', 'reconnecting…');
    if (source.readyState === EventSource.CLOSED) {
      // Refused (not merely dropped): the browser will not retry by itself.
      checkSession();
      setTimeout(openEvents, 5000);
    }
  });
}

function addEvent(event) {
  // A restarted server counts from 1 again, but its events are newer.
  const fresh = event.seq > lastEvent.seq || event.at_ms > lastEvent.atMs;
  if (!fresh) return false;
  lastEvent.seq = event.seq;
  lastEvent.atMs = Math.max(lastEvent.atMs, event.at_ms);

  const list = $('#events-list');
  list.prepend(el('li', { class: `event kind-${event.kind}`, title: event.data == null ? null : JSON.stringify(event.data) },
    el('time', { datetime: new Date(event.at_ms).toISOString() }, clock(event.at_ms)), ' ',
    el('span', { class: 'kind' }, event.kind), ' ',
    el('span', { class: 'message' }, event.message)));
  while (list.childElementCount > MAX_EVENTS) list.lastElementChild.remove();
  return true;
}

// ---------- requests feed ----------

let requestSource = null;

function openRequests() {
  requestSource?.close();
  const host = $('#requests-host').value.trim();
  const label = host || 'all hosts';
  $('#requests-list').replaceChildren();
  const source = new EventSource(`/api/requests${host ? `?host=${encodeURIComponent(host)}` : ''}`);
  requestSource = source;
  setState('#requests-state', 'connecting', `connecting: ${label}`);
  source.addEventListener('open', () => setState('#requests-state', 'live', `live: ${label}`));
  source.addEventListener('message', (msg) => addRequest(JSON.parse(msg.data)));
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      setState('#requests-state', 'stopped', 'stopped');
      checkSession();
    } else {
      setState('#requests-state', 'reconnecting', 'reconnecting…');
    }
  });
}

function addRequest(req) {
  const statusClass = req.status >= 100 ? `s${Math.floor(req.status / 100)}xx` : 's-err';
  const row = el('tr', { class: req.complete ? 'req' : 'req incomplete', tabindex: 0, 'aria-expanded': 'false' },
    el('td', { class: 'time' }, clock(req.at_ms)),
    el('td', { class: 'method' }, req.method),
    el('td', { class: 'host' }, req.host),
    el('td', { class: 'path', title: req.path }, req.path),
    el('td', { class: `status ${statusClass}` }, req.status ?? '—'),
    el('td', { class: 'ms' }, req.duration_ms.toFixed(1)),
    el('td', { class: 'upstream' }, req.upstream ?? '—'));
  const details = el('tr', { class: 'req-details', hidden: true }, el('td', { colspan: 7 }, requestDetails(req)));

  const list = $('#requests-list');
  list.prepend(row, details);
  while (list.childElementCount > MAX_REQUESTS * 2) list.lastElementChild.remove();
}

function requestDetails(req) {
  const facts = [
    `client ${req.client}`, `route ${req.route ?? '—'}`, `upstream ${req.upstream ?? '—'}`,
    `${req.bytes} bytes`, req.complete ? null : 'incomplete',
  ];
  return [
    el('p', { class: 'meta' }, facts.filter(Boolean).join(' · ')),
    el('ul', { class: 'headers' }, (req.headers ?? []).map(([name, value]) =>
      el('li', {}, el('span', { class: 'name' }, name), ': ', value))),
  ];
}

function toggleRequest(row) {
  const details = row.nextElementSibling;
  details.hidden = !details.hidden;
  row.setAttribute('aria-expanded', String(!details.hidden));
}

// ---------- container logs ----------

const logs = { source: null, pending: [], frame: 0 };

function openLogs() {
  const name = $('#logs-container').value.trim();
  if (!name) return;
  closeLogs();
  clearLogs();
  const tail = Math.max(0, Number.parseInt($('#logs-tail').value, 10) || 0);
  const source = new EventSource(`/api/containers/${encodeURIComponent(name)}/logs?follow=1&tail=${tail}`);
  logs.source = source;
  setState('#logs-state', 'connecting', `opening ${name}…`);

  source.addEventListener('open', () => {
    // After a reconnect the server sends the tail again: start over rather than repeat it.
    clearLogs();
    setState('#logs-state', 'live', `following ${name}`);
  });
  source.addEventListener('message', (msg) => {
    const { stream, line } = JSON.parse(msg.data);
    queueLogLine(stream === 'stderr' ? 'stderr' : 'stdout', ansiNodes(line ?? ''));
  });
  source.addEventListener('end', (msg) => finishLogs('end', JSON.parse(msg.data).message));
  // Both the server's named `error` event (with data) and a transport error arrive here.
  source.addEventListener('error', (msg) => {
    if (typeof msg.data === 'string') {
      finishLogs('error', JSON.parse(msg.data).message);
    } else if (source.readyState === EventSource.CLOSED) {
      finishLogs('error', `cannot follow the logs of ${name}`);
      checkSession();
    } else {
      setState('#logs-state', 'reconnecting', 'reconnecting…');
    }
  });
}

/** Ends the current stream for good, with a last line saying why. */
function finishLogs(kind, message) {
  logs.source.close();
  logs.source = null;
  queueLogLine(kind, [message]);
  setState('#logs-state', kind === 'end' ? 'stopped' : 'failed', kind === 'end' ? 'ended' : 'failed');
}

function closeLogs() {
  if (!logs.source) return;
  logs.source.close();
  logs.source = null;
  setState('#logs-state', 'stopped', 'closed');
}

function clearLogs() {
  logs.pending.length = 0;
  $('#logs-output').replaceChildren();
}

function queueLogLine(kind, nodes) {
  logs.pending.push(el('div', { class: `line ${kind}` }, nodes));
  if (logs.pending.length > MAX_LOG_LINES) logs.pending.shift();
  logs.frame ||= requestAnimationFrame(flushLogs);
}

/** Appends the queued lines once per frame: a chatty container costs one layout per frame, not one per line. */
function flushLogs() {
  logs.frame = 0;
  const output = $('#logs-output');
  const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
  output.append(...logs.pending.splice(0));
  while (output.childElementCount > MAX_LOG_LINES) output.firstElementChild.remove();
  if (atBottom) output.scrollTop = output.scrollHeight;
}

/** A log line as text nodes and coloured spans: SGR colours and bold are kept, every other escape is dropped. */
function ansiNodes(text) {
  const nodes = [];
  const sgr = { fg: null, bold: false };
  const push = (piece) => {
    if (!piece) return;
    const classes = [sgr.fg && `ansi-${sgr.fg}`, sgr.bold && 'ansi-bold'].filter(Boolean);
    nodes.push(classes.length ? el('span', { class: classes.join(' ') }, piece) : piece);
  };
  let last = 0;
  for (const match of text.matchAll(ESCAPES)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] === 'm' && /^[\d;:]*$/.test(match[1])) applySgr(sgr, match[1]);
  }
  push(text.slice(last));
  return nodes;
}

function applySgr(sgr, params) {
  const parts = params.split(';');
  for (let i = 0; i < parts.length; i++) {
    const code = Number.parseInt(parts[i], 10) || 0;
    if (code === 0) Object.assign(sgr, { fg: null, bold: false });
    else if (code === 1) sgr.bold = true;
    else if (code === 22) sgr.bold = false;
    else if (code >= 30 && code <= 37) sgr.fg = ANSI_COLOURS[code - 30];
    else if (code >= 90 && code <= 97) sgr.fg = `bright-${ANSI_COLOURS[code - 90]}`;
    else if (code === 39) sgr.fg = null;
    else if ((code === 38 || code === 48) && !parts[i].includes(':')) {
      // 256-colour and RGB forms: skip their arguments so they are not read as codes.
      i += parts[i + 1] === '5' ? 2 : parts[i + 1] === '2' ? 4 : 0;
    }
  }
}

// ---------- start ----------

function showLogsOf(button) {
  $('#logs-container').value = button.dataset.container;
  openLogs();
  $('#logs').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function start() {
  document.addEventListener('click', (e) => {
    const button = e.target.closest('.logs-btn');
    if (button) showLogsOf(button);
  });
  $('#requests-form').addEventListener('submit', (e) => {
    e.preventDefault();
    openRequests();
  });
  $('#logs-form').addEventListener('submit', (e) => {
    e.preventDefault();
    openLogs();
  });
  $('#logs-close').addEventListener('click', closeLogs);

  const requests = $('#requests-list');
  requests.addEventListener('click', (e) => {
    const row = e.target.closest('tr.req');
    if (row) toggleRequest(row);
  });
  requests.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target.matches('tr.req')) {
      e.preventDefault();
      toggleRequest(e.target);
    }
  });

  refreshViews();
  openEvents();
  openRequests();
  setInterval(refreshAgo, 1000);
  // Events change what is deployed; this keeps the live numbers (last
  // request, in-flight counts, health) current between them.
  setInterval(refreshViews, 5000);
}

start();
