// Faye (Bayeux) with the faye-redis engine, as a benchmark peer of replaybus.
//
//   FAYE_REDIS_URL=redis://127.0.0.1:6379/0 node server.mjs [PORT]
//
// Listens on 127.0.0.1:PORT (argv[2], else FAYE_PORT, else 0 for a free port), mounts Faye at
// /faye, and prints one line `faye ready on http://127.0.0.1:<port>/faye` once it listens.
// Anything else under / answers 404. Environment:
//   FAYE_REDIS_URL    redis://[:password@]host:port[/db] (default redis://127.0.0.1:6379/0)
//   FAYE_NAMESPACE    prefix of faye-redis's keys and notification channels (default "faye")
//   FAYE_TIMEOUT      seconds a /meta/connect is held when no message comes (default 60,
//                     Faye's own default)
import http from 'node:http';
import process from 'node:process';

import faye from 'faye';
import fayeRedis from 'faye-redis';

const port = Number(process.argv[2] ?? process.env.FAYE_PORT ?? 0);
const redisUrl = new URL(process.env.FAYE_REDIS_URL ?? 'redis://127.0.0.1:6379/0');
const timeout = Number(process.env.FAYE_TIMEOUT ?? 60);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  throw new Error(`not a port: ${process.argv[2] ?? process.env.FAYE_PORT}`);
}
if (redisUrl.protocol !== 'redis:') {
  throw new Error(`faye-redis needs a redis:// URL, not ${redisUrl}`);
}

const engine = {
  type: fayeRedis,
  host: redisUrl.hostname,
  port: Number(redisUrl.port || 6379),
  database: Number(redisUrl.pathname.replace(/^\//, '') || 0),
  namespace: process.env.FAYE_NAMESPACE ?? 'faye',
};
if (redisUrl.password) engine.password = decodeURIComponent(redisUrl.password);

const bayeux = new faye.NodeAdapter({ mount: '/faye', timeout, engine });

const server = http.createServer((request, response) => {
  response.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
  response.end('not found\n');
});
// A load generator keeps its connections open between requests: Node's default closes an idle
// keep-alive connection after 5 s.
server.keepAliveTimeout = 300_000;
server.headersTimeout = 301_000;
server.requestTimeout = 0;
bayeux.attach(server);

server.listen(port, '127.0.0.1', 4096, () => {
  const { port: bound } = server.address();
  process.stdout.write(`faye ready on http://127.0.0.1:${bound}/faye\n`);
});

const shutdown = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
