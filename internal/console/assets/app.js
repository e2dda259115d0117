// The wxpay-events console: three views over the console's JSON API. Data is only ever put into the page
// as text (textContent), never as HTML, and the page's Content-Security-Policy allows no other script.
'use strict';

const TOKEN_KEY = 'wxpay-console-token';
const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);

// The token: dev prints a link with it in the fragment (#token=…), which the browser never sends; keep it
// for this tab only and take it out of the address bar at once.
(function takeTokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search + '#/live');
  }
})();
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

let info = { read_only: true, reads_need_token: false, event_types: [], reasons: [] };

// ---- small DOM helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function meta(dl, pairs) {
  clear(dl);
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === '') continue;
    dl.append(el('dt', { text: k }), el('dd', { text: String(v) }));
  }
}

function typeBadge(type) {
  const family = (type || '').split('.')[0];
  return el('span', { class: 'type ' + family, text: type || '?' });
}

function ago(fromISO, nowISO) {
  const s = Math.max(0, (Date.parse(nowISO || new Date().toISOString()) - Date.parse(fromISO)) / 1000);
  if (s < 60) return Math.floor(s) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function clock(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false });
}

function bytes(n) {
  if (n < 1024) return n + ' B';
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + ' ' + u[i];
}

function num(n) { return Number(n).toLocaleString('en-US'); }
function perSec(r) { return r === null || r === undefined ? '—' : (r < 10 ? r.toFixed(2) : r.toFixed(1)) + '/s'; }

// ---- the API -----------------------------------------------------------------------------------------

class APIError extends Error {
  constructor(status, body) {
    super((body && body.error) || ('HTTP ' + status));
    this.status = status;
    this.body = body || {};
  }
}

function headers(json) {
  const h = { Accept: 'application/json' };
  if (token()) h.Authorization = 'Bearer ' + token();
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function api(path, body) {
  const opts = { headers: headers(body !== undefined), cache: 'no-store' };
  if (body !== undefined) {
    opts.method = 'POST';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    if (res.status === 401) askToken('That needs the console token.');
    throw new APIError(res.status, data);
  }
  return data;
}

// ---- the token ---------------------------------------------------------------------------------------

function showAuth() {
  const s = $('auth-state');
  if (info.read_only) {
    s.textContent = 'read-only';
    s.className = 'pill ro';
    s.title = 'Started without a token: replay and purge are off.';
    $('auth-button').hidden = true;
  } else if (token()) {
    s.textContent = 'token set';
    s.className = 'pill ok';
    s.title = 'Replay and purge are allowed from this tab.';
    $('auth-button').textContent = 'Forget token';
  } else {
    s.textContent = 'no token';
    s.className = 'pill';
    s.title = 'Replay and purge need the console token.';
    $('auth-button').textContent = 'Set token';
  }
  for (const id of ['dlq-replay', 'dlq-purge', 'dlq-replay-all', 'dlq-purge-all']) $(id).disabled = info.read_only;
}

function askToken(why) {
  dialog({
    title: 'Console token', text: (why ? why + ' ' : '') + 'It is in the file given with --token-file (or CONSOLE_TOKEN_FILE); dev prints a link that carries it.',
    input: { caption: 'Token', type: 'password' }, ok: 'Use it',
  }).then((v) => {
    if (v === null) return;
    sessionStorage.setItem(TOKEN_KEY, v.trim());
    showAuth();
    if (info.reads_need_token) start();
  });
}

$('auth-button').addEventListener('click', () => {
  if (token()) { sessionStorage.removeItem(TOKEN_KEY); showAuth(); } else askToken('');
});

// ---- the dialog (in the page: no window.confirm, so that it looks like the rest and tests can drive it) --

let dialogDone = null;
function dialog({ title, text, list, input, ok, danger, check }) {
  $('modal-title').textContent = title;
  $('modal-text').textContent = text || '';
  const ul = $('modal-list');
  clear(ul);
  ul.hidden = !list || list.length === 0;
  for (const item of list || []) ul.append(el('li', { text: item }));
  $('modal-input-label').hidden = !input;
  $('modal-input').value = '';
  $('modal-input').type = (input && input.type) || 'text';
  $('modal-input-caption').textContent = (input && input.caption) || '';
  $('modal-error').hidden = true;
  $('modal-ok').textContent = ok || 'OK';
  $('modal-ok').className = danger ? 'danger' : '';
  $('modal').hidden = false;
  (input ? $('modal-input') : $('modal-ok')).focus();
  return new Promise((resolve) => {
    dialogDone = (v) => {
      if (v !== null && check) {
        const problem = check(v);
        if (problem) { $('modal-error').textContent = problem; $('modal-error').hidden = false; return; }
      }
      $('modal').hidden = true;
      dialogDone = null;
      resolve(v);
    };
  });
}
$('modal-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (dialogDone) dialogDone($('modal-input-label').hidden ? '' : $('modal-input').value);
});
$('modal-cancel').addEventListener('click', () => dialogDone && dialogDone(null));
document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && dialogDone) dialogDone(null); });

// ---- live events -------------------------------------------------------------------------------------

const live = { abort: null, lastSeq: 0, paused: false, rows: 0, selected: null, retry: 1000 };

function setStatus(state, text) {
  const s = $('stream-status');
  s.dataset.state = state;
  s.textContent = text;
}

function liveQuery(extra) {
  const f = new FormData($('live-filter'));
  const p = new URLSearchParams();
  for (const k of ['type', 'mchid', 'sub', 'q']) if (f.get(k)) p.set(k, f.get(k).trim());
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

// Server-sent events read with fetch rather than EventSource, which cannot send the Authorization header
// that a console on the network needs for reads.
async function follow() {
  if (live.abort) live.abort.abort();
  const ctl = new AbortController();
  live.abort = ctl;
  const q = live.lastSeq > 0 ? liveQuery({ after: live.lastSeq }) : liveQuery({ backlog: 100 });
  setStatus('connecting', 'connecting…');
  try {
    const res = await fetch('api/events/stream?' + q, { headers: headers(false), signal: ctl.signal, cache: 'no-store' });
    if (!res.ok) {
      let body = null;
      try { body = await res.json(); } catch (_) { /* not JSON */ }
      if (res.status === 401) askToken('Reading needs the console token.');
      throw new APIError(res.status, body);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        frame(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
    throw new Error('the stream ended');
  } catch (err) {
    if (ctl.signal.aborted) return;
    const bad = err instanceof APIError && err.status >= 400 && err.status < 500;
    setStatus('error', (bad ? '' : 'reconnecting: ') + err.message);
    if (bad) return;
    setTimeout(() => { if (live.abort === ctl && !live.paused) follow(); }, live.retry);
    live.retry = Math.min(live.retry * 2, 10000);
  }
}

function frame(text) {
  let event = 'message';
  let data = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data += line.slice(6);
  }
  if (event === 'ready') {
    live.retry = 1000;
    setStatus('live', 'live');
  } else if (event === 'event') {
    addEvent(JSON.parse(data));
  }
}

function addEvent(e) {
  live.lastSeq = Math.max(live.lastSeq, e.seq);
  const merchant = e.mchid + (e.sub_mchid ? ' / ' + e.sub_mchid : '');
  const tr = el('tr', { 'data-seq': e.seq, 'data-subject': e.subject, 'data-type': e.type, class: 'fresh' },
    el('td', { title: e.stored, text: clock(e.stored) }),
    el('td', {}, typeBadge(e.type)),
    el('td', { class: 'mono', text: merchant }),
    e.invalid ? el('td', { class: 'muted', title: e.invalid, text: 'not a CloudEvent of ours' }) : el('td', { class: 'mono', text: e.subject }),
    el('td', { class: 'muted', text: e.time }),
    el('td', { class: 'mono muted', text: e.id }));
  tr.addEventListener('click', () => showEvent(e.seq, tr));
  const body = $('events-body');
  body.insertBefore(tr, body.firstChild);
  live.rows++;
  while (live.rows > MAX_ROWS) { body.removeChild(body.lastChild); live.rows--; }
  $('events-empty').hidden = true;
}

async function showEvent(seq, tr) {
  for (const r of document.querySelectorAll('#events-body tr.selected')) r.classList.remove('selected');
  tr.classList.add('selected');
  try {
    const d = await api('api/events/' + seq);
    meta($('event-meta'), [['stream seq', d.seq], ['stored', d.stored], ['NATS subject', d.nats_subject],
      ['Nats-Msg-Id', d.headers['Nats-Msg-Id']], ['traceparent', d.headers.traceparent]]);
    $('event-json').textContent = JSON.stringify(d.event, null, 2);
    $('event-detail').hidden = false;
    $('event-detail').dataset.seq = seq;
  } catch (err) {
    $('event-json').textContent = err.message;
    $('event-detail').hidden = false;
  }
}

function restartLive() {
  clear($('events-body'));
  live.rows = 0;
  live.lastSeq = 0;
  $('events-empty').hidden = false;
  $('event-detail').hidden = true;
  if (!live.paused) follow();
}

$('live-filter').addEventListener('submit', (e) => { e.preventDefault(); restartLive(); });
$('live-type').addEventListener('change', restartLive);
$('live-pause').addEventListener('click', () => {
  live.paused = !live.paused;
  $('live-pause').textContent = live.paused ? 'Resume' : 'Pause';
  if (live.paused) {
    if (live.abort) live.abort.abort();
    setStatus('paused', 'paused');
  } else {
    follow();
  }
});

// ---- dead letters ------------------------------------------------------------------------------------

const dlqState = { selected: null };

function dlqFilter() {
  const f = new FormData($('dlq-filter'));
  const out = {};
  for (const k of ['reason', 'mchid', 'event_type', 'since', 'seq']) if (f.get(k)) out[k] = f.get(k).trim();
  return out;
}

function message(text, isError) {
  const m = $('dlq-message');
  m.textContent = text;
  m.className = 'message' + (isError ? ' error' : '');
  m.hidden = !text;
}

let dlqLoads = 0; // only the latest listing is drawn: an older answer arriving late would undo a newer one

async function loadDLQ() {
  const mine = ++dlqLoads;
  try {
    const d = await api('api/dlq?' + new URLSearchParams(dlqFilter()).toString());
    if (mine !== dlqLoads) return;
    const body = $('dlq-body');
    clear(body);
    for (const e of d.entries) {
      const tr = el('tr', { 'data-seq': e.seq, 'data-reason': e.reason },
        el('td', { class: 'mono', text: e.seq }),
        el('td', {}, el('span', { class: 'reason', text: e.reason })),
        el('td', { class: 'mono', text: e.mchid }),
        el('td', { text: e.event_type || '—' }),
        el('td', { title: e.stored, text: ago(e.stored, d.now) }),
        el('td', { text: e.deliveries }),
        el('td', { class: 'clip muted', title: e.error, text: e.error || '—' }));
      if (e.seq === dlqState.selected) tr.classList.add('selected');
      tr.addEventListener('click', () => showDLQ(e.seq));
      body.append(tr);
    }
    $('dlq-empty').hidden = d.entries.length > 0;
    $('dlq-more').hidden = !d.more;
    const c = $('dlq-count');
    c.hidden = d.entries.length === 0 || Object.keys(dlqFilter()).length > 0;
    c.textContent = d.entries.length + (d.more ? '+' : '');
  } catch (err) {
    message('Could not list dead letters: ' + err.message, true);
  }
}

async function showDLQ(seq) {
  dlqState.selected = seq;
  for (const r of document.querySelectorAll('#dlq-body tr')) r.classList.toggle('selected', Number(r.dataset.seq) === seq);
  try {
    const d = await api('api/dlq/' + seq);
    $('dlq-detail-seq').textContent = '#' + d.seq;
    $('dlq-detail').dataset.seq = d.seq;
    meta($('dlq-meta'), [
      ['reason', d.reason], ['error', d.error], ['merchant', d.mchid], ['event type', d.event_type],
      ['notification id', d.notification_id], ['deliveries', d.deliveries], ['stored', d.stored + ' (' + ago(d.stored, d.now) + ' ago)'],
      ['original subject', d.original_subject], ['original msg id', d.original_msg_id],
      ['replays to', d.replay_to ? d.replay_to.target + '  as  ' + d.replay_to.msg_id : 'cannot be replayed: not from an inbound subject'],
      ['envelope', d.envelope_error ? 'not usable: ' + d.envelope_error : null],
    ]);
    const fix = $('dlq-fix');
    fix.hidden = d.replayable;
    fix.textContent = d.replayable ? '' : 'Replay once the cause is fixed, or it fails again: ' + d.fix_first + '.';
    const hd = $('dlq-headers');
    clear(hd);
    for (const k of Object.keys(d.headers).sort()) hd.append(el('dt', { text: k }), el('dd', { text: d.headers[k] }));
    let pretty = d.body;
    try { pretty = JSON.stringify(JSON.parse(d.body), null, 2); } catch (_) { /* shown as stored */ }
    $('dlq-body-raw').textContent = pretty;
    $('dlq-detail').hidden = false;
  } catch (err) {
    if (err.status === 404) { $('dlq-detail').hidden = true; loadDLQ(); }
    message(err.message, true);
  }
}

function summarizeReplay(r) {
  if (r.dry_run) return 'Dry run: ' + r.matched + ' entr' + (r.matched === 1 ? 'y' : 'ies') + ' would be replayed to WECHATPAY_INBOUND; nothing was changed.';
  let s = 'Replayed ' + r.replayed + ' of ' + r.matched + ' to WECHATPAY_INBOUND in ' + r.elapsed_seconds.toFixed(1) + 's';
  if (r.failed) s += '; ' + r.failed + ' failed and stay in the DLQ';
  if (r.gone) s += '; ' + r.gone + ' already gone';
  if (r.interrupted) s += '; interrupted';
  const errors = r.entries.filter((e) => e.error).map((e) => '#' + e.seq + ': ' + e.error);
  return s + '.' + (errors.length ? ' ' + errors.join(' ') : '');
}

async function replay(filter, what) {
  const rate = $('dlq-rate').value.trim();
  try {
    const plan = await api('api/dlq/replay', { ...filter, dry_run: true, rate });
    if (plan.matched === 0) { message('Nothing to replay: no entry matches.'); return; }
    const last = Math.max(...plan.entries.map((e) => e.seq));
    const ok = await dialog({
      title: 'Replay ' + what + '?',
      text: plan.matched + ' entr' + (plan.matched === 1 ? 'y goes' : 'ies go') + ' back to WECHATPAY_INBOUND' +
        (rate ? ', at most ' + rate : '') + ', and leave the DLQ once stored. The consumer processes them again; its dedupe makes a repeat harmless.',
      list: plan.entries.slice(0, 20).map((e) => '#' + e.seq + ' → ' + e.target + (e.error ? ' (' + e.error + ')' : '')),
      ok: 'Replay',
    });
    if (ok === null) return;
    message('Replaying…');
    // Only what the person saw: entries that arrive meanwhile stay for another look.
    const seq = filter.seq || ((Math.min(...plan.entries.map((e) => e.seq))) + '-' + last);
    const r = await api('api/dlq/replay', { ...filter, seq, rate });
    message(summarizeReplay(r), r.failed > 0);
    $('dlq-detail').hidden = true;
    dlqState.selected = null;
    loadDLQ();
  } catch (err) {
    message('Replay failed: ' + err.message, true);
  }
}

async function dryRun(filter) {
  try {
    const plan = await api('api/dlq/replay', { ...filter, dry_run: true });
    message(summarizeReplay(plan) + ' ' + plan.entries.map((e) => '#' + e.seq + ' → ' + e.target + (e.error ? ' (' + e.error + ')' : '')).join(', '));
  } catch (err) {
    message('Dry run failed: ' + err.message, true);
  }
}

async function purge(filter, what) {
  try {
    const plan = await api('api/dlq/purge', { ...filter, dry_run: true });
    if (plan.matched === 0) { message('Nothing to purge: no entry matches.'); return; }
    const n = plan.matched;
    const v = await dialog({
      title: 'Purge ' + what + ' for good?',
      text: n + ' entr' + (n === 1 ? 'y is' : 'ies are') + ' deleted from WECHATPAY_DLQ and cannot be replayed afterwards. Type ' + n + ' to confirm.',
      list: plan.seqs.slice(0, 20).map((s) => '#' + s),
      input: { caption: 'Entries' }, ok: 'Purge', danger: true,
      check: (x) => (Number(x.trim()) === n ? '' : 'Type ' + n + ', the number of entries.'),
    });
    if (v === null) return;
    const seq = filter.seq || (Math.min(...plan.seqs) + '-' + Math.max(...plan.seqs));
    const r = await api('api/dlq/purge', { ...filter, seq, confirm: n });
    message('Purged ' + r.purged + ' of ' + r.matched + ' entries from WECHATPAY_DLQ.' + (r.errors ? ' ' + r.errors.join(' ') : ''), !!r.errors);
    $('dlq-detail').hidden = true;
    dlqState.selected = null;
    loadDLQ();
  } catch (err) {
    message('Purge failed: ' + err.message, true);
  }
}

const selectedFilter = () => ({ seq: String($('dlq-detail').dataset.seq) });
$('dlq-filter').addEventListener('submit', (e) => { e.preventDefault(); message(''); loadDLQ(); });
$('dlq-reason').addEventListener('change', () => loadDLQ());
$('dlq-replay').addEventListener('click', () => replay(selectedFilter(), 'entry #' + $('dlq-detail').dataset.seq));
$('dlq-dry-run').addEventListener('click', () => dryRun(selectedFilter()));
$('dlq-purge').addEventListener('click', () => purge(selectedFilter(), 'entry #' + $('dlq-detail').dataset.seq));
$('dlq-replay-all').addEventListener('click', () => replay(dlqFilter(), 'the matching entries'));
$('dlq-purge-all').addEventListener('click', () => purge(dlqFilter(), 'the matching entries'));

// ---- health ------------------------------------------------------------------------------------------

function stat(label, value) { return el('div', {}, el('b', { text: value }), el('span', { text: label })); }

async function loadHealth() {
  try {
    const h = await api('api/health');
    $('health-updated').textContent = clock(h.now);
    const streams = $('health-streams');
    clear(streams);
    for (const s of h.streams) {
      streams.append(el('div', { class: 'card', 'data-stream': s.name },
        el('h3', {}, s.name, s.error ? el('span', { class: 'down', text: 'unavailable' }) : null),
        s.error ? el('p', { class: 'error', text: s.error }) : el('div', {},
          el('div', { class: 'big', text: num(s.messages) }),
          el('div', { class: 'sub', text: 'messages · ' + bytes(s.bytes) + ' · ' +
            (s.subjects.length ? s.subjects.join(' ') : 'copies ' + (s.sources || []).join(', ')) }),
          el('div', { class: 'stats' }, stat('first seq', num(s.first_seq)), stat('last seq', num(s.last_seq)),
            stat('last message', s.last_time && s.messages ? ago(s.last_time, h.now) + ' ago' : '—')))));
    }
    const c = h.consumer;
    const cons = $('health-consumer');
    clear(cons);
    const pulling = c.waiting === 1 ? '1 pull request waiting' : c.waiting + ' pull requests waiting';
    cons.append(el('div', { class: 'card', 'data-consumer': c.name },
      el('h3', {}, el('span', {}, el('code', { text: c.name }), ' on WECHATPAY_INBOUND')),
      c.error ? el('p', { class: 'state down', text: 'unavailable' }) : el('p', { class: 'state ' + (c.waiting > 0 ? 'up' : 'down'), text: c.waiting > 0 ? pulling : 'no consumer pulling' }),
      c.error ? el('p', { class: 'error', text: c.error }) : el('div', { class: 'stats' },
        stat('pending (lag)', num(c.pending)), stat('ack pending', num(c.ack_pending)), stat('redelivered', num(c.redelivered)))));
    const progs = $('health-programs');
    clear(progs);
    for (const p of h.programs) {
      const card = el('div', { class: 'card', 'data-program': p.name },
        el('h3', {}, p.name, el('span', { class: p.up ? 'up' : 'down', text: p.up ? 'up · ' + p.url : 'down' })));
      if (p.error) card.append(el('p', { class: 'muted', text: p.error }));
      for (const g of p.groups || []) {
        const t = el('table', { class: 'small', 'data-group': g.key },
          el('thead', {}, el('tr', {}, el('th', { text: g.title }), el('th', { class: 'num', text: 'total' }), el('th', { class: 'num', text: 'rate' }))));
        const tb = el('tbody');
        for (const r of g.rows) tb.append(el('tr', {}, el('td', { class: 'mono', text: r.label || '—' }), el('td', { class: 'num', text: num(r.value) }), el('td', { class: 'num', text: perSec(r.rate) })));
        tb.append(el('tr', {}, el('th', { text: 'all' }), el('th', { class: 'num', text: num(g.total) }), el('th', { class: 'num', text: perSec(g.rate) })));
        t.append(tb);
        card.append(t);
      }
      progs.append(card);
    }
  } catch (err) {
    $('health-updated').textContent = 'failed: ' + err.message;
  }
}

// ---- views -------------------------------------------------------------------------------------------

let healthTimer = null;
function route() {
  const view = (location.hash.match(/^#\/(\w+)/) || [null, 'live'])[1];
  const known = ['live', 'dlq', 'health'].includes(view) ? view : 'live';
  for (const v of ['live', 'dlq', 'health']) {
    $('view-' + v).hidden = v !== known;
    $('nav-' + v).classList.toggle('active', v === known);
  }
  clearInterval(healthTimer);
  if (known === 'dlq') loadDLQ();
  if (known === 'health') { loadHealth(); healthTimer = setInterval(loadHealth, 5000); }
}
window.addEventListener('hashchange', route);

async function start() {
  try {
    info = await api('api/info');
  } catch (err) {
    setStatus('error', err.message);
    return;
  }
  const types = $('live-type');
  if (types.options.length === 1) {
    const families = [...new Set(info.event_types.map((t) => t.split('.')[0]))];
    for (const f of families) types.append(el('option', { value: f + '.*', text: f + '.*' }));
    for (const t of info.event_types) types.append(el('option', { value: t, text: t }));
    for (const r of info.reasons) $('dlq-reason').append(el('option', { value: r, text: r }));
  }
  showAuth();
  route();
  follow();
  if (!location.hash.startsWith('#/dlq')) loadDLQ(); // the count beside "Dead letters"
}
start();
