// dbos_app.mjs — the workload on DBOS Transact: a workflow of five
// transactional steps (PostgresDataSource.runTransaction), each inserting the
// business row and the idempotency key in one PostgreSQL transaction, in
// which DBOS also records the step's output (its exactly-once checkpoint).
// Served over HTTP as a user would deploy it: POST / {"key": K} starts the
// workflow with workflowID K and answers 200 with its result.
//   node dbos_app.mjs PORT SOCKET_DIR
import http from 'node:http';
import { DBOS } from '@dbos-inc/dbos-sdk';
import { PostgresDataSource } from '@dbos-inc/postgres-datasource';
import { STEPS } from './steps.mjs';

const [port, sockDir] = [Number(process.argv[2]), process.argv[3]];
const pg = { host: sockDir, user: 'postgres', database: 'app' };
await PostgresDataSource.initializeDBOSSchema(pg);
const ds = new PostgresDataSource('app', pg);
const sql = (await import('postgres')).default(pg);
await sql`CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, result TEXT NOT NULL)`;
await sql`CREATE TABLE IF NOT EXISTS effects (id BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL,
                                              action TEXT NOT NULL, amount BIGINT NOT NULL)`;
await sql.end();

async function step(svc, action, sagaId) {
  return ds.runTransaction(async () => {
    const c = PostgresDataSource.client;
    const key = `${sagaId}/${action}`;
    const prev = await c`SELECT result FROM idempotency WHERE key = ${key}`;
    if (prev.length) return prev[0].result;
    const [row] = await c`INSERT INTO effects (saga_id, action, amount)
                          VALUES (${sagaId}, ${action}, 100) RETURNING id`;
    const result = `${svc}-${row.id}`;
    await c`INSERT INTO idempotency (key, result) VALUES (${key}, ${result})`;
    return result;
  }, { name: `${svc}.${action}` });
}

const orderFulfillment = DBOS.registerWorkflow(async (sagaId) => {
  const out = [];
  for (const [svc, action] of STEPS) out.push(await step(svc, action, sagaId));
  return out;
}, { name: 'orderFulfillment' });

DBOS.setConfig({
  name: 'saga-bench-peers',
  systemDatabaseUrl: `postgresql://postgres@localhost/dbos_sys?host=${encodeURIComponent(sockDir)}`,
  logLevel: 'warn',
});
await DBOS.launch();

http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', async () => {
    try {
      const { key } = JSON.parse(body);
      const handle = await DBOS.startWorkflow(orderFulfillment, { workflowID: key })(key);
      const out = await handle.getResult();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
}).listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
