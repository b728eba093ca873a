// api.js — the one way the page talks to msrs-gateway: `api()` for REST
// below /api/v1 (the login cookie goes with every request), and `Feed`, the
// live WebSocket that reconnects by itself and resumes from the last
// revision it saw (docs/gateway.md).

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (method === 'POST') { // the gateway takes JSON bodies only
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const r = await fetch('/api/v1' + path, init);
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = { message: text }; }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

// The feed: onMessage(msg) for every snapshot and change, onStatus(text,
// ok) when the connection comes or goes. A lost connection is retried
// after 0.5 s, doubling to 5 s; it asks for what followed the last
// revision it applied (since=EPOCH:REV), and the gateway answers with those
// changes or, when it cannot (another gateway, or too far behind), with a
// snapshot.
export class Feed {
  constructor(onMessage, onStatus) {
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.epoch = null;
    this.rev = 0;
    this.retryMs = 500;
    this.closed = false;
  }

  start() {
    if (this.closed) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const since = this.epoch ? `?since=${this.epoch}:${this.rev}` : '';
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/feed${since}`, 'msrs-feed');
    this.ws = ws;
    ws.onopen = () => { this.retryMs = 500; this.onStatus('live', true); };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      this.epoch = msg.epoch;
      this.rev = msg.rev;
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.closed) return;
      this.onStatus(`reconnecting in ${(this.retryMs / 1000).toFixed(1)} s`, false);
      setTimeout(() => this.start(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
  }

  stop() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}
