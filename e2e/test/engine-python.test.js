'use strict';
// python-socketio (the official Python client) against the engine's conformance example:
// connect with auth, emit, binary, acks, namespaces, over each transport mode (issue 2).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startConformance } = require('../lib/server');

const E2E_DIR = path.resolve(__dirname, '..');
const PYTHON = process.env.E2E_PYTHON || path.join(E2E_DIR, '.venv', 'bin', 'python');
const SCRIPT = path.join(E2E_DIR, 'python', 'conformance_client.py');

function runPython(url, mode) {
  return new Promise((resolve) => {
    execFile(PYTHON, [SCRIPT, url, mode], { timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr });
    });
  });
}

describe('python-socketio client against the conformance example', () => {
  let server;
  before(async () => {
    assert.ok(
      fs.existsSync(PYTHON),
      `${PYTHON} is missing: scripts/test creates the venv (python3 -m venv e2e/.venv && pip install -r e2e/python/requirements.txt)`,
    );
    server = await startConformance();
  });
  after(async () => {
    if (server) await server.stop();
  });

  for (const mode of ['websocket', 'polling', 'upgrade']) {
    it(`connects, emits, receives binary and acks over ${mode}`, async () => {
      const { code, stdout, stderr } = await runPython(server.url, mode);
      assert.equal(code, 0, `python client failed:\n${stdout}\n${stderr.slice(-3_000)}`);
      assert.match(stdout, /all checks passed/);
    });
  }
});
