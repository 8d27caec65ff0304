'use strict';
// Starts a server binary under test, reads the port it bound from its stdout and stops it again.
//
// Both chinwag and the engine's conformance example print `listening on http://ADDR:PORT` once
// bound; the tests start them on port 0 so parallel test files never collide. Every process
// started here is killed by its PID when the test ends, and also if the test process itself exits
// early, so a failing test never leaves a server behind.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const LISTENING_LINE = /listening on (https?:\/\/\S+)/;

/** Every child still running, killed if the test process exits before stopping it. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/** Path of the chinwag binary: `CHINWAG_BIN` (set by scripts/test) or the debug build. */
function chinwagBin() {
  return process.env.CHINWAG_BIN || path.join(REPO_ROOT, 'target', 'debug', 'chinwag');
}

/** Path of the engine's conformance example: `CONFORMANCE_BIN` or the debug build. */
function conformanceBin() {
  return (
    process.env.CONFORMANCE_BIN || path.join(REPO_ROOT, 'target', 'debug', 'examples', 'conformance')
  );
}

/**
 * Spawns `bin` with `args`, waits for its listening line and resolves to a handle with the URL
 * (a wildcard address is replaced by 127.0.0.1 so clients can dial it) and `stop()`.
 */
function startServer(bin, args = [], { env = {}, label = path.basename(bin) } = {}) {
  if (!fs.existsSync(bin)) {
    return Promise.reject(
      new Error(`${label}: ${bin} does not exist; build it first (scripts/test does)`),
    );
  }
  // A `.js` stand-in runs under node, so the tests can be tried against a reference server.
  const [command, argv] = bin.endsWith('.js') ? [process.execPath, [bin, ...args]] : [bin, args];
  const child = spawn(command, argv, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  // Kept for failure messages: what the server said before it died or hung. Bounded.
  let output = '';
  const remember = (chunk) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stderr.on('data', remember);

  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });

  return new Promise((resolve, reject) => {
    let stdoutBuffer = '';
    let settled = false;
    const timer = setTimeout(() => {
      fail(new Error(`${label} printed no listening line within ${STARTUP_TIMEOUT_MS} ms`));
    }, STARTUP_TIMEOUT_MS);

    function fail(error) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killNow(child);
      error.message += `\n--- ${label} output ---\n${output}`;
      reject(error);
    }

    child.once('error', fail);
    exited.then(({ code, signal }) => {
      fail(new Error(`${label} exited (code ${code}, signal ${signal}) before listening`));
    });
    child.stdout.on('data', (chunk) => {
      remember(chunk);
      if (settled) return;
      stdoutBuffer += chunk.toString();
      const match = LISTENING_LINE.exec(stdoutBuffer);
      if (!match) {
        stdoutBuffer = stdoutBuffer.slice(-1_000);
        return;
      }
      settled = true;
      clearTimeout(timer);
      const url = new URL(match[1]);
      if (url.hostname === '0.0.0.0' || url.hostname === '[::]') url.hostname = '127.0.0.1';
      const origin = url.origin;
      resolve({
        url: origin,
        port: Number(url.port),
        pid: child.pid,
        exited,
        output: () => output,
        stop: (signal) => stopChild(child, exited, signal),
      });
    });
  });
}

function killNow(child) {
  try {
    process.kill(child.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** `signal` (SIGTERM), then SIGKILL if it has not exited in time. Resolves to the exit status. */
async function stopChild(child, exited, signal = 'SIGTERM') {
  if (!running.has(child)) return exited;
  try {
    process.kill(child.pid, signal);
  } catch {
    return exited;
  }
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
  });
  const first = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  if (first === 'timeout') {
    killNow(child);
    return { ...(await exited), forced: true };
  }
  return first;
}

/** A fresh directory for one server's database, removed by the returned cleanup function. */
function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `chinwag-e2e-${prefix}-`));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Starts chinwag on 127.0.0.1, port 0, with its own SQLite file. */
async function startChinwag(extraArgs = []) {
  const tmp = tempDir('db');
  try {
    const server = await startServer(
      chinwagBin(),
      ['--port', '0', '--host', '127.0.0.1', '--db', path.join(tmp.dir, 'chinwag.db'), ...extraArgs],
      { label: 'chinwag' },
    );
    const stop = server.stop;
    server.stop = async (signal) => {
      const status = await stop(signal);
      tmp.remove();
      return status;
    };
    return server;
  } catch (error) {
    tmp.remove();
    throw error;
  }
}

/** Starts the engine's conformance example on port 0. */
function startConformance() {
  return startServer(conformanceBin(), [], { env: { PORT: '0' }, label: 'conformance' });
}

module.exports = { startServer, startChinwag, startConformance, chinwagBin, conformanceBin, tempDir, REPO_ROOT };
