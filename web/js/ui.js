// ui.js — small DOM and formatting helpers the views share, and the two
// kinds of plot (uPlot, from npm): a time series and a sparkline.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function time(ns) {
  if (!ns) return '–';
  const d = new Date(ns / 1e6);
  return d.toLocaleString(undefined, { hour12: false });
}

export function ago(ns) {
  if (!ns) return '–';
  const s = (Date.now() - ns / 1e6) / 1000;
  if (s < 1) return 'now';
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function seconds(ns) {
  return ns ? `${(ns / 1e9).toFixed(1)} s` : '–';
}

export function bytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  const i = Math.min(u.length - 1, Math.floor(Math.log10(n) / 3));
  return `${(n / 10 ** (3 * i)).toFixed(i ? 1 : 0)} ${u[i]}`;
}

export function micros(ns) {
  return ns === undefined || ns === null ? '–' : `${(ns / 1e3).toFixed(0)} µs`;
}

export function badge(state) {
  return el('span', { class: `badge badge-${state}`, text: state });
}

// A message in the view's status line (role=status): errors from the API
// are shown as the gateway said them.
export function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle('error', isError);
}

// A time series: x in seconds since the epoch, one series per label.
export function timeSeries(target, title, labels, unit, width) {
  const opts = {
    title,
    width: width || Math.min(target.clientWidth || 640, 900),
    height: 200,
    series: [{}, ...labels.map((label, i) => ({
      label, stroke: `hsl(${(i * 137) % 360} 70% 40%)`, width: 1.5, spanGaps: true,
      value: (u, v) => (v === null || v === undefined ? '–' : `${v.toFixed(0)} ${unit}`),
    }))],
    axes: [{}, { label: unit, size: 60 }],
    scales: { x: { time: true } },
  };
  return new window.uPlot(opts, [[], ...labels.map(() => [])], target);
}

// A sparkline: the last values of a stream, no axes.
export function sparkline(target, values) {
  const opts = {
    width: 140, height: 32,
    cursor: { show: false }, legend: { show: false }, select: { show: false },
    axes: [{ show: false }, { show: false }],
    scales: { x: { time: false } },
    series: [{}, { stroke: '#2a6f97', width: 1 }],
  };
  const u = new window.uPlot(opts, [values.map((_, i) => i), values], target);
  return {
    set(v) { u.setData([v.map((_, i) => i), v]); },
    destroy() { u.destroy(); },
  };
}
