// The classic Socket.IO chat tutorial's server, ported to socket.io 4.8 as the Node reference
// for chinwag's benchmarks. Behaviour and camelCase event names are the tutorial's own
// (including its quirks, e.g. a message sent before addUser is broadcast under `undefined`):
// the point is to measure what people run today, not to fix it.
//
// Env: PORT (default 8080; 0 picks a free port), CSR=1 turns on socket.io's
// connectionStateRecovery (for the jitter scenario). Binds 127.0.0.1 only: it is a bench target.
'use strict';

const http = require('http');
const express = require('express');
const { Server } = require('socket.io');

const app = express();
app.get('/', (req, res) => {
  res.type('text/plain').send('chinwag bench: Node socket.io reference (tutorial app)\n');
});

const server = http.createServer(app);
const options = {};
if (process.env.CSR === '1') {
  // socket.io's documented defaults, spelled out so the run is explicit about them.
  options.connectionStateRecovery = {
    maxDisconnectionDuration: 2 * 60 * 1000,
    skipMiddlewares: true,
  };
}
const io = new Server(server, options);

const usernames = {};

io.on('connection', (socket) => {
  socket.on('sendChat', (data) => {
    io.emit('updateChat', socket.username, data);
  });

  socket.on('addUser', (username) => {
    socket.username = username;
    usernames[username] = username;
    socket.emit('updateChat', 'Server', 'you have connected');
    socket.broadcast.emit('updateChat', 'Server', username + ' has connected');
    io.emit('updateUsers', usernames);
  });

  socket.on('disconnect', () => {
    // The tutorial announces every disconnect; only named users were ever announced joining,
    // so only they are announced leaving (otherwise N anonymous bench clients leaving would
    // flood everyone with "undefined has disconnected." notices).
    if (socket.username === undefined) return;
    delete usernames[socket.username];
    io.emit('updateUsers', usernames);
    socket.broadcast.emit('updateChat', 'Server', socket.username + ' has disconnected.');
  });
});

const port = process.env.PORT === undefined ? 8080 : Number(process.env.PORT);
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});

// Stop cleanly on SIGTERM like a deploy would: close every socket, then exit.
process.on('SIGTERM', () => {
  io.close(() => process.exit(0));
});
