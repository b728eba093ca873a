// pool.js — the pool: nodes and devices, connected or not, their clock
// sync (uncertainty, offset, drift, age), battery, and a plot of the clock
// uncertainty of the devices ticked in the table. Built for 1024 devices:
// rows are made once and only the rows of devices that changed are
// rewritten.
import { api } from './api.js';
import { store, canAct } from './store.js';
import { el, ago, micros, badge, say, timeSeries } from './ui.js';

const PLOT_MAX = 8;
const PAGE = 100;

export function poolView(main) {
  const rows = new Map(); // device id -> <tr>, of the page shown
  let page = 0;
  let known = 0; // devices in the store when the page was made
  const plotted = new Set();
  let chart = null;
  let chartKey = '';
  const status = el('p', { role: 'status', class: 'status' });
  const filter = el('input', { id: 'device-filter', type: 'search', placeholder: 'id, node or state' });
  const summary = el('p', { id: 'pool-summary', class: 'summary' });
  const nodesBody = el('tbody');
  const devicesBody = el('tbody', { id: 'devices-body' });
  const plotBox = el('div', { id: 'uncertainty-plot', class: 'plot' });
  const prev = el('button', { type: 'button', id: 'devices-prev' }, 'Previous page');
  const next = el('button', { type: 'button', id: 'devices-next' }, 'Next page');
  const pagerText = el('span', { id: 'devices-page', role: 'status' });
  const pager = el('div', { class: 'toolbar', hidden: true }, prev, pagerText, next);
  const syncButton = el('button', {
    type: 'button', id: 'sync-now', disabled: !canAct(),
    onclick: async () => {
      try {
        const r = await api('POST', '/sync', {});
        say(status, `clock sync requested on ${Object.keys(r.nodes).length} node(s)`);
      } catch (e) { say(status, e.message, true); }
    },
  }, 'Sync clocks now');

  // a browser device: an enrollment link (docs/gateway.md, "Browser devices")
  const enrollId = el('input', { id: 'enroll-id', pattern: '[A-Za-z0-9._:-]{1,63}', placeholder: 'phone-7', required: true });
  const enrollOut = el('p', { id: 'enroll-link', role: 'status' });
  const enrollForm = el('form', {
    id: 'enroll',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const r = await api('POST', '/devices/enroll', { device_id: enrollId.value });
        const url = new URL(r.link, location.href).href;
        enrollOut.replaceChildren('Open this link on the phone or laptop (it holds the device\'s credential): ',
          el('a', { href: url, target: '_blank', rel: 'noopener' }, url), ` — it joins node ${r.node_id}.`);
      } catch (err) { say(enrollOut, err.message, true); }
    },
  }, el('div', { class: 'toolbar' }, el('label', { for: 'enroll-id' }, 'New browser device id'), enrollId,
    el('button', { type: 'submit', disabled: !canAct() }, 'Make an enrollment link')), enrollOut);

  main.replaceChildren(
    el('h2', {}, 'Pool'),
    summary,
    el('section', { 'aria-labelledby': 'nodes-h' },
      el('h3', { id: 'nodes-h' }, 'Nodes'),
      el('div', { class: 'scroll' }, el('table', { id: 'nodes-table' },
        el('thead', {}, el('tr', {}, ['Node', 'State', 'Devices', 'CPU load', 'Memory free', 'Last seen']
          .map((h) => el('th', { scope: 'col' }, h)))),
        nodesBody))),
    el('section', { 'aria-labelledby': 'plot-h' },
      el('h3', { id: 'plot-h' }, 'Clock uncertainty'),
      el('p', { class: 'hint' }, `Tick up to ${PLOT_MAX} devices in the table to plot them; the first connected ones are plotted otherwise.`),
      plotBox),
    el('section', { 'aria-labelledby': 'devices-h' },
      el('h3', { id: 'devices-h' }, 'Devices'),
      el('div', { class: 'toolbar' },
        el('label', { for: 'device-filter' }, 'Filter devices'), filter, syncButton),
      status, pager,
      el('div', { class: 'scroll' }, el('table', { id: 'devices-table' },
        el('colgroup', {}, ...Array.from({ length: 9 }, () => el('col'))),
        el('thead', {}, el('tr', {}, ['Plot', 'Device', 'Node', 'State', 'Uncertainty', 'Offset', 'Drift', 'Measured', 'Battery']
          .map((h) => el('th', { scope: 'col' }, h)))),
        devicesBody))),
    el('section', { 'aria-labelledby': 'enroll-h' },
      el('h3', { id: 'enroll-h' }, 'Add a browser device'),
      el('p', { class: 'hint' }, 'A phone or laptop joins the pool from its browser: camera video, motion, orientation.'),
      enrollForm));

  function nodeRows() {
    nodesBody.replaceChildren(...Object.values(store.nodes).map((n) => el('tr', {},
      el('th', { scope: 'row' }, n.node_id), el('td', {}, badge(n.state)),
      el('td', {}, String(n.device_count ?? 0)),
      el('td', {}, n.cpu_load !== undefined ? `${(100 * n.cpu_load / (n.cpu_cores || 1)).toFixed(0)} %` : '–'),
      el('td', {}, n.mem_available_bytes ? `${(n.mem_available_bytes / 2 ** 30).toFixed(1)} GiB` : '–'),
      el('td', {}, ago(n.last_seen_ns)))));
  }

  function fillRow(tr, d) {
    const c = d.clock;
    const cells = tr.children;
    cells[3].replaceChildren(badge(d.connected ? 'connected' : 'disconnected'));
    if (!d.connected && d.disconnect_reason) cells[3].title = d.disconnect_reason;
    cells[4].textContent = c ? micros(c.uncertainty_ns) : 'not synced';
    cells[5].textContent = c ? `${(c.offset_ns / 1e6).toFixed(3)} ms` : '–';
    cells[6].textContent = c ? `${c.drift_ppm.toFixed(1)} ppm` : '–';
    cells[7].textContent = c ? ago(c.measured_at_ns) : '–';
    cells[8].textContent = d.battery !== undefined && d.battery !== null ? `${(d.battery * 100).toFixed(0)} %` : '–';
  }

  // One row made by cloning a template (1024 of them in a few ms); the
  // checkboxes share one listener on the table body.
  const rowTemplate = el('tr', {}, el('td', {}, el('input', { type: 'checkbox' })), el('th', { scope: 'row' }),
    el('td'), el('td'), el('td'), el('td'), el('td'), el('td'), el('td'));
  function makeRow(d) {
    const tr = rowTemplate.cloneNode(true);
    tr.dataset.device = d.device_id;
    tr.children[0].firstChild.setAttribute('aria-label', `plot ${d.device_id}`);
    tr.children[0].firstChild.checked = plotted.has(d.device_id);
    tr.children[1].textContent = d.device_id;
    tr.children[2].textContent = d.node_id;
    fillRow(tr, d);
    return tr;
  }
  devicesBody.addEventListener('change', (e) => {
    const id = e.target.closest('tr').dataset.device;
    if (e.target.checked && plotted.size >= PLOT_MAX) { e.target.checked = false; return; }
    if (e.target.checked) plotted.add(id); else plotted.delete(id);
    drawPlot(true);
  });

  // The table shows one page of PAGE devices (of those the filter
  // matches): laying out 1024 rows took Chromium 150-500 ms on a loaded
  // 2-core machine; a page of 100 is drawn in a frame. Rows of the page
  // are rewritten when their device changes; the page is made again when
  // devices come or go, the filter or the page changes.
  function searchOf(d) {
    return `${d.device_id} ${d.node_id} ${d.connected ? 'connected' : 'disconnected'}`.toLowerCase();
  }

  function renderPage() {
    const q = filter.value.trim().toLowerCase();
    const ids = Object.keys(store.devices).filter((id) => !q || searchOf(store.devices[id]).includes(q));
    const pages = Math.max(1, Math.ceil(ids.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = ids.slice(page * PAGE, (page + 1) * PAGE);
    rows.clear();
    const frag = document.createDocumentFragment();
    for (const id of shown) {
      const tr = makeRow(store.devices[id]);
      rows.set(id, tr);
      frag.append(tr);
    }
    devicesBody.replaceChildren(frag);
    known = Object.keys(store.devices).length;
    pager.hidden = pages === 1;
    pagerText.textContent = ids.length ? `devices ${page * PAGE + 1}–${page * PAGE + shown.length} of ${ids.length}` : 'no device matches';
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  filter.addEventListener('input', () => { page = 0; renderPage(); });
  prev.addEventListener('click', () => { page -= 1; renderPage(); });
  next.addEventListener('click', () => { page += 1; renderPage(); });

  function someRows(ids) {
    if (Object.keys(store.devices).length !== known || ids.some((id) => !store.devices[id])) {
      renderPage(); // devices came or went
      return;
    }
    for (const id of ids) {
      const tr = rows.get(id);
      if (tr) fillRow(tr, store.devices[id]);
    }
  }

  function plottedIds() {
    const ids = [...plotted].filter((id) => store.devices[id]);
    if (ids.length) return ids;
    return Object.values(store.devices).filter((d) => d.connected && d.history.length)
      .slice(0, 6).map((d) => d.device_id);
  }

  function drawPlot(force) {
    if (!window.uPlot) return;
    const ids = plottedIds();
    const key = ids.join(',');
    if (force || key !== chartKey || !chart) {
      if (chart) chart.destroy();
      plotBox.replaceChildren();
      // its width from the window, not the box: reading the box's width
      // would lay out the whole page (1024 rows) there and then
      chart = timeSeries(plotBox, 'Clock uncertainty (µs)', ids, 'µs', Math.min(window.innerWidth - 48, 900));
      chartKey = key;
    }
    const xs = [...new Set(ids.flatMap((id) => store.devices[id].history.map((p) => p[0])))].sort((a, b) => a - b);
    const data = [xs.map((x) => x / 1000)];
    for (const id of ids) {
      const m = new Map(store.devices[id].history.map((p) => [p[0], p[1]]));
      data.push(xs.map((x) => (m.has(x) ? m.get(x) : null)));
    }
    chart.setData(data);
  }

  function renderSummary() {
    const devices = Object.values(store.devices);
    const connected = devices.filter((d) => d.connected).length;
    const synced = devices.filter((d) => d.connected && d.clock).length;
    const up = Object.values(store.nodes).filter((n) => n.state === 'up').length;
    summary.textContent = `${up} of ${Object.keys(store.nodes).length} nodes up · ${connected} of ${devices.length} devices connected · ${synced} synced`;
  }

  let plotDue = false;
  function update(what) {
    const t0 = performance.now();
    if (what.snapshot || what.nodes.length) nodeRows();
    if (what.snapshot) renderPage(); else if (what.devices.length) someRows(what.devices);
    if (what.snapshot || what.devices.length || what.nodes.length) renderSummary();
    // the plot at most once a second: it is the costly part
    if ((what.snapshot || what.devices.length) && !plotDue) {
      plotDue = true;
      setTimeout(() => { plotDue = false; drawPlot(false); }, what.snapshot ? 0 : 1000);
    }
    window.msrsLastRenderMs = performance.now() - t0;
  }
  update({ snapshot: true, nodes: [], devices: [], sessions: [] });
  return { update, destroy() { if (chart) chart.destroy(); } };
}
