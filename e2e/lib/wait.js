'use strict';
// Waiting for something to happen, always with a deadline and never with a fixed sleep.

const DEFAULT_TIMEOUT_MS = 10_000;

/** Resolves with the arguments of the next `event` from `emitter`, or rejects after `ms`. */
function nextEvent(emitter, event, ms = DEFAULT_TIMEOUT_MS, what = `event "${event}"`) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      off();
      resolve(args);
    };
    const off = () => (emitter.off ?? emitter.removeListener).call(emitter, event, handler);
    emitter.on(event, handler);
  });
}

/** Rejects after `ms` unless `promise` settles first. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Records every event a socket.io client socket receives, in arrival order, for socket.io-client
 * 4.x (`onAny`) and 2.x (the listed event names only, 2.x has no catch-all).
 */
class Recorder {
  constructor(socket, names = []) {
    /** Each entry: { event, args }. */
    this.events = [];
    this.waiters = new Set();
    const push = (event, args) => {
      this.events.push({ event, args });
      for (const waiter of this.waiters) waiter();
    };
    if (typeof socket.onAny === 'function') {
      socket.onAny((event, ...args) => push(event, args));
    } else {
      for (const name of names) socket.on(name, (...args) => push(name, args));
    }
  }

  /** The recorded entries for one event name. */
  of(event) {
    return this.events.filter((entry) => entry.event === event);
  }

  /**
   * Resolves with the result of `check(events)` once it is truthy; checks again on every new
   * event and rejects after `ms` with `what` (a string, or a function giving one at that
   * moment) and the events seen so far.
   */
  until(check, what, ms = DEFAULT_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        let result;
        try {
          result = check(this.events);
        } catch (error) {
          done();
          reject(error);
          return;
        }
        if (result) {
          done();
          resolve(result);
        }
      };
      const timer = setTimeout(() => {
        done();
        const seen = JSON.stringify(this.events.slice(-20), shorten).slice(0, 4_000);
        const description = typeof what === 'function' ? what() : what;
        reject(new Error(`timed out after ${ms} ms waiting for ${description}; last events: ${seen}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(attempt);
      };
      this.waiters.add(attempt);
      attempt();
    });
  }

  /** How many events have been recorded: pass it as `from` to wait only for later ones. */
  mark() {
    return this.events.length;
  }

  /**
   * Waits for an event `event` at index `from` or later whose arguments satisfy `match`;
   * returns its arguments.
   */
  async waitFor(event, match = () => true, { what = `"${event}"`, from = 0, ms } = {}) {
    const entry = await this.until(
      (events) => events.slice(from).find((e) => e.event === event && match(...e.args)),
      what,
      ms,
    );
    return entry.args;
  }
}

/** JSON.stringify replacer keeping failure messages readable when payloads are huge. */
function shorten(key, value) {
  return typeof value === 'string' && value.length > 200 ? `${value.slice(0, 200)}…(${value.length} chars)` : value;
}

module.exports = { nextEvent, withTimeout, Recorder, DEFAULT_TIMEOUT_MS };
