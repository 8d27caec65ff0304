'use strict';
// A tiny HTTP server for browser tests: serves a few fixed files on 127.0.0.1, port 0, and can
// forward /socket.io/ (HTTP and WebSocket upgrades) to a server under test, so a page talks to
// that server from its own origin without needing CORS.

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');

/**
 * @param files map from URL path to { file, type }
 * @param proxyTo optional origin (http://127.0.0.1:PORT) that receives every /socket.io/ request
 */
function startStaticServer({ files, proxyTo } = {}) {
  const target = proxyTo ? new URL(proxyTo) : null;
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://static');
    if (target && pathname.startsWith('/socket.io/')) {
      forward(req, res, target);
      return;
    }
    const entry = files?.[pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-store' });
    fs.createReadStream(entry.file).pipe(res);
  });
  if (target) {
    server.on('upgrade', (req, socket, head) => tunnel(req, socket, head, target));
  }
  // Connections the proxy holds open (long polls, WebSockets) must not keep close() waiting.
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        close: () =>
          new Promise((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(done);
          }),
      });
    });
  });
}

/** Plain HTTP forwarding; the Host and Origin headers stay as the browser sent them. */
function forward(req, res, target) {
  const upstream = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
    (reply) => {
      res.writeHead(reply.statusCode, reply.headers);
      reply.pipe(res);
    },
  );
  upstream.on('error', () => res.destroy());
  req.pipe(upstream);
}

/** A WebSocket upgrade: replay the request line and headers, then splice the two sockets. */
function tunnel(req, socket, head, target) {
  const upstream = net.connect(Number(target.port), target.hostname, () => {
    const headerLines = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headerLines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    }
    upstream.write(`${req.method} ${req.url} HTTP/1.1\r\n${headerLines.join('\r\n')}\r\n\r\n`);
    if (head.length) upstream.write(head);
    socket.pipe(upstream).pipe(socket);
  });
  const close = () => {
    socket.destroy();
    upstream.destroy();
  };
  upstream.on('error', close);
  socket.on('error', close);
  upstream.on('close', close);
  socket.on('close', close);
}

module.exports = { startStaticServer };
