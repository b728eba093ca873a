// device.js — a browser (a phone, a laptop) as a device of the pool
// (docs/protocol.md, docs/gateway.md "Browser devices"). The enrollment
// link the web app made carries, in its fragment (never sent to a server),
// the device id, its credential and the agent's device endpoint. The page
// proves the credential over the agent's nonce (WebCrypto HMAC-SHA256),
// says hello with the streams picked, answers clock probes from
// performance.timeOrigin + performance.now() (the page is served
// cross-origin isolated, so that timer is fine-grained), tags what it sends
// with the session whose [start_at, stop_at) holds its time, and reconnects
// by itself (the agent's resume continues its numbering). Streams: camera
// video (getUserMedia, encoded H.264 by WebCodecs, one binary frame per
// frame), motion (DeviceMotionEvent: acceleration x/y/z, rotation rate
// alpha/beta/gamma) and orientation (DeviceOrientationEvent: alpha, beta,
// gamma), as binary sample frames every 100 ms.

const params = new URLSearchParams(location.hash.slice(1));
const deviceId = params.get('device') || '';
const credential = params.get('cred') || '';
const agentUrl = params.get('agent') || '';

const $ = (id) => document.getElementById(id);
const VIDEO = { width: 320, height: 240, fps: 30, codec: 'avc1.42001f' };
const FLUSH_MS = 100;
const BUFFER_MAX_ROWS = 60 * 100; // rows kept while no agent reads them (~1 min at 100 Hz)

// The device clock: ns since the Unix epoch, as a BigInt (a Number cannot
// hold it to the ns).
function nowNs() {
  return BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n + BigInt(Math.round(performance.now() * 1e6));
}

// JSON with BigInts written as plain integers.
function toJson(obj) {
  return JSON.stringify(obj, (k, v) => (typeof v === 'bigint' ? `#big#${v}` : v)).replace(/"#big#(-?\d+)"/g, '$1');
}
// An integer field of a message as it was sent (JSON.parse would round it).
function bigField(text, name) {
  const m = text.match(new RegExp(`"${name}"\\s*:\\s*(-?\\d+)`));
  return m ? BigInt(m[1]) : null;
}

const dev = {
  registered: false, joined: false, slowed: false, resumes: 0, probes: 0, errors: [],
  sessions: [], // {id, start, stop} in the device clock (BigInt; stop null until known)
  streams: {}, // id -> {seq, rows, sent, inSessions: {sid: n}, dropped}
};
window.msrsDevice = dev; // what the page sent, for tests/gateway/browser_device.mjs

let ws = null;
let retryMs = 500;
let forceKey = true;
let encoder = null;
let frameIndex = 0;

function say(text, isError) {
  $('message').textContent = text;
  $('message').classList.toggle('error', !!isError);
  if (isError) dev.errors.push(text);
}

function stream(id) {
  return dev.streams[id];
}

function sessionAt(t) {
  for (const s of dev.sessions) if (t >= s.start && (s.stop === null || t < s.stop)) return s.id;
  return '';
}

function counted(st, sid, n) {
  st.sent += n;
  if (sid) st.inSessions[sid] = (st.inSessions[sid] || 0) + n;
}

// A binary frame: 4-byte big-endian header length, the JSON header, the body.
function sendFrame(header, body) {
  const h = new TextEncoder().encode(toJson(header));
  const buf = new Uint8Array(4 + h.length + body.byteLength);
  new DataView(buf.buffer).setUint32(0, h.length);
  buf.set(h, 4);
  buf.set(body instanceof Uint8Array ? body : new Uint8Array(body), 4 + h.length);
  ws.send(buf);
}

// Sample rows [t, v0, v1, ...] of one stream and one session as a binary
// samples frame: n timestamps (int64) then n × channels values (float64),
// little-endian.
function sendRows(id, rows, sid) {
  const st = stream(id);
  const n = rows.length;
  const ch = rows[0].length - 1;
  const body = new ArrayBuffer(n * 8 * (1 + ch));
  const dv = new DataView(body);
  rows.forEach((r, i) => {
    dv.setBigInt64(i * 8, r[0], true);
    for (let c = 0; c < ch; c++) dv.setFloat64((n + i * ch + c) * 8, r[1 + c], true);
  });
  const header = { type: 'samples', stream_id: id, seq: st.seq, n, channels: ch };
  if (sid) header.session_id = sid;
  sendFrame(header, body);
  st.seq += n;
  counted(st, sid, n);
}

function flush() {
  if (!dev.registered) return;
  for (const [id, st] of Object.entries(dev.streams)) {
    if (!st.rows || !st.rows.length) continue;
    let group = [];
    let tag = sessionAt(st.rows[0][0]);
    for (const r of st.rows) { // a batch that crosses an instant is split
      const t = sessionAt(r[0]);
      if (t !== tag) { sendRows(id, group, tag); group = []; tag = t; }
      group.push(r);
    }
    if (group.length) sendRows(id, group, tag);
    st.rows = [];
  }
  renderSent();
}

function addRow(id, row) {
  const st = stream(id);
  if (!st) return;
  st.rows.push(row);
  if (st.rows.length > BUFFER_MAX_ROWS) { st.rows.shift(); st.dropped += 1; st.seq += 1; } // a gap the agent counts
}

// ------------------------------------------------------------ protocol

function hello(nonce) {
  const streams = [];
  if (stream('rgb')) streams.push({ stream_id: 'rgb', type: 'rgb_video', rate_hz: VIDEO.fps, channels: 3, format: 'h264' });
  if (stream('motion')) streams.push({ stream_id: 'motion', type: 'imu', rate_hz: 60, channels: 6, format: 'float64' });
  if (stream('orientation')) streams.push({ stream_id: 'orientation', type: 'orientation', rate_hz: 60, channels: 3, format: 'float64' });
  const payload = { name: `browser ${navigator.userAgent.split(' ').pop()}`, capabilities: streams.map((s) => s.type), streams, version: 'msrs-web-device/1' };
  const send = (auth) => {
    if (auth) payload.auth = auth;
    ws.send(toJson({ id: 'hello', type: 'hello', ts: nowNs(), device_id: deviceId, payload }));
  };
  if (!nonce) { send(null); return; }
  const [gen, hex] = credential.split('.');
  const key = new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
  crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'])
    .then((k) => crypto.subtle.sign('HMAC', k, new TextEncoder().encode(`${nonce}:${deviceId}`)))
    .then((mac) => send({ generation: Number(gen), proof: [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, '0')).join('') }));
}

function onMessage(text) {
  const t2 = nowNs(); // as soon as it is here
  const m = JSON.parse(text);
  const p = m.payload || {};
  switch (m.type) {
    case 'challenge': hello(p.nonce); break;
    case 'register':
      if (!p.accepted) { say(`refused: ${p.reason}`, true); return; }
      dev.registered = true;
      dev.resumes += p.resume && Object.keys(p.resume).length ? 1 : 0;
      retryMs = 500;
      forceKey = true;
      setState(`registered on ${p.node_id}`);
      break;
    case 'time_req': {
      const t1 = bigField(text, 't1');
      dev.probes += 1;
      ws.send(`{"type":"time_resp","device_id":${JSON.stringify(deviceId)},"payload":{"t1":${t1},"t2":${t2},"t3":${nowNs()}}}`);
      break;
    }
    case 'start': {
      const start = bigField(text, 'start_at');
      const old = dev.sessions.find((s) => s.id === p.session_id);
      if (old) old.start = start; else dev.sessions.push({ id: p.session_id, start, stop: null });
      forceKey = true; // the session starts at a keyframe
      ws.send(toJson({ type: 'ack', payload: { ref_id: m.id || '', status: 'ok' } }));
      setState(`recording ${p.session_id}`);
      break;
    }
    case 'stop': {
      const s = dev.sessions.find((x) => x.id === p.session_id);
      if (s) s.stop = bigField(text, 'stop_at');
      ws.send(toJson({ type: 'ack', payload: { ref_id: m.id || '', status: 'ok' } }));
      setState(`registered; ${p.session_id} stops`);
      break;
    }
    case 'flow': dev.slowed = p.state === 'slow_down'; break;
    case 'error': say(`the agent says: ${p.code}: ${p.message}`, true); break;
    default: break;
  }
}

function connect() {
  setState('connecting');
  ws = new WebSocket(agentUrl, 'msrs.v1');
  ws.binaryType = 'arraybuffer';
  ws.onmessage = (e) => { if (typeof e.data === 'string') onMessage(e.data); };
  ws.onopen = () => { if (!credential) hello(null); }; // no challenge without credentials
  ws.onclose = () => {
    dev.registered = false;
    setState(`disconnected; again in ${(retryMs / 1000).toFixed(1)} s`);
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function setState(text) {
  $('state').textContent = text;
  $('clock').textContent = `${dev.probes} clock probes answered`;
}

function renderSent() {
  $('sent-body').replaceChildren(...Object.entries(dev.streams).map(([id, st]) => {
    const tr = document.createElement('tr');
    for (const v of [id, String(st.sent), Object.entries(st.inSessions).map(([s, n]) => `${s}: ${n}`).join(', ') || '–']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

// ------------------------------------------------------------ sources

function newStream(id) {
  dev.streams[id] = { seq: 0, rows: [], sent: 0, inSessions: {}, dropped: 0 };
}

async function startVideo() {
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: VIDEO.width, height: VIDEO.height, frameRate: VIDEO.fps } });
  const track = media.getVideoTracks()[0];
  const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
  const captured = new Map(); // frame timestamp (µs) -> device time (ns)
  encoder = new VideoEncoder({
    output: (chunk) => {
      const t = captured.get(chunk.timestamp);
      captured.delete(chunk.timestamp);
      const st = stream('rgb');
      if (!dev.registered) { // made while no agent reads it: lost, and numbered so the agent counts it
        forceKey = true;
        st.seq += 1;
        st.dropped += 1;
        return;
      }
      const data = new Uint8Array(chunk.byteLength);
      chunk.copyTo(data);
      const sid = sessionAt(t);
      const header = { stream_id: 'rgb', codec: 'h264', pts: frameIndex++, keyframe: chunk.type === 'key', seq: st.seq, ts: t, width: VIDEO.width, height: VIDEO.height };
      if (sid) header.session_id = sid;
      sendFrame(header, data);
      st.seq += 1;
      counted(st, sid, 1);
    },
    error: (e) => say(`video encoder: ${e.message}`, true),
  });
  encoder.configure({ codec: VIDEO.codec, width: VIDEO.width, height: VIDEO.height, bitrate: 400000, framerate: VIDEO.fps, avc: { format: 'annexb' }, latencyMode: 'realtime' });
  let n = 0;
  let lastSid = '';
  for (;;) {
    const { value: frame, done } = await reader.read();
    if (done) break;
    const t = nowNs();
    // a session's first frame is a keyframe (its video decodes from there);
    // slowed by the agent: one keyframe a second, as msrs-devsim does
    const sid = sessionAt(t);
    const keyFrame = forceKey || sid !== lastSid || n % VIDEO.fps === 0;
    if (encoder.encodeQueueSize < 4 && (!dev.slowed || keyFrame)) {
      captured.set(frame.timestamp, t);
      encoder.encode(frame, { keyFrame });
      forceKey = false;
      lastSid = sid;
    }
    frame.close();
    n += 1;
  }
}

function startMotion() {
  window.addEventListener('devicemotion', (e) => {
    const a = e.acceleration || {};
    const r = e.rotationRate || {};
    addRow('motion', [nowNs(), a.x ?? 0, a.y ?? 0, a.z ?? 0, r.alpha ?? 0, r.beta ?? 0, r.gamma ?? 0]);
  });
}

function startOrientation() {
  window.addEventListener('deviceorientation', (e) => addRow('orientation', [nowNs(), e.alpha ?? 0, e.beta ?? 0, e.gamma ?? 0]));
}

async function join(e) {
  e.preventDefault();
  if (dev.joined) return;
  if (!deviceId || !agentUrl) { say('This page needs the enrollment link the web app makes (#device=...&cred=...&agent=...).', true); return; }
  dev.joined = true;
  $('join-button').disabled = true;
  // iOS asks for motion on a user gesture
  if (typeof DeviceMotionEvent !== 'undefined' && DeviceMotionEvent.requestPermission) {
    try { await DeviceMotionEvent.requestPermission(); } catch (err) { say(`motion: ${err.message}`, true); }
  }
  if ($('send-video').checked) newStream('rgb');
  if ($('send-motion').checked) { newStream('motion'); startMotion(); }
  if ($('send-orientation').checked) { newStream('orientation'); startOrientation(); }
  if (stream('rgb')) {
    if (!window.VideoEncoder || !window.MediaStreamTrackProcessor) {
      delete dev.streams.rgb;
      say('This browser cannot encode video (WebCodecs): sending the other streams only.', true);
    } else {
      startVideo().catch((err) => say(`camera: ${err.message}`, true));
    }
  }
  setInterval(flush, FLUSH_MS);
  setInterval(() => { // status every 10 s
    if (!dev.registered) return;
    const send = (battery) => ws.send(toJson({ type: 'status', device_id: deviceId, payload: { battery, recording: dev.sessions.some((s) => s.stop === null) } }));
    if (navigator.getBattery) navigator.getBattery().then((b) => send(b.level)).catch(() => send(null)); else send(null);
  }, 10000);
  connect();
}

$('device-id').value = deviceId;
$('join').addEventListener('submit', join);
if (!crossOriginIsolated) say('not cross-origin isolated: clock stamps are coarser', true);
