// Runner Management: a client of the control plane's public admin API
// (/api/v1, docs/protocol.md). No framework and no build step. Every piece
// of data reaches the document as text (textContent, text nodes, attribute
// values), never as markup. The admin token lives in sessionStorage only:
// it is sent in the Authorization header and never put in a URL.
'use strict';

const TOKEN_KEY = 'rdrunner.adminToken';
const API = '/api/v1';
const REFRESH_MS = 2000;
const KNOWN_STATUSES = ['new', 'healthy', 'busy', 'unhealthy', 'unknown', 'down'];
const RUN_STATES = ['queued', 'running', 'succeeded', 'failed', 'aborted', 'timedout', 'lost'];

// ---- the document, as text ---------------------------------------------------

/** An element with properties and children; strings become text nodes. */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = String(v);
    else if (k === 'value') value = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  add(node, children);
  if (value !== undefined) node.value = String(value);
  return node;
}

function add(node, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren();
  return add(node, children);
}

const enc = encodeURIComponent;
let nextId = 0;
const uid = (prefix) => `${prefix}-${++nextId}`;

/** A labelled input with an error slot under it; `.input`, `.error`. */
function field(labelText, input, hint) {
  input.id = input.id || uid('f');
  const error = el('p', { class: 'field-error', id: uid('err'), role: 'alert' });
  const described = [error.id];
  let hintNode = null;
  if (hint) {
    hintNode = el('p', { class: 'hint', id: uid('hint') }, hint);
    described.unshift(hintNode.id);
  }
  input.setAttribute('aria-describedby', described.join(' '));
  // An error says what was wrong with the value it was given; a new value
  // takes it away.
  input.addEventListener('input', () => error.textContent && setError(error, ''));
  const wrap = el('div', { class: 'field' }, el('label', { for: input.id }, labelText), input, hintNode, error);
  return { wrap, input, error };
}

function setError(slot, message) {
  slot.textContent = message || '';
  // A field's own error marks its input; a form-wide one marks nothing.
  const own = slot.classList.contains('field-error');
  const input = own && slot.parentElement && slot.parentElement.querySelector('input, textarea, select');
  if (input) {
    if (message) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

function badge(value, kind) {
  const known = kind === 'state' ? RUN_STATES : KNOWN_STATUSES;
  const text = value === undefined || value === null ? 'none' : String(value);
  const cls = known.includes(text) ? text : 'other';
  return el('span', { class: `badge ${kind}-${cls}` }, text);
}

function ago(iso) {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 1) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function timeEl(iso) {
  if (!iso) return el('span', {}, 'never');
  return el('time', { datetime: iso, title: iso }, ago(iso));
}

function seconds(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function uptime(secs) {
  const s = Math.floor(secs);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function table(caption, headers, rows) {
  return el('div', { class: 'table-wrap' },
    el('table', {},
      el('caption', {}, caption),
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
}

// ---- the admin API -----------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ''}` };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `could not reach the control plane (${e.message}); is it running?`);
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!resp.ok) {
    const code = (data && data.error) || `http_${resp.status}`;
    const message = (data && data.message) || text.slice(0, 300) || resp.statusText;
    const err = new ApiError(resp.status, code, message);
    if (resp.status === 401 && token()) signOut(`The control plane refused the admin token: ${message}`);
    throw err;
  }
  return data === null ? text : data;
}

/** "409 taken: message", for an error slot. */
function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 0) return err.message;
  return `${err.status} ${err.code}: ${err.message}`;
}

/** The first `name` in backquotes of an API message, e.g. `projects.ops`. */
function fieldOf(err) {
  const m = /`([^`]+)`/.exec((err && err.message) || '');
  return m ? m[1] : null;
}

// ---- views and routing -------------------------------------------------------

const main = () => document.getElementById('main');
let current = null;
let flash = null;

/** One view's life: its timers stop when the user goes elsewhere. */
function newView() {
  const view = {
    alive: true,
    timers: new Set(),
    stop() {
      view.alive = false;
      for (const t of view.timers) clearTimeout(t);
    },
    /** Runs `fn` now and again `ms` after each run ends, while alive. */
    every(fn, ms) {
      const run = async () => {
        if (!view.alive) return;
        try {
          await fn();
        } catch (_) {
          // The view shows its own errors.
        }
        if (view.alive) view.timers.add(setTimeout(run, ms));
      };
      run();
    },
    later(fn, ms) {
      view.timers.add(setTimeout(() => view.alive && fn(), ms));
    },
  };
  return view;
}

function page(title, ...children) {
  const h1 = el('h1', { tabindex: '-1' }, title);
  const flashNode = flash ? el('p', { class: 'flash', role: 'status' }, flash) : null;
  flash = null;
  clear(main(), h1, flashNode, children);
  document.title = `${typeof title === 'string' ? title : 'Runner Management'} · rdrunner`;
  return h1;
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (current) current.stop();
  current = newView();
  const signedIn = Boolean(token());
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('sign-out').hidden = !signedIn;
  if (!signedIn) {
    signInView(current);
    return;
  }
  const parts = (location.hash.replace(/^#\/?/, '') || 'runners').split('/').map(decodeURIComponent);
  const [section, arg] = parts;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (section === 'runners' && arg === 'new') createRunnerView(current);
    else if (section === 'runners' && arg) runnerView(current, arg);
    else if (section === 'projects') projectsView(current, arg);
    else if (section === 'executions' && arg === 'new') submitView(current);
    else if (section === 'executions' && arg) executionView(current, arg);
    else if (section === 'executions') executionsView(current);
    else runnersView(current);
  } catch (err) {
    // A fault of the page itself: say so rather than leave the last view.
    page('This page failed', el('p', { class: 'error', role: 'alert' }, String(err && err.stack ? err.stack : err)));
  }
  const h1 = main().querySelector('h1');
  if (h1) h1.focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  flash = message || 'Signed out.';
  go('#/runners');
}

// ---- sign in -----------------------------------------------------------------

function signInView() {
  const f = field('Admin token', el('input', { type: 'password', autocomplete: 'current-password', required: true, name: 'token' }),
    'The token the control plane was started with (rdrunner-harness prints it, or reads it from --admin-token-file or RDRUNNER_HARNESS_ADMIN_TOKEN). It is kept for this browser tab only.');
  const form = el('form', { class: 'card narrow', id: 'sign-in' }, f.wrap, el('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = f.input.value.trim();
    if (!value) return setError(f.error, 'Enter the admin token.');
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      await fetchRunnersChecked();
      route();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      setError(f.error, describe(err));
      f.input.focus();
    }
  });
  page('Sign in', el('p', {}, 'Runner Management shows the runners of this control plane, creates them, and runs jobs through them.'), form);
}

/** GET /runners without the sign-out on 401 (the sign-in form says it). */
async function fetchRunnersChecked() {
  const resp = await fetch(`${API}/runners`, { headers: { Authorization: `Bearer ${token()}` }, cache: 'no-store' });
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    throw new ApiError(resp.status, (data && data.error) || `http_${resp.status}`, (data && data.message) || resp.statusText);
  }
  return resp.json();
}

// ---- runners -----------------------------------------------------------------

function sum(replicas, key) {
  const present = replicas.filter((r) => typeof r[key] === 'number');
  return present.length ? present.reduce((a, r) => a + r[key], 0) : null;
}

function statusCell(r) {
  const cell = el('td', {}, badge(r.status, 'status'));
  if (r.statusReason) cell.append(el('span', { class: 'reason' }, r.statusReason));
  if (Array.isArray(r.warnings) && r.warnings.length) {
    cell.append(el('ul', { class: 'warnings', 'aria-label': 'Warnings' }, r.warnings.map((w) => el('li', {}, w))));
  }
  return cell;
}

function runnersView(view) {
  const error = el('p', { class: 'error', role: 'alert' });
  const body = el('div', { id: 'runners' });
  page('Runners', el('p', { class: 'actions' }, el('a', { class: 'button', href: '#/runners/new' }, 'Create runner')), error, body);
  let empty = null;
  view.every(async () => {
    let runners;
    try {
      runners = await api('GET', '/runners');
      setError(error, '');
    } catch (err) {
      setError(error, `Could not list the runners: ${describe(err)}`);
      return;
    }
    if (!runners.length) {
      if (empty) return;
      empty = true;
      clear(body, el('section', { class: 'empty card', 'aria-labelledby': 'empty-h' },
        el('h2', { id: 'empty-h' }, 'No runners yet'),
        el('p', {}, 'A runner runs jobs inside a network segment the control plane cannot reach: it dials out, checks in, and runs the node steps it is given over SSH or on its own host. Create one, download its credentials, and start rdrunner next to them.'),
        el('a', { class: 'button', href: '#/runners/new' }, 'Create runner')));
      return;
    }
    empty = false;
    const rows = runners.map((r) => {
      const replicas = Array.isArray(r.replicas) ? r.replicas : [];
      const alive = replicas.filter((x) => x.status !== 'down').length;
      const running = sum(replicas, 'running');
      const queued = sum(replicas, 'queued');
      const versions = [...new Set(replicas.filter((x) => x.status !== 'down').map((x) => x.version).filter(Boolean))];
      return el('tr', { 'data-runner': r.id },
        el('th', { scope: 'row' }, el('a', { href: `#/runners/${enc(r.id)}` }, r.name)),
        el('td', {}, r.description || ''),
        el('td', {}, (r.tags || []).join(', ')),
        statusCell(r),
        el('td', {}, replicas.length ? `${alive} of ${replicas.length} up` : 'none'),
        el('td', {}, `${running === null ? '–' : running} / ${queued === null ? '–' : queued}`),
        el('td', {}, versions.join(', ') || '–'),
        el('td', { class: 'last-checkin' }, timeEl(r.lastCheckin)));
    });
    clear(body, table('Runners, refreshed every 2 s',
      ['Name', 'Description', 'Tags', 'Status', 'Replicas', 'Running / queued', 'Version', 'Last check-in'], rows));
  }, REFRESH_MS);
}

/** Project rows of a form: name and node filter (default `.*`). */
function projectRows(container) {
  const rows = [];
  const list = el('div', { class: 'project-rows' });
  const addRow = (name = '', filter = '.*') => {
    const p = field('Project', el('input', { type: 'text', value: name, class: 'project-name' }));
    const f = field('Node filter', el('input', { type: 'text', value: filter, class: 'node-filter' }), 'For example .* (every node), tags: web, or name: web[0-9]+');
    const row = { p, f };
    const remove = el('button', { type: 'button', class: 'secondary' }, 'Remove project');
    const wrap = el('div', { class: 'project-row' }, p.wrap, f.wrap, remove);
    remove.addEventListener('click', () => {
      rows.splice(rows.indexOf(row), 1);
      wrap.remove();
    });
    row.wrap = wrap;
    rows.push(row);
    list.append(wrap);
    return row;
  };
  const addButton = el('button', { type: 'button', class: 'secondary' }, 'Add project');
  addButton.addEventListener('click', () => addRow().p.input.focus());
  container.append(el('fieldset', {}, el('legend', {}, 'Projects'),
    el('p', { class: 'hint' }, 'The runner serves these projects, for the nodes its filter selects. You can change them later.'),
    list, addButton));
  return { rows, addRow };
}

function createRunnerView() {
  const name = field('Name', el('input', { type: 'text', required: true, autocomplete: 'off' }));
  const description = field('Description', el('input', { type: 'text', autocomplete: 'off' }));
  const tags = field('Tags', el('input', { type: 'text', autocomplete: 'off' }), 'Separated by commas.');
  const general = el('p', { class: 'error', role: 'alert' });
  const form = el('form', { class: 'card', id: 'create-runner' }, name.wrap, description.wrap, tags.wrap);
  const projects = projectRows(form);
  form.append(general, el('p', { class: 'actions' }, el('button', { type: 'submit' }, 'Create runner'), el('a', { href: '#/runners' }, 'Cancel')));
  const result = el('div', { id: 'credentials-area' });
  page('Create runner', form, result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const slot of form.querySelectorAll('.field-error')) setError(slot, '');
    setError(general, '');
    if (!name.input.value.trim()) return setError(name.error, 'A runner needs a name.');
    const body = {
      name: name.input.value,
      description: description.input.value,
      tags: tags.input.value.split(',').map((t) => t.trim()).filter(Boolean),
      projects: {},
    };
    for (const row of projects.rows) {
      const p = row.p.input.value.trim();
      if (!p) return setError(row.p.error, 'Name the project, or remove this row.');
      if (p in body.projects) return setError(row.p.error, `Project ${p} is listed twice.`);
      body.projects[p] = row.f.input.value.trim() || '.*';
    }
    let created;
    try {
      created = await api('POST', '/runners', body);
    } catch (err) {
      const which = fieldOf(err) || '';
      const row = projects.rows.find((r) => which === `projects.${r.p.input.value.trim()}`);
      const slot = row ? row.f.error
        : which === 'name' ? name.error
          : which === 'description' ? description.error
            : which.startsWith('tags') ? tags.error : general;
      setError(slot, describe(err));
      return;
    }
    form.remove();
    page(`Runner ${body.name} created`, result);
    showCredentials(result, created, body.name);
  });
}

function serverUrlOf(credentials) {
  const m = /^RUNDECK_SERVER_URL=(.*)$/m.exec(credentials || '');
  return m ? m[1].trim() : null;
}

/** The one-time view of a token: download, commands, the warning. */
function showCredentials(container, created, runnerName) {
  const url = serverUrlOf(created.credentials);
  const download = el('button', { type: 'button', id: 'download-creds' }, 'Download .rdrunner-creds');
  download.addEventListener('click', () => {
    const blob = new Blob([created.credentials], { type: 'application/octet-stream' });
    const href = URL.createObjectURL(blob);
    const a = el('a', { href, download: '.rdrunner-creds', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  });
  const commands = 'chmod 600 .rdrunner-creds\nrdrunner check\nrdrunner run';
  const copied = el('span', { role: 'status', class: 'hint' });
  const copy = el('button', { type: 'button', class: 'secondary' }, 'Copy commands');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(commands);
      copied.textContent = 'Copied.';
    } catch (_) {
      copied.textContent = 'The browser did not allow copying; select the text instead.';
    }
  });
  clear(container, el('section', { class: 'card credentials', 'aria-labelledby': 'creds-h' },
    el('h2', { id: 'creds-h' }, `Credentials of ${runnerName}`),
    el('p', { class: 'warn' }, el('strong', {}, 'The token is shown only now and will not be shown again.'),
      ' Download the file before you leave this page; if it is lost, regenerate the credentials.'),
    el('p', {}, download),
    el('h3', {}, 'Start the runner next to the file'),
    el('p', {}, 'Put .rdrunner-creds in the runner\'s working directory (some browsers save it without the leading dot: rename it), then:'),
    el('pre', { class: 'commands', id: 'start-commands' }, el('code', {}, commands)),
    el('p', {}, copy, ' ', copied),
    url ? el('p', {}, 'The runner will reach the control plane at ', el('code', {}, url), '.') : null,
    el('details', {}, el('summary', {}, 'Show the file\'s text'), el('pre', {}, el('code', {}, created.credentials))),
    el('p', {}, el('a', { href: `#/runners/${enc(created.runnerId)}` }, `Go to runner ${runnerName}`))));
  download.focus();
}

const REPLICA_FIELDS = [
  ['id', 'Replica'], ['hostname', 'Host'], ['ip', 'IP'], ['status', 'Status'], ['version', 'Version'],
  ['pid', 'PID'], ['running', 'Running'], ['queued', 'Queued'], ['maxRunning', 'Max running'],
  ['lastCheckin', 'Last check-in'], ['startedAt', 'Started'], ['uptimeSecs', 'Uptime'],
];

function replicaValue(key, value) {
  if (value === undefined || value === null) return '–';
  if (key === 'status') return badge(value, 'status');
  if (key === 'lastCheckin' || key === 'startedAt') return timeEl(value);
  if (key === 'uptimeSecs' && typeof value === 'number') return uptime(value);
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function replicasTable(replicas) {
  if (!replicas.length) return el('p', { class: 'hint' }, 'No replica has started yet. Start rdrunner with the credentials file: it registers as a replica.');
  const extra = [];
  for (const r of replicas) {
    for (const k of Object.keys(r)) {
      if (!REPLICA_FIELDS.some(([f]) => f === k) && !extra.includes(k)) extra.push(k);
    }
  }
  const fields = [...REPLICA_FIELDS.filter(([f]) => ['id', 'hostname', 'status', 'lastCheckin'].includes(f) || replicas.some((r) => r[f] !== undefined)), ...extra.map((k) => [k, k])];
  return table('Replicas', fields.map(([, h]) => h), replicas.map((r) => el('tr', {},
    fields.map(([k], i) => (i === 0 ? el('th', { scope: 'row' }, replicaValue(k, r[k])) : el('td', {}, replicaValue(k, r[k])))))));
}

async function nodesSelected(project, filter, into) {
  try {
    const nodes = await api('GET', `/projects/${enc(project)}/nodes?filter=${enc(filter)}`);
    clear(into, `${nodes.length} node${nodes.length === 1 ? '' : 's'}`, nodes.length ? ': ' : '', nodes.map((n) => n.name).join(', '));
  } catch (err) {
    clear(into, err.code === 'unknown_project' ? 'the project has no node inventory yet' : describe(err));
  }
}

function runnerView(view, id) {
  const header = el('div', { id: 'runner-header' });
  const error = el('p', { class: 'error', role: 'alert' });
  const replicas = el('div', { id: 'replicas' });
  const assignments = el('div', { id: 'assignments' });
  const actions = el('div', { id: 'runner-actions' });
  const h1 = page('Runner', error, header,
    el('section', { 'aria-labelledby': 'act-h' }, el('h2', { id: 'act-h' }, 'Actions'), actions),
    el('section', { 'aria-labelledby': 'rep-h' }, el('h2', { id: 'rep-h' }, 'Replicas'), replicas),
    el('section', { 'aria-labelledby': 'proj-h' }, el('h2', { id: 'proj-h' }, 'Project assignments'), assignments));
  let runner = null;
  let drawn = false;

  const renderAssignments = (info) => {
    const rows = Object.entries(info.projects || {}).map(([project, filter]) => {
      const input = el('input', { type: 'text', value: filter, 'aria-label': `Node filter of project ${project}` });
      const err = el('p', { class: 'field-error', role: 'alert' });
      const selected = el('span', { class: 'selected' }, '…');
      const save = el('button', { type: 'button', class: 'secondary' }, 'Save filter');
      const remove = el('button', { type: 'button', class: 'secondary' }, 'Remove');
      save.addEventListener('click', async () => {
        try {
          renderAssignments(await api('PUT', `/runners/${enc(id)}/projects/${enc(project)}`, { nodeFilter: input.value }));
        } catch (e) {
          setError(err, describe(e));
        }
      });
      remove.addEventListener('click', async () => {
        try {
          renderAssignments(await api('DELETE', `/runners/${enc(id)}/projects/${enc(project)}`));
        } catch (e) {
          setError(err, describe(e));
        }
      });
      nodesSelected(project, filter, selected);
      return el('tr', { 'data-project': project }, el('th', { scope: 'row' }, project), el('td', {}, input, err), el('td', {}, selected), el('td', {}, save, ' ', remove));
    });
    const p = field('Project', el('input', { type: 'text', id: 'assign-project' }));
    const f = field('Node filter', el('input', { type: 'text', value: '.*', id: 'assign-filter' }), 'Which of the project\'s nodes this runner serves; .* for all.');
    const addForm = el('form', { class: 'inline-form', id: 'assign-form' }, p.wrap, f.wrap, el('button', { type: 'submit' }, 'Assign project'));
    addForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      setError(p.error, '');
      setError(f.error, '');
      const project = p.input.value.trim();
      if (!project) return setError(p.error, 'Name the project.');
      try {
        renderAssignments(await api('PUT', `/runners/${enc(id)}/projects/${enc(project)}`, { nodeFilter: f.input.value.trim() || '.*' }));
      } catch (e) {
        setError(e.code === 'bad_filter' ? f.error : p.error, describe(e));
      }
    });
    clear(assignments,
      rows.length ? table('Projects this runner serves, with the nodes each filter selects now', ['Project', 'Node filter', 'Nodes selected now', 'Change'], rows)
        : el('p', { class: 'hint' }, 'Not assigned to any project: it will get no work.'),
      el('h3', {}, 'Assign to a project'), addForm);
  };

  const confirmPanel = (text, confirmLabel, onConfirm) => {
    const yes = el('button', { type: 'button', class: 'danger' }, confirmLabel);
    const no = el('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const err = el('p', { class: 'error', role: 'alert' });
    const panel = el('div', { class: 'confirm card', role: 'group', 'aria-label': 'Confirmation' }, el('p', {}, text), yes, ' ', no, err);
    no.addEventListener('click', () => panel.remove());
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await onConfirm(panel);
      } catch (e) {
        setError(err, describe(e));
        yes.disabled = false;
      }
    });
    return { panel, yes };
  };

  const renderActions = () => {
    const pingOut = el('span', { id: 'ping-result', role: 'status' });
    const ping = el('button', { type: 'button', class: 'secondary', id: 'ping' }, 'Ping');
    ping.addEventListener('click', () => pingRunner(view, id, pingOut));
    const regen = el('button', { type: 'button', class: 'secondary', id: 'regenerate' }, 'Regenerate credentials');
    const del = el('button', { type: 'button', class: 'danger', id: 'delete' }, 'Delete runner');
    const slot = el('div', { id: 'confirm-slot' });
    regen.addEventListener('click', () => {
      const { panel, yes } = confirmPanel(`Regenerate the credentials of ${runner.name}? Its current token stops working at once: running replicas are refused until they get the new file.`,
        'Regenerate', async (p) => {
          const created = await api('POST', `/runners/${enc(id)}/regenerate-credentials`);
          p.remove();
          showCredentials(slot, created, runner.name);
        });
      clear(slot, panel);
      yes.focus();
    });
    del.addEventListener('click', () => {
      const { panel, yes } = confirmPanel(`Delete runner ${runner.name}? Its token is refused at once and operations it has not claimed fail.`,
        `Delete ${runner.name}`, async () => {
          await api('DELETE', `/runners/${enc(id)}`);
          flash = `Runner ${runner.name} deleted.`;
          go('#/runners');
        });
      clear(slot, panel);
      yes.focus();
    });
    clear(actions, el('p', { class: 'actions' }, ping, ' ', pingOut), el('p', { class: 'actions' }, regen, ' ', del), slot);
  };

  view.every(async () => {
    try {
      runner = await api('GET', `/runners/${enc(id)}`);
      setError(error, '');
    } catch (err) {
      setError(error, `Could not load runner ${id}: ${describe(err)}`);
      return;
    }
    h1.textContent = `Runner ${runner.name}`;
    document.title = `Runner ${runner.name} · rdrunner`;
    const warnings = Array.isArray(runner.warnings) && runner.warnings.length
      ? el('ul', { class: 'warnings', 'aria-label': 'Warnings' }, runner.warnings.map((w) => el('li', {}, w))) : null;
    clear(header, el('dl', { class: 'facts' },
      el('dt', {}, 'Status'), el('dd', { id: 'runner-status' }, badge(runner.status, 'status'), runner.statusReason ? el('span', { class: 'reason' }, runner.statusReason) : null, warnings),
      el('dt', {}, 'Last check-in'), el('dd', { class: 'last-checkin' }, timeEl(runner.lastCheckin)),
      el('dt', {}, 'Id'), el('dd', {}, el('code', {}, runner.id)),
      el('dt', {}, 'Description'), el('dd', {}, runner.description || '–'),
      el('dt', {}, 'Tags'), el('dd', {}, (runner.tags || []).join(', ') || '–')));
    clear(replicas, replicasTable(Array.isArray(runner.replicas) ? runner.replicas : []));
    if (!drawn) {
      drawn = true;
      renderActions();
      renderAssignments(runner);
    }
  }, REFRESH_MS);
}

/** POST /runners/{id}/ping, then its answer; a control plane without the route says 404. */
async function pingRunner(view, id, out) {
  out.textContent = 'Pinging…';
  let started;
  try {
    started = await api('POST', `/runners/${enc(id)}/ping`);
  } catch (err) {
    if ((err.status === 404 && err.code !== 'unknown_runner') || err.status === 405 || err.status === 501) {
      out.textContent = `This control plane cannot ping runners (POST /api/v1/runners/{id}/ping answered ${err.status} ${err.code}).`;
    } else {
      out.textContent = `Ping failed: ${describe(err)}`;
    }
    return;
  }
  const deadline = Date.now() + 60000;
  const poll = async () => {
    if (!view.alive) return;
    try {
      const p = await api('GET', `/runners/${enc(id)}/ping/${enc(started.pingId)}`);
      if (p.state === 'answered') {
        out.textContent = typeof p.roundTripMs === 'number' ? `Answered in ${p.roundTripMs} ms.` : 'Answered.';
        return;
      }
      if (p.state === 'timedOut') {
        out.textContent = 'No answer: the ping timed out (no replica checked in to take it).';
        return;
      }
      if (Date.now() > deadline) {
        out.textContent = `Still ${p.state} after 60 s.`;
        return;
      }
      out.textContent = `Waiting for a replica to answer (${p.state})…`;
      view.later(poll, 500);
    } catch (err) {
      out.textContent = `Ping failed: ${describe(err)}`;
    }
  };
  poll();
}

// ---- projects and nodes ------------------------------------------------------

/** Project names the page can know of: assignments and executions. */
async function knownProjects() {
  const names = new Set();
  try {
    for (const r of await api('GET', '/runners')) Object.keys(r.projects || {}).forEach((p) => names.add(p));
  } catch (_) { /* the list is a convenience */ }
  try {
    for (const e of await api('GET', '/executions?limit=50')) names.add(e.project);
  } catch (_) { /* idem */ }
  return [...names].sort();
}

function projectPicker(labelText, value) {
  const listId = uid('projects');
  const f = field(labelText, el('input', { type: 'text', list: listId, value: value || '', autocomplete: 'off' }));
  const list = el('datalist', { id: listId });
  f.wrap.append(list);
  knownProjects().then((names) => clear(list, names.map((n) => el('option', { value: n }))));
  return f;
}

function validateInventory(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return `Not valid JSON: ${e.message}`;
  }
  if (!Array.isArray(value)) return 'The inventory is a JSON array of nodes: [{"name": "web1", "hostname": "10.0.0.5"}, ...]';
  const seen = new Set();
  for (let i = 0; i < value.length; i += 1) {
    const n = value[i];
    if (n === null || typeof n !== 'object' || Array.isArray(n)) return `Node ${i + 1} is not an object.`;
    if (typeof n.name !== 'string' || !n.name) return `Node ${i + 1} needs a "name" (a non-empty string).`;
    if (seen.has(n.name)) return `Node name ${n.name} appears twice.`;
    seen.add(n.name);
  }
  return null;
}

function projectsView(view, project) {
  const picker = projectPicker('Project', project);
  const pick = el('form', { class: 'inline-form', id: 'project-form' }, picker.wrap, el('button', { type: 'submit' }, 'Show nodes'));
  pick.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = picker.input.value.trim();
    if (!name) return setError(picker.error, 'Name a project.');
    go(`#/projects/${enc(name)}`);
  });
  const area = el('div', { id: 'project-area' });
  page('Projects and nodes', pick, area);
  if (!project) {
    area.append(el('p', { class: 'hint' }, 'Pick a project to see its node inventory, or name a new one to create it by pasting its nodes.'));
    return;
  }
  const nodesBox = el('div', { id: 'nodes' });
  const json = field('Node inventory (JSON array of nodes)', el('textarea', { rows: '12', spellcheck: 'false', id: 'inventory' }),
    'Replaces every node of the project. Each node: name, hostname, and optionally port, username, executor (ssh or local), tags, attributes.');
  const saved = el('p', { role: 'status', class: 'hint' });
  const replace = el('form', { id: 'inventory-form' }, json.wrap, el('button', { type: 'submit' }, 'Replace nodes'), saved);
  const preview = filterPreview(view, () => project);
  clear(area, el('section', { 'aria-labelledby': 'nodes-h' }, el('h2', { id: 'nodes-h' }, `Nodes of project ${project}`), nodesBox, preview.wrap),
    el('section', { 'aria-labelledby': 'inv-h' }, el('h2', { id: 'inv-h' }, 'Replace the nodes'), replace));
  const show = (nodes) => {
    clear(nodesBox, nodes.length ? table(`${nodes.length} node${nodes.length === 1 ? '' : 's'}`, ['Name', 'Hostname', 'Port', 'User', 'Executor', 'Tags', 'Attributes'],
      nodes.map((n) => el('tr', {}, el('th', { scope: 'row' }, n.name), el('td', {}, n.hostname || ''), el('td', {}, n.port || ''), el('td', {}, n.username || ''),
        el('td', {}, n.executor || 'ssh'), el('td', {}, (n.tags || []).join(', ')),
        el('td', {}, Object.entries(n.attributes || {}).map(([k, v]) => `${k}=${v}`).join(', ')))))
      : el('p', { class: 'hint' }, 'The project has no nodes.'));
    json.input.value = JSON.stringify(nodes, null, 2);
    preview.update();
  };
  api('GET', `/projects/${enc(project)}/nodes`).then(show).catch((err) => {
    if (err.code === 'unknown_project') {
      clear(nodesBox, el('p', { class: 'hint' }, 'This project has no node inventory yet. Paste one below.'));
      json.input.value = JSON.stringify([{ name: 'web1', hostname: '10.0.0.5', username: 'deploy', tags: ['web'] }], null, 2);
    } else {
      clear(nodesBox, el('p', { class: 'error', role: 'alert' }, describe(err)));
    }
  });
  replace.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    saved.textContent = '';
    const problem = validateInventory(json.input.value);
    setError(json.error, problem);
    if (problem) return json.input.focus();
    try {
      show(await api('PUT', `/projects/${enc(project)}/nodes`, JSON.parse(json.input.value)));
      saved.textContent = 'Saved.';
    } catch (err) {
      setError(json.error, describe(err));
      json.input.focus();
    }
  });
}

/** A node filter field with a live "matches N nodes" under it. */
function filterPreview(view, projectOf, initial) {
  const f = field('Node filter', el('input', { type: 'text', value: initial || '.*', class: 'node-filter', autocomplete: 'off' }),
    'Which nodes: .* for all, tags: web, name: db[0-9]+, !name: web9');
  const count = el('p', { class: 'matches', role: 'status', 'aria-live': 'polite' });
  f.wrap.insertBefore(count, f.error);
  let seq = 0;
  const update = async () => {
    const mine = ++seq;
    const project = projectOf();
    setError(f.error, '');
    if (!project) {
      count.textContent = '';
      return;
    }
    try {
      const nodes = await api('GET', `/projects/${enc(project)}/nodes?filter=${enc(f.input.value || '.*')}`);
      if (mine !== seq) return;
      count.textContent = `matches ${nodes.length} node${nodes.length === 1 ? '' : 's'}${nodes.length ? `: ${nodes.slice(0, 20).map((n) => n.name).join(', ')}${nodes.length > 20 ? ', …' : ''}` : ''}`;
    } catch (err) {
      if (mine !== seq) return;
      count.textContent = '';
      setError(f.error, err.code === 'unknown_project' ? `Project ${project} has no node inventory.` : describe(err));
    }
  };
  let timer = null;
  f.input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => view.alive && update(), 250);
  });
  return { ...f, update };
}

// ---- executions --------------------------------------------------------------

function executionsView(view) {
  const error = el('p', { class: 'error', role: 'alert' });
  const body = el('div', { id: 'executions' });
  page('Executions', el('p', { class: 'actions' }, el('a', { class: 'button', href: '#/executions/new' }, 'Submit a job')), error, body);
  view.every(async () => {
    let list;
    try {
      list = await api('GET', '/executions?limit=50');
      setError(error, '');
    } catch (err) {
      setError(error, `Could not list the executions: ${describe(err)}`);
      return;
    }
    clear(body, list.length ? table('Recent executions, newest first, refreshed every 2 s', ['Execution', 'Project', 'State', 'Nodes', 'Runners'],
      list.map((e) => el('tr', {}, el('th', { scope: 'row' }, el('a', { href: `#/executions/${enc(e.id)}` }, `#${e.id}`)), el('td', {}, e.project),
        el('td', {}, badge(e.state, 'state')), el('td', {}, Object.keys(e.nodes || {}).length),
        el('td', {}, [...new Set((e.operations || []).map((o) => o.runner))].join(', ')))))
      : el('p', { class: 'hint' }, 'No executions yet.'));
  }, REFRESH_MS);
}

function stepRows(container) {
  const rows = [];
  const list = el('ol', { class: 'steps' });
  const addRow = (type = 'command', text = '') => {
    const kind = field('Step type', el('select', { value: type }, el('option', { value: 'command' }, 'Command'), el('option', { value: 'script' }, 'Script')));
    const body = field('Command', el('textarea', { rows: '2', spellcheck: 'false', class: 'step-text', value: text }),
      'A command runs in the node\'s shell; ${option.NAME} and ${node.name} are quoted for you. A script is uploaded and run.');
    const label = body.wrap.querySelector('label');
    kind.input.addEventListener('change', () => {
      label.textContent = kind.input.value === 'script' ? 'Script' : 'Command';
      body.input.rows = kind.input.value === 'script' ? 6 : 2;
    });
    const remove = el('button', { type: 'button', class: 'secondary' }, 'Remove step');
    const row = { kind, body };
    const li = el('li', { class: 'step-row' }, kind.wrap, body.wrap, remove);
    remove.addEventListener('click', () => {
      if (rows.length === 1) return;
      rows.splice(rows.indexOf(row), 1);
      li.remove();
    });
    rows.push(row);
    list.append(li);
    return row;
  };
  const addButton = el('button', { type: 'button', class: 'secondary' }, 'Add step');
  addButton.addEventListener('click', () => addRow().body.input.focus());
  container.append(el('fieldset', {}, el('legend', {}, 'Steps'), list, addButton));
  addRow();
  return rows;
}

function submitView(view) {
  const project = projectPicker('Project');
  const form = el('form', { class: 'card', id: 'submit-form' }, project.wrap);
  const steps = stepRows(form);
  const filter = filterPreview(view, () => project.input.value.trim());
  project.input.addEventListener('change', () => filter.update());
  const threads = field('Thread count', el('input', { type: 'number', min: '1', value: '1', step: '1' }), 'How many nodes run at once.');
  const keepGoing = el('input', { type: 'checkbox', id: uid('kg') });
  const options = field('Options', el('textarea', { rows: '3', spellcheck: 'false', placeholder: 'version=2.4.1' }), 'One NAME=value per line; steps read them as ${option.NAME} or $RD_OPTION_NAME.');
  const secure = el('div', { class: 'secure-rows' });
  const secureRows = [];
  const addSecure = () => {
    const n = field('Secure option name', el('input', { type: 'text', autocomplete: 'off' }));
    const v = field('Value', el('input', { type: 'password', autocomplete: 'new-password' }));
    secureRows.push({ n, v });
    secure.append(el('div', { class: 'secure-row' }, n.wrap, v.wrap));
    return n;
  };
  const addSecureButton = el('button', { type: 'button', class: 'secondary' }, 'Add secure option');
  addSecureButton.addEventListener('click', () => addSecure().input.focus());
  const general = el('p', { class: 'error', role: 'alert' });
  add(form, filter.wrap, threads.wrap,
    el('div', { class: 'field checkbox' }, keepGoing, el('label', { for: keepGoing.id }, 'Keep going when a node fails')),
    options.wrap,
    el('fieldset', {}, el('legend', {}, 'Secure options'), el('p', { class: 'hint' }, 'Values are masked as [SECURE] in all output and never stored on disk by the control plane.'), secure, addSecureButton),
    general, el('p', { class: 'actions' }, el('button', { type: 'submit' }, 'Run job'), el('a', { href: '#/executions' }, 'Cancel')));
  page('Submit a job', form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const slot of form.querySelectorAll('.field-error')) setError(slot, '');
    setError(general, '');
    const p = project.input.value.trim();
    if (!p) return setError(project.error, 'Name the project.');
    const body = {
      steps: [],
      nodeFilter: filter.input.value.trim() || '.*',
      dispatch: { threadCount: Math.max(1, parseInt(threads.input.value, 10) || 1), keepGoing: keepGoing.checked },
      options: {},
      secureOptions: [],
    };
    for (const row of steps) {
      const text = row.body.input.value;
      if (!text.trim()) return setError(row.body.error, 'Write the step, or remove it.');
      body.steps.push(row.kind.input.value === 'script' ? { type: 'script', script: text } : { type: 'command', command: text });
    }
    const lines = options.input.value.split('\n').map((l) => l.trim()).filter(Boolean);
    for (const line of lines) {
      const at = line.indexOf('=');
      if (at < 1) return setError(options.error, `"${line}" is not NAME=value.`);
      body.options[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    for (const { n, v } of secureRows) {
      const name = n.input.value.trim();
      if (!name && !v.input.value) continue;
      if (!name) return setError(n.error, 'Name the secure option.');
      body.options[name] = v.input.value;
      body.secureOptions.push(name);
    }
    try {
      const created = await api('POST', `/projects/${enc(p)}/executions`, body);
      go(`#/executions/${created.executionId}`);
    } catch (err) {
      const slot = err.code === 'unknown_project' ? project.error
        : (err.code === 'bad_filter' || err.code === 'no_nodes') ? filter.error : general;
      setError(slot, describe(err));
    }
  });
}

function duration(n) {
  if (!n.startedAt) return null;
  const end = n.endedAt ? Date.parse(n.endedAt) : Date.now();
  return end - Date.parse(n.startedAt);
}

function executionView(view, id) {
  const error = el('p', { class: 'error', role: 'alert' });
  const state = el('span', { id: 'execution-state' });
  const abortOut = el('span', { role: 'status' });
  const abort = el('button', { type: 'button', class: 'danger', id: 'abort' }, 'Abort execution');
  const nodes = el('div', { id: 'execution-nodes' });
  const summary = el('div', { id: 'summary', role: 'status' });
  const output = el('div', { class: 'output', id: 'output', role: 'log', 'aria-label': 'Output', tabindex: '0' });
  const outError = el('p', { class: 'error', role: 'alert' });
  page(`Execution #${id}`, error, el('p', { class: 'actions' }, 'State: ', state, ' ', abort, ' ', abortOut),
    el('section', { 'aria-labelledby': 'nodes-h' }, el('h2', { id: 'nodes-h' }, 'Nodes'), nodes, summary),
    el('section', { 'aria-labelledby': 'out-h' }, el('h2', { id: 'out-h' }, 'Output'), outError, output));
  abort.addEventListener('click', async () => {
    abort.disabled = true;
    abortOut.textContent = 'Aborting…';
    try {
      const s = await api('POST', `/executions/${enc(id)}/abort`);
      abortOut.textContent = `Abort sent; the execution is ${s.state}.`;
    } catch (err) {
      abortOut.textContent = `Abort failed: ${describe(err)}`;
      abort.disabled = false;
    }
  });
  let terminal = false;
  view.every(async () => {
    if (terminal) return;
    let e;
    try {
      e = await api('GET', `/executions/${enc(id)}`);
      setError(error, '');
    } catch (err) {
      setError(error, `Could not load execution ${id}: ${describe(err)}`);
      return;
    }
    terminal = !['queued', 'running'].includes(e.state);
    clear(state, badge(e.state, 'state'), ` in project ${e.project}`);
    if (terminal) abort.disabled = true;
    const entries = Object.entries(e.nodes || {});
    clear(nodes, table('Per node', ['Node', 'State', 'Exit', 'Duration', 'Runner', 'Message'], entries.map(([name, n]) => {
      const d = duration(n);
      return el('tr', { 'data-node': name }, el('th', { scope: 'row' }, name), el('td', {}, badge(n.state, 'state')),
        el('td', {}, n.exitCode === undefined || n.exitCode === null ? '–' : n.exitCode), el('td', {}, d === null ? '–' : seconds(d)),
        el('td', {}, n.runner || 'none'), el('td', {}, n.message || ''));
    })));
    if (terminal) {
      const starts = entries.map(([, n]) => n.startedAt).filter(Boolean).map(Date.parse);
      const ends = entries.map(([, n]) => n.endedAt).filter(Boolean).map(Date.parse);
      const total = starts.length && ends.length ? ` in ${seconds(Math.max(...ends) - Math.min(...starts))}` : '';
      const counts = {};
      for (const [, n] of entries) counts[n.state] = (counts[n.state] || 0) + 1;
      clear(summary, el('h3', {}, 'Summary'), el('p', { id: 'summary-text' }, `Execution #${e.id} ${e.state}${total}: `,
        Object.entries(counts).map(([s, c]) => `${c} ${s}`).join(', '), '.'));
    }
  }, 1000);
  let after = 0;
  let complete = false;
  view.every(async () => {
    if (complete) return;
    let page_;
    try {
      page_ = await api('GET', `/executions/${enc(id)}/output?after=${after}&limit=2000`);
      setError(outError, '');
    } catch (err) {
      setError(outError, `Could not read the output: ${describe(err)}`);
      return;
    }
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    const frag = document.createDocumentFragment();
    for (const entry of page_.entries) {
      const stderr = entry.stream === 'stderr';
      frag.append(el('div', { class: stderr ? 'line stderr' : 'line', 'data-n': entry.n },
        el('span', { class: 'prefix' }, `${entry.node} step ${entry.step}`),
        stderr ? el('span', { class: 'stream' }, 'stderr') : null,
        el('span', { class: 'text' }, entry.text)));
    }
    output.append(frag);
    if (atBottom) output.scrollTop = output.scrollHeight;
    after = page_.next;
    complete = page_.complete;
    if (complete && !output.childElementCount) output.append(el('p', { class: 'hint' }, 'No output.'));
  }, 500);
}

// ---- start -------------------------------------------------------------------

function start() {
  document.getElementById('sign-out').addEventListener('click', () => signOut('Signed out. The admin token was removed from this tab.'));
  window.addEventListener('hashchange', route);
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
