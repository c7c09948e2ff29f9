// restate_service.mjs — the workload on Restate: one service
// (OrderFulfillment/run) whose handler runs the five steps with ctx.run.
// Each step is a transaction on the step's service database in SQLite
// (better-sqlite3, WAL, synchronous=FULL, its default: one fdatasync per
// commit), inserting the business row and the idempotency key; Restate
// journals each ctx.run result in its own log.
//   node restate_service.mjs PORT DBDIR
import * as restate from '@restatedev/restate-sdk';
import Database from 'better-sqlite3';
import { STEPS, SERVICES } from './steps.mjs';

// The SDK calls Promise.withResolvers (Node >= 22); Debian's and this
// machine's node may be 20, which lacks it. The same three lines as Node's.
Promise.withResolvers ??= function withResolvers() {
  let resolve, reject;
  const promise = new this((a, b) => { resolve = a; reject = b; });
  return { promise, resolve, reject };
};

const [port, dir] = [Number(process.argv[2]), process.argv[3]];
const db = {};
for (const name of SERVICES) {
  const d = new Database(`${dir}/${name}.db`);
  d.pragma('journal_mode = WAL');
  d.pragma('synchronous = FULL');
  d.exec(`CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, result TEXT NOT NULL);
          CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, saga_id TEXT NOT NULL,
                                              action TEXT NOT NULL, amount INTEGER NOT NULL)`);
  const get = d.prepare('SELECT result FROM idempotency WHERE key = ?');
  const addEffect = d.prepare('INSERT INTO effects (saga_id, action, amount) VALUES (?, ?, 100)');
  const addKey = d.prepare('INSERT INTO idempotency (key, result) VALUES (?, ?)');
  const step = d.transaction((sagaId, action) => {
    const key = `${sagaId}/${action}`;
    const prev = get.get(key);
    if (prev) return prev.result;
    const result = `${name}-${addEffect.run(sagaId, action).lastInsertRowid}`;
    addKey.run(key, result);
    return result;
  });
  db[name] = (sagaId, action) => step.immediate(sagaId, action);
}

const orderFulfillment = restate.service({
  name: 'OrderFulfillment',
  handlers: {
    run: async (ctx, req) => {
      const out = [];
      for (const [svc, action] of STEPS)
        out.push(await ctx.run(`${svc}.${action}`, () => db[svc](req.key, action)));
      return out;
    },
  },
});

restate.endpoint().bind(orderFulfillment).listen(port);
