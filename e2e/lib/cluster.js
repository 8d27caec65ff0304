'use strict';
// A chinwag cluster for one test: several chinwag nodes on one fresh PostgreSQL schema and one
// Redis key prefix, optionally behind nginx or haproxy running the shipped configs of deploy/.
//
// - PostgreSQL: `CHINWAG_TEST_POSTGRES_URL` (scripts/test exports it; default the local `test`
//   database, user postgres). Each cluster gets a schema with a random name, dropped when the
//   cluster stops. Created and dropped with `psql`.
// - Redis: `CHINWAG_TEST_REDIS_URL` (default redis://127.0.0.1:6379) with a random
//   `--redis-prefix` per cluster, whose keys are deleted when it stops; or a private
//   redis-server of the test's own (`startRedis`), which the test may kill and restart.
// - Balancers: deploy/nginx.conf and deploy/haproxy.cfg, changed only where their comments say
//   (lines marked `@listen` and `@node`), each run as a child process on a free port.
// Missing PostgreSQL, Redis, nginx or haproxy fails the test, it never skips.
//
// Everything started here is stopped by PID (server.js kills leftovers if the test process
// exits early).

const { spawn, execFile } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { promisify } = require('node:util');
const { startServer, chinwagBin, tempDir, REPO_ROOT } = require('./server');

const run = promisify(execFile);

const POSTGRES_URL = process.env.CHINWAG_TEST_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.CHINWAG_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
const DEPLOY = path.join(REPO_ROOT, 'deploy');
const READY_TIMEOUT_MS = 15_000;

/** Flags every test node gets (flag, value pairs): clients all come from loopback, so per-address limits are off. */
const COMMON_ARGS = [
  '--host', '127.0.0.1',
  '--port', '0',
  '--max-new-users-per-ip', '0',
  '--max-rooms-per-ip', '0',
  '--max-connections-per-ip', '10000',
  '--presence-grace-ms', '300',
];

const randomName = (prefix) => `${prefix}_${crypto.randomBytes(6).toString('hex')}`;

async function psql(sql) {
  try {
    const { stdout } = await run('psql', [POSTGRES_URL, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql]);
    return stdout;
  } catch (error) {
    throw new Error(`PostgreSQL at ${POSTGRES_URL} is needed (psql -c "${sql}"): ${error.stderr || error.message}`);
  }
}

async function redisCli(url, ...args) {
  try {
    const { stdout } = await run('redis-cli', ['-u', url, ...args]);
    return stdout;
  } catch (error) {
    throw new Error(`Redis at ${url} is needed (redis-cli ${args.join(' ')}): ${error.stderr || error.message}`);
  }
}

/** A URL of the test database whose search_path is `schema`. */
function schemaUrl(schema) {
  const separator = POSTGRES_URL.includes('?') ? '&' : '?';
  return `${POSTGRES_URL}${separator}options[search_path]=${schema}&application_name=${schema}`;
}

/** A TCP port that was free a moment ago (for the balancers and private Redis servers). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
async function waitForPort(port, ms = READY_TIMEOUT_MS, what = `port ${port}`) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** GET `url`, resolving to { status, body } (body parsed as JSON when it is). */
function httpGet(url, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { timeout: ms, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => {
        let parsed = body;
        try {
          parsed = JSON.parse(body);
        } catch {
          // Not JSON: keep the text.
        }
        resolve({ status: response.statusCode, body: parsed });
      });
    });
    request.once('timeout', () => request.destroy(new Error(`GET ${url} timed out`)));
    request.once('error', reject);
  });
}

/**
 * The shipped config `text` with the `@listen` line pointed at `listenPort` and the first
 * `@node` line repeated for each address in `nodes` (a `node1` in it numbered per node); all
 * other lines exactly as shipped.
 */
function templateConfig(text, listenPort, nodes) {
  const address = /127\.0\.0\.1:\d+/;
  const out = [];
  let listens = 0;
  let nodeTemplate = null;
  for (const line of text.split('\n')) {
    if (/#\s*@listen\b/.test(line)) {
      if (!address.test(line)) throw new Error(`@listen line without 127.0.0.1:PORT: ${line}`);
      out.push(line.replace(address, `127.0.0.1:${listenPort}`));
      listens++;
    } else if (/#\s*@node\b/.test(line)) {
      if (nodeTemplate !== null) continue;
      if (!address.test(line)) throw new Error(`@node line without 127.0.0.1:PORT: ${line}`);
      nodeTemplate = line;
      nodes.forEach((node, i) => {
        out.push(line.replace(address, node).replace(/\bnode1\b/, `node${i + 1}`));
      });
    } else {
      out.push(line);
    }
  }
  if (listens !== 1 || nodeTemplate === null) {
    throw new Error('the shipped config lost its @listen or @node markers');
  }
  return out.join('\n');
}

function findBinary(name) {
  for (const dir of (process.env.PATH || '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const candidate = path.join(dir, name);
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} is needed for the cluster tests (scripts/test installs it as root)`);
}

/** Spawns a long-running helper (balancer, redis-server); `stop()` kills it by PID. */
function spawnChild(command, args, label) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const remember = (chunk) => {
    output = (output + chunk.toString()).slice(-10_000);
  };
  child.stdout.on('data', remember);
  child.stderr.on('data', remember);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let gone = false;
  exited.then(() => (gone = true));
  const kill = async (signal = 'SIGTERM') => {
    if (!gone) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // Already gone.
      }
    }
    const timer = setTimeout(() => {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }, 3_000);
    await exited;
    clearTimeout(timer);
  };
  leftovers.add(child);
  exited.then(() => leftovers.delete(child));
  return {
    pid: child.pid,
    exited,
    isRunning: () => !gone,
    output: () => `--- ${label} output ---\n${output}`,
    kill,
  };
}

// SIGTERM, not SIGKILL: a killed nginx master would leave its workers running.
const leftovers = new Set();
process.on('exit', () => {
  for (const child of leftovers) {
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
});

/** Waits for `port` to accept connections unless the child exits first (then fails with its output). */
async function readyOrDied(child, port, label) {
  const died = child.exited.then(({ code, signal }) => {
    throw new Error(`${label} exited (code ${code}, signal ${signal}) before listening\n${child.output()}`);
  });
  try {
    await Promise.race([waitForPort(port, READY_TIMEOUT_MS, label), died]);
  } catch (error) {
    await child.kill('SIGTERM');
    throw error;
  }
  died.catch(() => {});
}

/** nginx with deploy/nginx.conf in a prefix directory of its own, in front of `nodes`. */
async function startNginx(nodes) {
  const bin = findBinary('nginx');
  const port = await freePort();
  const tmp = tempDir('nginx');
  fs.chmodSync(tmp.dir, 0o755);
  fs.mkdirSync(path.join(tmp.dir, 'logs'));
  fs.mkdirSync(path.join(tmp.dir, 'tmp'));
  const config = path.join(tmp.dir, 'nginx.conf');
  fs.writeFileSync(config, templateConfig(fs.readFileSync(path.join(DEPLOY, 'nginx.conf'), 'utf8'), port, nodes));
  const child = spawnChild(bin, ['-p', `${tmp.dir}/`, '-c', config, '-g', 'daemon off;'], 'nginx');
  try {
    await readyOrDied(child, port, 'nginx');
  } catch (error) {
    error.message += `\n${readLog(path.join(tmp.dir, 'logs', 'error.log'))}`;
    tmp.remove();
    throw error;
  }
  return {
    name: 'nginx',
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log: () => readLog(path.join(tmp.dir, 'logs', 'error.log')),
    stop: async () => {
      await child.kill('SIGTERM');
      tmp.remove();
    },
  };
}

function readLog(file) {
  try {
    return `--- ${path.basename(file)} ---\n${fs.readFileSync(file, 'utf8').slice(-5_000)}`;
  } catch {
    return '';
  }
}

/** haproxy with deploy/haproxy.cfg in front of `nodes`, in the foreground (-db). */
async function startHaproxy(nodes) {
  const bin = findBinary('haproxy');
  const port = await freePort();
  const tmp = tempDir('haproxy');
  const config = path.join(tmp.dir, 'haproxy.cfg');
  fs.writeFileSync(config, templateConfig(fs.readFileSync(path.join(DEPLOY, 'haproxy.cfg'), 'utf8'), port, nodes));
  const child = spawnChild(bin, ['-f', config, '-db'], 'haproxy');
  try {
    await readyOrDied(child, port, 'haproxy');
  } catch (error) {
    tmp.remove();
    throw error;
  }
  return {
    name: 'haproxy',
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log: () => child.output(),
    stop: async () => {
      await child.kill('SIGTERM');
      tmp.remove();
    },
  };
}

/**
 * A redis-server of the test's own on a free port, saving nothing; `kill()` stops it with
 * SIGKILL, `restart()` starts it again on the same port (empty).
 */
async function startRedis() {
  const bin = findBinary('redis-server');
  const port = await freePort();
  let child = null;
  const launch = async () => {
    child = spawnChild(
      bin,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
      'redis-server',
    );
    await readyOrDied(child, port, 'redis-server');
  };
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: () => child.pid,
    kill: () => child.kill('SIGKILL'),
    restart: launch,
    stop: () => child.kill('SIGTERM'),
  };
}

/**
 * Starts `count` chinwag nodes on one fresh schema and Redis prefix, and `balancer` ('nginx',
 * 'haproxy' or none) in front. `args`: extra flags for every node; `redisUrl`: another Redis
 * than the shared one (e.g. a private `startRedis()`).
 *
 * Resolves to { nodes, balancer, schema, prefix, dbUrl, redisUrl, stop() }; each node is
 * { url, port, pid, index, kill9(), stop(), output() }.
 */
async function startCluster({ count = 3, args = [], balancer = null, redisUrl = REDIS_URL } = {}) {
  // Both must answer before anything starts: a missing service is a failure, not a skip.
  const pong = await redisCli(redisUrl, 'ping');
  if (!/PONG/.test(pong)) throw new Error(`Redis at ${redisUrl} answered ${pong}`);
  const schema = randomName('cw');
  const prefix = randomName('cwtest');
  await psql(`CREATE SCHEMA ${schema}`);
  const dbUrl = schemaUrl(schema);
  // A flag in `args` replaces the common one (chinwag refuses a flag given twice).
  const common = [];
  for (let i = 0; i < COMMON_ARGS.length; i += 2) {
    if (!args.includes(COMMON_ARGS[i])) common.push(COMMON_ARGS[i], COMMON_ARGS[i + 1]);
  }
  const nodeArgs = [...common, '--db', dbUrl, '--redis-url', redisUrl, '--redis-prefix', prefix, ...args];

  const cluster = { nodes: [], balancer: null, schema, prefix, dbUrl, redisUrl };
  const startNode = async (index) => {
    const server = await startServer(chinwagBin(), nodeArgs, { label: `chinwag node ${index}` });
    const node = {
      ...server,
      index,
      kill9: async () => {
        try {
          process.kill(server.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
        return server.exited;
      },
    };
    cluster.nodes[index] = node;
    return node;
  };
  cluster.stop = async () => {
    if (cluster.balancer) await cluster.balancer.stop().catch(() => {});
    await Promise.all(cluster.nodes.filter(Boolean).map((node) => node.stop().catch(() => {})));
    await psql(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await deleteRedisKeys(redisUrl, prefix).catch(() => {});
  };
  try {
    // The first node creates the tables; the others start together once it has.
    await startNode(0);
    await Promise.all(Array.from({ length: count - 1 }, (_, i) => startNode(i + 1)));
    const upstreams = cluster.nodes.map((node) => `127.0.0.1:${node.port}`);
    if (balancer === 'nginx') cluster.balancer = await startNginx(upstreams);
    else if (balancer === 'haproxy') cluster.balancer = await startHaproxy(upstreams);
    else if (balancer) throw new Error(`unknown balancer ${balancer}`);
  } catch (error) {
    await cluster.stop();
    throw error;
  }

  /** Each live node's /healthz `connections`, by node index (null for a dead node). */
  cluster.connectionCounts = async () =>
    Promise.all(
      cluster.nodes.map(async (node) => {
        try {
          const { body } = await httpGet(`${node.url}/healthz`, 2_000);
          return body.connections;
        } catch {
          return null;
        }
      }),
    );

  /**
   * Runs `connectOne()` (which opens one connection through the balancer) and finds the node
   * the connection landed on from the nodes' connection counts. Nothing else may connect
   * meanwhile.
   */
  cluster.landing = async (connectOne) => {
    const before = await cluster.connectionCounts();
    const result = await connectOne();
    const deadline = Date.now() + 3_000;
    for (;;) {
      const now = await cluster.connectionCounts();
      const grown = now.map((n, i) => (n ?? 0) - (before[i] ?? 0)).findIndex((d) => d > 0);
      if (grown >= 0) return { node: grown, result };
      if (Date.now() > deadline) throw new Error(`no node's connection count grew: ${before} → ${now}`);
      await sleep(50);
    }
  };
  return cluster;
}

async function deleteRedisKeys(url, prefix) {
  const keys = (await redisCli(url, '--scan', '--pattern', `*${prefix}*`)).split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 100) await redisCli(url, 'del', ...keys.slice(i, i + 100));
}

/**
 * Options for a socket.io client that connects from the loopback address `ip` (127.x.y.z), so
 * that an address-hashing balancer sends different clients to different nodes. `release()`
 * frees the agent's connections.
 */
function fromAddress(ip) {
  const agent = new http.Agent({ localAddress: ip });
  return { options: { agent, localAddress: ip }, release: () => agent.destroy() };
}

module.exports = {
  startCluster,
  startRedis,
  startNginx,
  startHaproxy,
  templateConfig,
  fromAddress,
  httpGet,
  freePort,
  sleep,
  POSTGRES_URL,
  REDIS_URL,
};
