// The Node.js peer of ../shared/bench/ws-baseline/server_node.js (ws + ioredis, one XREAD BLOCK
// reader per camera, each event serialised once, slow clients skipped past 1 MiB buffered),
// adapted only so that the same publisher and load generator drive it: it reads the camfleet
// stream keys (field `e`), accepts camfleet's subscribe message and frames events the way the
// gateway does. No auth, no validation: it is the "fast and plain" reference.
// env: PORT, REDIS_PORT, CAMS. Needs `ws` and `ioredis` on NODE_PATH.
'use strict';
const { WebSocketServer } = require('ws');
const Redis = require('ioredis');
const PORT = +(process.env.PORT || 8765), RPORT = +(process.env.REDIS_PORT || 6399);
const NCAMS = +(process.env.CAMS || 50);
const cams = Array.from({ length: NCAMS }, (_, i) => 'bench/cam' + String(i).padStart(2, '0'));
const subs = new Map(cams.map(c => [c, new Set()]));
const MAXBUF = 1 << 20;
let dropped = 0;

const wss = new WebSocketServer({ host: '127.0.0.1', port: PORT, perMessageDeflate: false,
                                  clientTracking: false, backlog: 4096 });
wss.on('connection', (ws) => {
  const mine = [];
  ws.on('message', (data) => {
    try {
      const m = JSON.parse(data);
      if (m.type === 'subscribe') for (const c of m.cameras) if (subs.has(c)) { subs.get(c).add(ws); mine.push(c); }
    } catch (e) {}
  });
  ws.on('close', () => { for (const c of mine) subs.get(c).delete(ws); });
  ws.on('error', () => {});
});

async function reader(cam) {
  const r = new Redis({ port: RPORT, host: '127.0.0.1', enableAutoPipelining: false });
  const key = 'camfleet:events:' + cam; let last = '$';
  const set = subs.get(cam);
  for (;;) {
    let res;
    try { res = await r.xread('COUNT', 100, 'BLOCK', 5000, 'STREAMS', key, last); }
    catch (e) { await new Promise(r => setTimeout(r, 100)); continue; }
    if (!res) continue;
    for (const [, entries] of res) for (const [id, fields] of entries) {
      last = id;
      if (set.size === 0) continue;
      const msg = Buffer.from('{"type":"event","camera":"' + cam + '","id":"' + id + '","event":' + fields[1] + '}');
      for (const c of set) {
        if (c.readyState !== 1) continue;
        if (c.bufferedAmount > MAXBUF) { dropped++; continue; }
        c.send(msg, { binary: false });
      }
    }
  }
}
cams.forEach(reader);
process.on('SIGTERM', () => process.exit(0));
console.log('ready');
