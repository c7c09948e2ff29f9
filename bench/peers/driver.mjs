// driver.mjs — the load generator saga-bench --peers runs against a peer
// (Restate's ingress or the DBOS app): one HTTP POST {"key": ...} per saga,
// answered when the whole five-step workflow has finished.
//
// Line protocol (stdin -> stdout), so that saga-bench samples the peer's CPU
// exactly over the measured window:
//   "run CONC WARM SECS"  closed loop, CONC sagas in flight; prints
//                          "measuring" once WARM s have passed and CONC sagas
//                          have finished (the loop has turned over once: at
//                          256 in flight a slow engine needs more than WARM),
//                          "stop DONE BAD SECS" once SECS more have passed
//                          and CONC sagas have finished in the window (an
//                          engine that finishes its sagas in waves would
//                          otherwise show 0; at most 10 x SECS), then
//                          (in-flight ones drained)
//                          "result P50 P99 MAX" in ms, of the sagas that
//                          finished inside the measured window;
//   "count N"             N sagas one after the other, then "counted N BAD".
// Keys are unique per driver run; a failed saga (status != 200) counts as BAD.
import http from 'node:http';
import readline from 'node:readline';

const url = new URL(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: 4096 });
const runId = `${Date.now().toString(36)}-${process.pid}`;
let seq = 0;

function oneSaga() {
  return new Promise((resolve) => {
    const body = JSON.stringify({ key: `${runId}-${seq++}` });
    const t0 = process.hrtime.bigint();
    const req = http.request(url, {
      method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.on('data', (d) => { if (res.statusCode !== 200) text += d; });
      res.on('end', () => {
        if (res.statusCode !== 200) failed(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
        resolve({ ok: res.statusCode === 200, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
      });
    });
    req.on('error', (e) => { failed(String(e)); resolve({ ok: false, ms: 0 }); });
    req.end(body);
  });
}

// The first few failures go to stderr (saga-bench keeps it as driver.log).
let failures = 0;
function failed(why) {
  if (failures++ < 5) process.stderr.write(`saga failed: ${why}\n`);
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : 0;
}

async function closedLoop(conc, warm, secs) {
  let measuring = false, stopped = false, warmed = false, done = 0, bad = 0, turned = 0;
  let tMeas = 0n, minTimer = null, capTimer = null, minPassed = false;
  const lat = [];
  function stop() {
    if (stopped) return;
    stopped = true;
    const s = Number(process.hrtime.bigint() - tMeas) / 1e9;
    process.stdout.write(`stop ${done} ${bad} ${s.toFixed(3)}\n`);
  }
  function maybeStop() {
    if (measuring && minPassed && done + bad >= conc) stop();
  }
  function maybeMeasure() {
    if (measuring || !warmed || turned < conc) return;
    measuring = true;
    tMeas = process.hrtime.bigint();
    process.stdout.write('measuring\n');
    minTimer = setTimeout(() => { minPassed = true; maybeStop(); }, secs * 1000);
    capTimer = setTimeout(stop, secs * 10000);
  }
  const warmTimer = setTimeout(() => { warmed = true; maybeMeasure(); }, warm * 1000);
  async function worker() {
    while (!stopped) {
      const r = await oneSaga();
      turned++;
      if (measuring && !stopped) {
        if (r.ok) { done++; lat.push(r.ms); } else bad++;
      }
      maybeMeasure();
      maybeStop();
      if (!r.ok && !stopped) await new Promise((w) => setTimeout(w, 10));
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  clearTimeout(warmTimer);
  clearTimeout(minTimer);
  clearTimeout(capTimer);
  lat.sort((a, b) => a - b);
  process.stdout.write(`result ${pct(lat, 0.5).toFixed(3)} ${pct(lat, 0.99).toFixed(3)} ` +
    `${(lat.length ? lat[lat.length - 1] : 0).toFixed(3)}\n`);
}

async function count(n) {
  let bad = 0;
  for (let i = 0; i < n; i++) if (!(await oneSaga()).ok) bad++;
  process.stdout.write(`counted ${n} ${bad}\n`);
}

const rl = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;
async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const w = queue.shift().trim().split(/\s+/);
    if (w[0] === 'run') await closedLoop(Number(w[1]), Number(w[2]), Number(w[3]));
    else if (w[0] === 'count') await count(Number(w[1]));
    else process.stdout.write(`error unknown command '${w[0]}'\n`);
  }
  busy = false;
}
rl.on('line', (l) => { queue.push(l); pump(); });
rl.on('close', async () => { while (busy) await new Promise((w) => setTimeout(w, 10)); agent.destroy(); process.exit(0); });
