// restate_register.mjs — registers the service endpoint with restate-server's
// admin API, retrying while the server is still starting (up to 60 s).
//   node restate_register.mjs ADMIN_URL SERVICE_URL
const [admin, uri] = process.argv.slice(2);
const until = Date.now() + 60000;
for (;;) {
  try {
    const res = await fetch(`${admin}/deployments`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ uri }),
    });
    const text = await res.text();
    if (res.ok) { console.log(text); process.exit(0); }
    console.error(`${res.status} ${text}`);
  } catch (e) {
    console.error(String(e));
  }
  if (Date.now() > until) process.exit(1);
  await new Promise((w) => setTimeout(w, 500));
}
