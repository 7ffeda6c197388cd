// Load generator for benchmarks/gateway_fanout.py: N raw-socket WebSocket clients, each
// subscribed to K of the benchmark cameras through the camfleet /ws protocol.
// Adapted from ../shared/bench/ws-baseline/loadgen_raw.js (same measurement, same stdin
// commands: start / stop / exit); only the handshake (bearer token, subprotocol) and the
// subscribe line differ. Latency = receive time - the event's "ts" (ms, integer: up to 1 ms
// of truncation is included in every figure).
// usage: node gateway_loadgen.js WS_URL N CAMS CAMS_PER_CLIENT TOKEN
'use strict';
const net = require('net');
const crypto = require('crypto');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const [URL_, N, NCAMS, K, TOKEN] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5], process.argv[6]];
const u = new URL(URL_);
const HOST = u.hostname, PORT = +u.port, PATH = u.pathname || '/';
const CONC = 200;
const now = () => performance.timeOrigin + performance.now();
const RES = 20, MAXB = 60000 * RES;
let hist = new Uint32Array(MAXB + 1), whist = new Uint32Array(MAXB + 1);
let measuring = false, recv = 0, wrecv = 0, tStart = 0, wT = 0, cpuStart = null, maxLat = 0, bad = 0, wins = [], wrates = [];
let opened = 0, subscribed = 0, closed = 0, errors = 0, started = 0, failed = 0, reported = false;
const eld = monitorEventLoopDelay({ resolution: 10 }); eld.enable();
const TS = Buffer.from('"ts":');
const EV = Buffer.from('{"type":"event"');
function cam(i) { return 'bench/cam' + String(i % NCAMS).padStart(2, '0'); }
function onFrame(buf, s, e) {
  if (!measuring) return;
  if (buf.compare(EV, 0, EV.length, s, s + EV.length) !== 0) { bad++; return; }
  const t = now();
  const i = buf.indexOf(TS, s);
  if (i < 0 || i >= e) { bad++; return; }
  let j = i + 5; while (j < e && buf[j] !== 44 && buf[j] !== 125) j++;
  const lat = t - parseFloat(buf.latin1Slice(i + 5, j));
  recv++; wrecv++;
  if (lat > maxLat) maxLat = lat;
  let b = Math.round(lat * RES); if (b < 0) b = 0; if (b > MAXB) b = MAXB;
  hist[b]++; whist[b]++;
}
function maskedText(str) {
  const p = Buffer.from(str); const m = crypto.randomBytes(4);
  let h;
  if (p.length < 126) h = Buffer.from([0x81, 0x80 | p.length]);
  else { h = Buffer.from([0x81, 0x80 | 126, 0, 0]); h.writeUInt16BE(p.length, 2); }
  for (let k = 0; k < p.length; k++) p[k] ^= m[k & 3];
  return Buffer.concat([h, m, p]);
}
function connectOne(idx) {
  const sock = net.connect(PORT, HOST);
  sock.setNoDelay(true);
  let state = 0, pend = null, wasOpen = false;
  const key = crypto.randomBytes(16).toString('base64');
  sock.on('connect', () => sock.write(`GET ${PATH} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: camfleet.v1\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`));
  sock.on('data', (chunk) => {
    let buf = pend ? Buffer.concat([pend, chunk]) : chunk; pend = null;
    let o = 0;
    if (state === 0) {
      const h = buf.indexOf('\r\n\r\n'); if (h < 0) { pend = buf; return; }
      if (!buf.latin1Slice(0, 12).includes('101')) { sock.destroy(); return; }
      state = 1; wasOpen = true; opened++;
      const cams = []; for (let k = 0; k < K; k++) cams.push(cam(idx * K + k));
      sock.write(maskedText(JSON.stringify({ type: 'subscribe', cameras: cams })));
      subscribed++; next(); check();
      o = h + 4;
    }
    const L = buf.length;
    while (o + 2 <= L) {
      const b0 = buf[o], b1 = buf[o + 1] & 0x7f; let hl = 2, len = b1;
      if (b1 === 126) { if (o + 4 > L) break; len = buf.readUInt16BE(o + 2); hl = 4; }
      else if (b1 === 127) { if (o + 10 > L) break; len = Number(buf.readBigUInt64BE(o + 2)); hl = 10; }
      if (o + hl + len > L) break;
      const op = b0 & 0x0f;
      if (op === 1 || op === 2) onFrame(buf, o + hl, o + hl + len);
      else if (op === 8) { sock.end(); }
      else if (op === 9) { const p = buf.subarray(o + hl, o + hl + len); const m = Buffer.alloc(4); const f = Buffer.concat([Buffer.from([0x8a, 0x80 | p.length]), m, p]); sock.write(f); }
      o += hl + len;
    }
    if (o < L) pend = buf.subarray(o);
  });
  sock.on('error', () => { errors++; });
  sock.on('close', () => { closed++; if (!wasOpen) { failed++; next(); check(); } });
}
function next() { if (started < N) connectOne(started++); }
const tc0 = now();
function check() { if (!reported && subscribed + failed === N) { reported = true; console.log('CONNECTED ' + subscribed + ' ' + ((now() - tc0) / 1000).toFixed(2)); } }
for (let k = 0; k < Math.min(CONC, N); k++) next();
function wpct(h, n, p) { const target = Math.ceil(n * p); let acc = 0; for (let b = 0; b <= MAXB; b++) { acc += h[b]; if (acc >= target) return b / RES; } return NaN; }
setInterval(() => { if (!measuring) return; const t = now(); wins.push(wpct(whist, wrecv, 0.99)); wrates.push(Math.round(wrecv / ((t - wT) / 1000))); whist.fill(0); wrecv = 0; wT = t; }, 5000);
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  for (const l of d.split('\n').map(s => s.trim())) {
    if (l === 'start') { hist.fill(0); whist.fill(0); recv = 0; wrecv = 0; maxLat = 0; bad = 0; wins = []; wrates = []; tStart = now(); wT = tStart; eld.reset(); cpuStart = process.cpuUsage(); measuring = true; }
    else if (l === 'stop') {
      measuring = false;
      const dur = (now() - tStart) / 1000, cpu = process.cpuUsage(cpuStart);
      console.log(JSON.stringify({ open: opened - closed, closed, errors, recv, dur, rate: recv / dur,
        p50: wpct(hist, recv, 0.5), p90: wpct(hist, recv, 0.9), p99: wpct(hist, recv, 0.99), p999: wpct(hist, recv, 0.999), max: maxLat, bad,
        win_p99: wins, win_rate: wrates, lg_loop_p99: eld.percentile(99) / 1e6, cpu_pct: 100 * (cpu.user + cpu.system) / 1e6 / dur }));
    } else if (l === 'exit') process.exit(0);
  }
});
