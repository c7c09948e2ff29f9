// sagad dashboard: a list of sagas (FAILED first, with counts per state) and
// one saga's steps and timeline, from sagad's read-only JSON API
// (docs/OBSERVABILITY.md). No framework and nothing from other origins; all
// data is inserted as text, never as HTML.
'use strict';

const STATES = ['RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED'];
// Starts waiting for their time (sagactl start --at/--in): listed apart, not
// sagas yet, so not in "all"; their row shows when they start.
const SCHEDULED = 'SCHEDULED';
const LIST_REFRESH_MS = 2000;
const SAGA_REFRESH_MS = 1000;
let timer = null;
let knownTypes = new Set();

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// Times are UTC, and say so; beside them, how long ago.
function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function fmtAgo(ms) {
  if (!ms) return '';
  const d = Date.now() - ms;
  if (d >= 0 && d < 1000) return 'just now';
  return d < 0 ? 'in ' + fmtDuration(-d) : fmtDuration(d) + ' ago';
}

function fmtWhen(ms) {
  if (!ms) return '';
  return el('span', { title: fmtTime(ms) }, fmtAgo(ms), el('span', { class: 'muted' }, ' (' + fmtTime(ms) + ')'));
}

function fmtMap(m) { return Object.entries(m || {}).map(([k, v]) => k + '=' + v).join(', '); }

// A saga's error cell: red while something is wrong; on a COMPLETED saga the
// old error is what it recovered from, shown muted, never red.
function errorCell(s, tag) {
  if (s.state === 'COMPLETED')
    return s.root_cause ? el(tag, { class: 'recovered' }, 'recovered from: ' + s.root_cause) : el(tag, {}, '');
  return el(tag, { class: 'err' }, s.last_error || '');
}

// A step as an operator reads it: the step a FAILED saga stopped at is
// FAILED (red), the others left in flight are halted (grey), never "live".
function stepState(s, st) {
  if (st.failed)
    return el('td', { class: 'st-FAILED', 'data-failed': '' },
      'FAILED (' + (s.failed_phase === 'compensate' ? 'compensation' : 'action') + ')');
  if (s.state === 'FAILED' && (st.state === 'ACTION_SENT' || st.state === 'COMPENSATING'))
    return el('td', { class: 'st-HALTED' }, 'halted (' + st.state + ')');
  return el('td', { class: 'st-' + st.state }, st.state);
}

function fmtDuration(ms) {
  if (ms < 1000) return ms + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(2) + ' s';
  return Math.floor(ms / 60000) + ' min ' + Math.round((ms % 60000) / 1000) + ' s';
}

function stateBadge(state) {
  return el('span', { class: 'state s-' + state, 'data-state': state }, state);
}

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem('sagad-token');
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const res = await fetch(path, { headers, cache: 'no-store' });
  if (res.status === 401) {
    $('auth').hidden = false;
    throw new Error('the API needs the admin token');
  }
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || ('HTTP ' + res.status));
  return body;
}

function showError(err) {
  const p = $('error');
  if (err) { p.textContent = String(err.message || err); p.hidden = false; } else { p.hidden = true; }
}

function stamp() { $('refreshed').textContent = 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC'; }

// ---- The list ---------------------------------------------------------------

function renderCounts(counts, active) {
  const nav = $('counts');
  nav.replaceChildren();
  let total = 0;
  for (const s of STATES) total += counts[s] || 0;
  const all = el('a', { class: 'count' + (active ? '' : ' active'), href: '#', 'data-state': '' }, 'all', el('b', {}, total));
  nav.append(all);
  for (const s of [...STATES, SCHEDULED]) {
    const a = el('a', { class: 'count' + (active === s ? ' active' : ''), href: '#state=' + s, id: 'count-' + s, 'data-state': s },
      stateBadge(s), el('b', {}, counts[s] || 0));
    nav.append(a);
  }
}

function sagaRow(s) {
  return el('tr', { 'data-saga': s.saga_id, 'data-state': s.state },
    el('td', { class: 'id' }, el('a', { href: '#saga=' + s.saga_id }, s.saga_id)),
    el('td', {}, s.type),
    el('td', {}, stateBadge(s.state)),
    el('td', {}, fmtWhen(s.created_at_ms)),
    s.state === SCHEDULED ? el('td', { class: 'starts' }, fmtWhen(s.start_at_ms))
      : el('td', {}, fmtAgo(s.updated_at_ms)),
    errorCell(s, 'td'));
}

function updateTypes(sagas) {
  const sel = $('f-type');
  let changed = false;
  for (const s of sagas) if (!knownTypes.has(s.type)) { knownTypes.add(s.type); changed = true; }
  if (!changed) return;
  const cur = sel.value;
  sel.replaceChildren(el('option', { value: '' }, 'any'));
  for (const t of [...knownTypes].sort()) sel.append(el('option', { value: t }, t));
  sel.value = cur;
}

async function refreshList() {
  const state = $('f-state').value, type = $('f-type').value, limit = $('f-limit').value;
  const q = new URLSearchParams({ limit });
  if (state) q.set('state', state);
  if (type) q.set('type', type);
  try {
    const [list, failed] = await Promise.all([
      api('/api/sagas?' + q),
      api('/api/sagas?state=FAILED&limit=50' + (type ? '&type=' + encodeURIComponent(type) : '')),
    ]);
    renderCounts(list.counts, state);
    $('col-when').textContent = state === SCHEDULED ? 'Starts' : 'Updated';
    updateTypes(list.sagas);
    updateTypes(failed.sagas);
    // Needs attention: FAILED sagas first, whatever the filter.
    const att = $('attention');
    att.replaceChildren();
    if (failed.sagas.length > 0) {
      const ul = el('ul', {});
      for (const s of failed.sagas)
        ul.append(el('li', { 'data-saga': s.saga_id }, el('a', { href: '#saga=' + s.saga_id }, s.saga_id), ' ',
          el('span', { class: 'muted' }, s.type), ' ', el('span', { class: 'err' }, s.last_error || ''),
          s.root_cause && s.root_cause !== s.last_error ? el('span', { class: 'muted' }, ' (root cause: ' + s.root_cause + ')') : null));
      att.append(el('div', { class: 'panel', id: 'needs-attention' },
        el('h2', {}, 'Needs attention: ' + list.counts.FAILED + ' FAILED'), ul,
        el('p', { class: 'muted' }, 'Fix the cause, then sagactl resume ID --reason TEXT (or sagactl abort ID --reason TEXT); an ID prefix is enough.')));
    }
    // FAILED first, then newest first (the API's order).
    const rows = list.sagas.slice().sort((a, b) => (b.state === 'FAILED') - (a.state === 'FAILED'));
    const tbody = $('sagas').tBodies[0];
    tbody.replaceChildren(...rows.map(sagaRow));
    $('list-empty').hidden = rows.length > 0;
    showError(null);
    stamp();
  } catch (e) { showError(e); }
}

// ---- One saga -----------------------------------------------------------------

function renderHead(s) {
  const dl = el('dl', { class: 'kv' });
  const add = (k, v) => { dl.append(el('dt', {}, k), el('dd', {}, v)); };
  add('saga', el('code', { id: 'saga-id' }, s.saga_id));
  add('type', s.type);
  add('state', stateBadge(s.state));
  if (s.state === 'FAILED')
    add('failed at', el('span', { class: 'err', id: 'failed-step' }, 'step ' + s.failed_step + ' (' +
      (s.failed_phase === 'compensate' ? 'compensation' : 'action') + ')'));
  if (s.client_key) add('client key', s.client_key);
  if (s.state === SCHEDULED) {
    add('scheduled', fmtWhen(s.created_at_ms));
    add('starts', el('span', { id: 'starts-at' }, fmtWhen(s.start_at_ms)));
    add('what now', 'it starts by itself then; before that, sagactl cancel ' + s.saga_id + ' cancels it');
  } else {
    add('created', fmtWhen(s.created_at_ms));
    add('updated', fmtWhen(s.updated_at_ms));
    add('duration', s.duration_ms !== null ? fmtDuration(s.duration_ms)
      : fmtDuration(Math.max(0, Date.now() - s.created_at_ms)) + ' so far');
  }
  if (s.deadline_at_ms) add('deadline', fmtWhen(s.deadline_at_ms));
  const input = Object.entries(s.input).map(([k, v]) => k + '=' + v).join('  ');
  add('input', input);
  if (s.state === 'COMPLETED') {
    if (s.root_cause) add('recovered from', el('span', { class: 'recovered', id: 'root-cause' }, s.root_cause));
  } else {
    if (s.last_error) add('last error', el('span', { class: 'err' }, s.last_error));
    if (s.root_cause && s.root_cause !== s.last_error)
      add('root cause', el('span', { class: 'err', id: 'root-cause' }, s.root_cause));
  }
  if (s.state === 'FAILED')
    add('what now', s.failed_phase === 'compensate'
      ? 'fix the cause, then sagactl resume ' + s.saga_id + ' --reason TEXT (retries the compensation)'
      : 'fix the cause, then sagactl resume ' + s.saga_id + ' --reason TEXT, or sagactl abort ' + s.saga_id + ' --reason TEXT');
  const live = !['COMPLETED', 'COMPENSATED', 'FAILED'].includes(s.state);
  $('saga-head').replaceChildren(el('h2', {}, 'Saga ', s.type, ' ', live ? el('span', { class: 'live' }, '● live') : null), dl);
}

function renderSteps(s) {
  const tbody = $('steps').tBodies[0];
  tbody.replaceChildren(...s.steps.map((st, i) => el('tr', { 'data-step': st.name },
    el('td', {}, i + 1),
    el('td', {}, st.name),
    el('td', {}, st.participant || ''),
    el('td', {}, (st.action || '') + ' / ' + (st.compensation || '—')),
    stepState(s, st),
    el('td', {}, st.duration_ms !== null ? fmtDuration(st.duration_ms) : ''),
    el('td', {}, st.action_attempts + (st.compensation_attempts ? ' + ' + st.compensation_attempts + ' comp.' : '')),
    el('td', {}, st.last_outcome || ''),
    el('td', { class: 'params' }, fmtMap(st.params)),
    el('td', {}, fmtMap(st.result)),
    el('td', { class: 'err' }, st.last_error || ''))));
}

// Pairs each step_sent with the reply (or no reply) of the same attempt;
// attempts whose spans overlap (steps run at once, after = [...]) share one
// row, side by side.
function renderTimeline(events, final) {
  const items = [];
  const open = new Map();
  const t0 = events.length ? events[0].at_ms : 0;
  for (const ev of events) {
    const key = ev.step + '/' + ev.phase + '/' + ev.attempt;
    if (ev.kind === 'step_sent') {
      const it = { ev, kind: 'attempt', reply: null };
      open.set(key, it);
      items.push(it);
    } else if ((ev.kind === 'step_reply' || ev.kind === 'step_no_reply') && open.has(key)) {
      open.get(key).reply = ev;
      open.delete(key);
    } else {
      items.push({ ev, kind: 'event' });
    }
  }
  // Rows: an event, an attempt, or attempts that overlap in time. An attempt
  // without a reply lasts until now while the saga lives; once it is final,
  // its reply was lost (a restart), and it is drawn as an instant.
  const endOf = (it) => (it.reply ? it.reply.at_ms : final ? it.ev.at_ms : Infinity);
  const rows = [];
  for (const it of items) {
      const prev = rows[rows.length - 1];
      if (it.kind === 'attempt' && prev && prev.kind === 'together' && it.ev.at_ms < prev.end) {
          prev.its.push(it);
          prev.end = Math.max(prev.end, endOf(it));
      } else if (it.kind === 'attempt') {
          rows.push({kind : 'together', its : [ it ], end : endOf(it)});
      } else {
          rows.push(it);
      }
  }
  const attempt = (it, tag, attrs) => {
      const ev = it.ev;
      const when = el('span', {class : 'when'}, '+' + fmtDuration(ev.at_ms - t0));
      const comp = ev.phase === 'compensate';
      const r = it.reply;
      let cls = comp ? 'comp' : 'wait', outcome;
      if (r && r.kind === 'step_reply') {
          outcome = r.outcome;
          cls = r.outcome === 'OK' || r.outcome === 'SKIPPED' ? (comp ? 'comp' : 'ok') : 'bad';
      } else if (r) {
          outcome = 'no reply';
          cls = 'bad';
      } else {
          outcome = final ? 'no reply recorded' : 'waiting…';
      }
      return el(tag,
                Object.assign({class : cls, 'data-kind' : 'attempt', 'data-step' : ev.step}, attrs),
                when, el('b', {}, ev.step), ' ', comp ? 'compensation' : 'action', ' attempt ',
                ev.attempt, ' → ', el('b', {class : 'outcome'}, outcome),
                r ? el('span', {class : 'tag dur'}, fmtDuration(r.at_ms - ev.at_ms)) : null,
                r && r.replayed ? el('span', {class : 'tag replay'}, 'replayed') : null,
                comp ? el('span', {class : 'tag comp'}, 'compensation') : null,
                r && r.detail ? el('div', {class : 'err'}, r.detail) : null,
                ev.params ? el('div', {class : 'muted params'}, 'params: ' + fmtMap(ev.params)) : null,
                r && r.result ? el('div', {class : 'muted result'}, 'result: ' + fmtMap(r.result)) : null);
  };
  const ol = $('timeline');
  ol.replaceChildren(...rows.map((it) => {
      if (it.kind === 'together') {
          if (it.its.length === 1)
              return attempt(it.its[0], 'li', {});
          return el('li', {class : 'together', 'data-kind' : 'together'},
                    el('span', {class : 'tag'}, it.its.length + ' at the same time'),
                    el('div', {class : 'lanes'},
                       ...it.its.map((a) => attempt(a, 'div', {'data-lane' : ''}))));
      }
      const ev = it.ev;
      const when = el('span', {class : 'when'}, '+' + fmtDuration(ev.at_ms - t0));
      const bad = ev.kind === 'saga_failed';
      const good = ev.kind === 'saga_completed';
      return el('li', {
          class : bad                                                                    ? 'bad'
                  : good                                                                 ? 'ok'
                  : ev.kind.startsWith('compensation') || ev.kind === 'saga_compensated' ? 'comp'
                                                                                         : '',
          'data-kind' : ev.kind
      },
                when, el('b', {}, ev.kind.replace(/_/g, ' ')), ev.step ? ' ' + ev.step : '',
                ev.detail ? el('span', {class : 'muted'}, ' — ' + ev.detail) : null);
  }));
}

async function refreshSaga(id) {
  try {
    const s = await api('/api/sagas/' + id);
    // A scheduled start has no steps run and no history yet: shown until it fires.
    const h = s.state === SCHEDULED ? { events: [] } : await api('/api/sagas/' + id + '/history');
    renderHead(s);
    renderSteps(s);
    const final = ['COMPLETED', 'COMPENSATED', 'FAILED'].includes(s.state);
    renderTimeline(h.events, final);
    showError(null);
    stamp();
    if (final) stop(); // nothing more will happen unless an operator acts
  } catch (e) { showError(e); }
}

// ---- Routing ------------------------------------------------------------------

function stop() { if (timer) { clearInterval(timer); timer = null; } }

function route() {
  stop();
  const params = new URLSearchParams(location.hash.slice(1));
  const id = params.get('saga');
  $('list-view').hidden = !!id;
  $('saga-view').hidden = !id;
  if (id) {
    document.title = 'saga ' + id;
    refreshSaga(id);
    timer = setInterval(() => refreshSaga(id), SAGA_REFRESH_MS);
  } else {
    document.title = 'sagad';
    $('f-state').value = params.get('state') || '';
    refreshList();
    timer = setInterval(refreshList, LIST_REFRESH_MS);
  }
}

for (const id of ['f-state', 'f-type', 'f-limit']) $(id).addEventListener('change', refreshList);
$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('sagad-token', $('token').value);
  $('auth').hidden = true;
  route();
});
// A link may carry the token (/?token=...), as Jupyter's do: keep it for this
// tab's session and take it out of the address bar and the history at once.
const linkParams = new URLSearchParams(location.search);
if (linkParams.has('token')) {
  sessionStorage.setItem('sagad-token', linkParams.get('token'));
  history.replaceState(null, '', location.pathname + location.hash);
}
window.addEventListener('hashchange', route);
route();
