// sessions.js — starting a session, watching one (requested →
// synchronized → recording → stopped, live counts and sparklines per
// stream, completeness with its reasons, the archive's files) and the list
// of past sessions.
import { api } from './api.js';
import { store, canAct } from './store.js';
import { el, time, seconds, bytes, micros, badge, say, sparkline } from './ui.js';

const SPARK_MAX = 32;

function field(id, label, input, hint) {
  input.id = id;
  return el('div', { class: 'field' }, el('label', { for: id }, label), input,
    hint ? el('small', { id: `${id}-hint` }, hint) : null);
}

// #/new: pick devices (or the whole pool), BIDS names, minimum group,
// duration; start.
export function newSessionView(main, go) {
  const status = el('p', { role: 'status', class: 'status' });
  const whole = el('input', { type: 'checkbox', checked: true });
  const list = el('fieldset', { id: 'device-picker', disabled: true },
    el('legend', {}, 'Devices'));
  const names = {
    subject: el('input', { name: 'subject', pattern: '[A-Za-z0-9]+', placeholder: '01' }),
    session: el('input', { name: 'session', pattern: '[A-Za-z0-9]+' }),
    task: el('input', { name: 'task', pattern: '[A-Za-z0-9]+', placeholder: 'rest' }),
    run: el('input', { name: 'run', pattern: '[A-Za-z0-9]+', placeholder: '1' }),
  };
  const minGroup = el('input', { type: 'number', min: 0, value: 0, name: 'min_group' });
  const duration = el('input', { type: 'number', min: 0, step: 'any', value: 60, name: 'duration_s' });
  const sessionId = el('input', { name: 'session_id', pattern: '[A-Za-z0-9._:-]{1,63}', placeholder: 'made from the time' });
  const start = el('button', { type: 'submit', id: 'start-session', disabled: !canAct() }, 'Start recording');

  function pickers() {
    const connected = Object.values(store.devices).filter((d) => d.connected);
    list.replaceChildren(el('legend', {}, `Devices (${connected.length} connected)`),
      ...connected.slice(0, 2048).map((d) => el('label', { class: 'pick' },
        el('input', { type: 'checkbox', value: d.device_id, name: 'device' }), ` ${d.device_id}`)));
  }
  whole.addEventListener('change', () => { list.disabled = whole.checked; });

  const form = el('form', {
    id: 'new-session',
    onsubmit: async (e) => {
      e.preventDefault();
      if (!form.reportValidity()) return;
      const labels = {};
      for (const [k, input] of Object.entries(names)) if (input.value) labels[k] = input.value;
      const req = {
        device_ids: whole.checked ? [] : [...list.querySelectorAll('input:checked')].map((i) => i.value),
        min_group: Number(minGroup.value || 0),
        duration_s: Number(duration.value || 0),
        labels,
      };
      if (sessionId.value) req.session_id = sessionId.value;
      if (!whole.checked && !req.device_ids.length) { say(status, 'Pick at least one device, or the whole pool.', true); return; }
      start.disabled = true;
      try {
        const r = await api('POST', '/sessions', req);
        say(status, `requested ${r.session_id}`);
        go(`#/sessions/${encodeURIComponent(r.session_id)}`);
      } catch (err) {
        say(status, err.message, true);
        start.disabled = !canAct();
      }
    },
  },
  el('div', { class: 'field' }, el('label', { class: 'pick' }, whole, ' The whole pool (every connected device)')),
  list,
  el('div', { class: 'grid' },
    field('f-subject', 'Subject', names.subject, 'BIDS: letters and digits'),
    field('f-session', 'Session (BIDS)', names.session),
    field('f-task', 'Task', names.task),
    field('f-run', 'Run', names.run),
    field('f-min-group', 'Minimum group', minGroup, 'devices that must be synchronised; 0: all'),
    field('f-duration', 'Duration (s)', duration, '0: until stopped'),
    field('f-session-id', 'Session id', sessionId, 'optional')),
  start,
  canAct() ? null : el('p', { class: 'hint' }, `Your role (${store.me.role}) can look, not start sessions.`));

  main.replaceChildren(el('h2', {}, 'New session'), form, status);
  pickers();
  return {
    update(what) { if (what.snapshot || what.devices.length) { const keep = new Set([...list.querySelectorAll('input:checked')].map((i) => i.value)); pickers(); for (const i of list.querySelectorAll('input')) i.checked = keep.has(i.value); } },
    destroy() {},
  };
}

// The streams of a session: live counts while it records, the agents'
// reported counts once it stopped.
function streamsOf(s, detail) {
  if (s.state === 'stopped' && detail && detail.streams) {
    return detail.streams.map((st) => ({ key: `${st.device_id}/${st.stream_id}`, ...st }));
  }
  return Object.entries(s.live || {}).map(([key, st]) => ({ key, ...st }));
}

// #/sessions/ID
export function sessionView(main, id) {
  const status = el('p', { role: 'status', class: 'status' });
  const head = el('div', { class: 'session-head' });
  const timeline = el('ol', { class: 'timeline', 'aria-label': 'State timeline' });
  const body = el('tbody', { id: 'streams-body' });
  const complete = el('div', { id: 'completeness' });
  const archive = el('div', { id: 'archive' });
  const sparks = new Map();
  let detail = null;
  let archived = false;
  const stop = el('button', {
    type: 'button', id: 'stop-session', disabled: !canAct(),
    onclick: async () => {
      stop.disabled = true;
      try {
        await api('POST', `/sessions/${encodeURIComponent(id)}/stop`, { reason: 'stopped from the web app' });
        say(status, 'stop requested');
      } catch (e) { say(status, e.message, true); stop.disabled = !canAct(); }
    },
  }, 'Stop recording');

  main.replaceChildren(el('h2', {}, 'Session ', el('span', { id: 'session-id' }, id)), head, status,
    el('section', { 'aria-labelledby': 'tl-h' }, el('h3', { id: 'tl-h' }, 'Timeline'), timeline),
    el('section', { 'aria-labelledby': 'st-h' }, el('h3', { id: 'st-h' }, 'Streams'),
      el('div', { class: 'scroll' }, el('table', { id: 'streams-table' },
        el('thead', {}, el('tr', {}, ['Device / stream', 'Samples', 'Bytes', 'Gaps', 'Dropped', 'Recent']
          .map((h) => el('th', { scope: 'col' }, h)))), body))),
    el('section', { 'aria-labelledby': 'cp-h' }, el('h3', { id: 'cp-h' }, 'Completeness'), complete),
    el('section', { 'aria-labelledby': 'ar-h' }, el('h3', { id: 'ar-h' }, 'Archive'), archive));

  let loading = false;
  let tries = 0;
  async function loadDetail() {
    if (loading || tries >= 3) return; // the feed's next change retries
    loading = true;
    tries += 1;
    try { detail = await api('GET', `/sessions/${encodeURIComponent(id)}`); tries = 0; } catch (e) { /* said below */ }
    loading = false;
    render();
  }

  // The archiver writes the archive after the stop: asked every 2 s until
  // it is there (at most 5 minutes).
  let archiveTimer = null;
  let archiveTries = 0;
  async function loadArchive() {
    if (archiveTimer || archived) return;
    try {
      const m = await api('GET', `/archives/${encodeURIComponent(id)}`);
      archived = true;
      const base = `/api/v1/archives/${encodeURIComponent(id)}/files/`;
      archive.replaceChildren(
        el('p', {}, `complete: ${m.complete ? 'yes' : 'no'} · XDF: `, m.xdf ? el('a', { href: base + m.xdf, download: m.xdf }, m.xdf) : '–'),
        el('ul', { id: 'archive-files' }, el('li', {}, el('a', { href: `${base}manifest.json`, download: 'manifest.json' }, 'manifest.json')),
          ...Object.entries(m.files).map(([name, f]) => el('li', {},
            el('a', { href: base + name.split('/').map(encodeURIComponent).join('/'), download: name.replaceAll('/', '_') }, name),
            ` ${bytes(f.bytes)}`))));
    } catch (e) {
      archive.replaceChildren(el('p', {}, e.status === 404 ? 'not archived yet' : e.message));
      if (archiveTries++ < 150) archiveTimer = setTimeout(() => { archiveTimer = null; loadArchive(); }, 2000);
    }
  }

  function render() {
    const s = store.sessions[id] || detail;
    if (!s) { head.replaceChildren(el('p', {}, 'no such session (yet)')); return; }
    head.replaceChildren(badge(s.state), ` requested by ${s.requested_by || '–'}`,
      s.labels && Object.keys(s.labels).length ? ` · ${Object.entries(s.labels).map(([k, v]) => `${k} ${v}`).join(', ')}` : '',
      s.state !== 'stopped' ? stop : '');
    const steps = [
      ['requested', s.requested_at_ns],
      ['synchronized', s.sync && s.sync.at_ns, s.sync ? ` (${typeof s.sync.devices === 'number' ? s.sync.devices : s.sync.devices.length} devices, worst ${micros(s.sync.max_uncertainty_ns)})` : ''],
      ['recording', s.start_at_ns],
      ['stopping', s.stop_at_ns],
      ['stopped', s.state === 'stopped' ? (s.stop_at_ns || s.requested_at_ns) : 0, s.reason ? ` (${s.reason}, ${seconds(s.duration_ns)})` : ''],
    ];
    timeline.replaceChildren(...steps.map(([name, at, extra]) => el('li', { class: at ? 'done' : 'todo', 'data-step': name },
      el('strong', {}, name), ' ', at ? time(at) : '…', extra || '')));
    const streams = streamsOf(s, detail);
    const rows = streams.map((st) => {
      const cell = el('td', { class: 'spark' });
      return { st, tr: el('tr', { 'data-stream': st.key }, el('th', { scope: 'row' }, st.key),
        el('td', { class: 'num' }, String(st.samples)), el('td', { class: 'num' }, bytes(st.bytes)),
        el('td', { class: 'num' }, String(st.gaps ?? '–')), el('td', { class: 'num' }, String(st.dropped ?? '–')), cell), cell };
    });
    body.replaceChildren(...rows.map((r) => r.tr));
    for (const sp of sparks.values()) sp.destroy();
    sparks.clear();
    if (window.uPlot) {
      for (const r of rows.slice(0, SPARK_MAX)) {
        if (r.st.spark && r.st.spark.length > 1) sparks.set(r.st.key, sparkline(r.cell, r.st.spark));
      }
    }
    if (s.state === 'stopped') {
      complete.replaceChildren(el('p', {}, s.complete ? 'Complete: every stream delivered what it recorded.' : 'Incomplete:'),
        s.incomplete && s.incomplete.length ? el('ul', { id: 'incomplete' }, ...s.incomplete.map((r) => el('li', {}, r))) : '');
      loadArchive();
      if (!detail || detail.state !== 'stopped') loadDetail();
    } else {
      complete.replaceChildren(el('p', {}, 'known when the session stops'));
      archive.replaceChildren(el('p', {}, 'archived after the session stops'));
    }
  }

  render();
  if (!store.sessions[id]) loadDetail();
  return {
    update(what) { if (what.snapshot || what.sessions.includes(id)) render(); },
    destroy() { for (const sp of sparks.values()) sp.destroy(); clearTimeout(archiveTimer); archiveTries = 1e9; },
  };
}

// #/sessions
export function sessionsView(main) {
  const body = el('tbody', { id: 'sessions-body' });
  main.replaceChildren(el('h2', {}, 'Sessions'),
    el('div', { class: 'scroll' }, el('table', { id: 'sessions-table' },
      el('thead', {}, el('tr', {}, ['Session', 'State', 'Requested by', 'Labels', 'Started', 'Duration', 'Complete', 'Archive']
        .map((h) => el('th', { scope: 'col' }, h)))), body)));
  function render() {
    const list = Object.values(store.sessions).sort((a, b) => (b.requested_at_ns || 0) - (a.requested_at_ns || 0));
    body.replaceChildren(...list.map((s) => el('tr', { 'data-session': s.session_id },
      el('th', { scope: 'row' }, el('a', { href: `#/sessions/${encodeURIComponent(s.session_id)}` }, s.session_id)),
      el('td', {}, badge(s.state)), el('td', {}, s.requested_by || '–'),
      el('td', {}, Object.entries(s.labels || {}).map(([k, v]) => `${k} ${v}`).join(', ')),
      el('td', {}, time(s.start_at_ns)), el('td', {}, seconds(s.duration_ns)),
      el('td', {}, s.state !== 'stopped' ? '–' : s.complete ? 'yes' : `no (${(s.incomplete || []).length} reasons)`),
      el('td', {}, s.archived ? 'archived' : '–'))));
  }
  render();
  return { update(what) { if (what.snapshot || what.sessions.length) render(); }, destroy() {} };
}
