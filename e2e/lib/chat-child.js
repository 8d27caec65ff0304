'use strict';
// A chat participant in a process of its own, so a test can kill it with SIGKILL and check that
// the server notices a connection that drops without a disconnect packet.
//
// Usage: node chat-child.js URL VERSION MODE SPELLING NAME
// Prints "joined" once the server said "you have connected", then waits to be killed. It exits
// on its own after a minute so it can never outlive a broken test run.

const { ChatClient } = require('./chat');

const [url, version, mode, spelling, name] = process.argv.slice(2);
const LIFETIME_MS = 60_000;

setTimeout(() => process.exit(3), LIFETIME_MS).unref();

ChatClient.open(version, url, { mode, spelling })
  .then(async (client) => {
    await client.join(name);
    process.stdout.write('joined\n');
    // Keep the process alive until it is killed (the socket keeps the event loop busy too).
    setInterval(() => {}, 1_000);
  })
  .catch((error) => {
    process.stderr.write(`chat-child failed: ${error.stack}\n`);
    process.exit(2);
  });
