// store.js — what the page knows: nodes, devices, sessions and alerts as
// the feed last said (objects keyed by id, replaced whole), and who listens.
// A listener gets what changed: {snapshot, nodes: [ids], devices: [ids],
// sessions: [ids], alerts}.

export const store = {
  nodes: {},
  devices: {},
  sessions: {},
  alerts: [],
  caughtUp: false,
  me: null,
  // feed delay, ms from a record's time (its producer's) to the page
  // having applied it (the newest record of each change), and ms each
  // message took to apply and render: read by bench/bench_gateway.py
  delays: [],
  oldestDelays: [], // the same from the oldest record of each change
  applyMs: [],
};

const listeners = new Set();

export function listen(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function merge(target, updates) {
  const ids = [];
  for (const [id, v] of Object.entries(updates || {})) {
    if (v === null) delete target[id];
    else target[id] = v;
    ids.push(id);
  }
  return ids;
}

export function apply(msg) {
  const t0 = performance.now();
  let what;
  if (msg.type === 'snapshot') {
    store.nodes = msg.nodes;
    store.devices = msg.devices;
    store.sessions = msg.sessions;
    store.alerts = msg.alerts || [];
    store.caughtUp = msg.caught_up;
    what = { snapshot: true, nodes: [], devices: [], sessions: [], alerts: true };
  } else {
    if (msg.caught_up !== undefined) store.caughtUp = msg.caught_up;
    what = {
      snapshot: false,
      nodes: merge(store.nodes, msg.nodes),
      devices: merge(store.devices, msg.devices),
      sessions: merge(store.sessions, msg.sessions),
      alerts: msg.alerts !== undefined,
    };
    if (msg.alerts) store.alerts = msg.alerts;
  }
  for (const fn of listeners) fn(what);
  keep(store.applyMs, performance.now() - t0);
  if (msg.newest_ns) keep(store.delays, Date.now() - msg.newest_ns / 1e6);
  if (msg.oldest_ns) keep(store.oldestDelays, Date.now() - msg.oldest_ns / 1e6);
}

function keep(list, v) {
  list.push(v);
  if (list.length > 10000) list.shift();
}

export function canAct() {
  return store.me && (store.me.role === 'operator' || store.me.role === 'admin');
}
