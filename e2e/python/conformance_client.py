"""python-socketio against the engine's conformance example (issue 2).

Usage: conformance_client.py URL TRANSPORT   (TRANSPORT: websocket, polling or upgrade)

Connects with an auth payload, checks it comes back in "auth", that "message" is echoed as
"message-back" (text, objects and binary), that "message-with-ack" is acked with the same
arguments, that namespace /custom works and /random is refused. Prints one line per check and
exits non-zero at the first failure, so the node test that runs it reports what went wrong.
"""

import queue
import sys

import socketio

TIMEOUT_S = 10
TRANSPORTS = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": ["polling", "websocket"],
}


def check(condition, what, got=None):
    if not condition:
        print(f"FAIL {what}: got {got!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def main():
    url, mode = sys.argv[1], sys.argv[2]
    transports = TRANSPORTS[mode]
    client = socketio.Client(reconnection=False, request_timeout=TIMEOUT_S)
    events = queue.Queue()

    @client.on("auth")
    def on_auth(payload):
        events.put(("auth", payload))

    @client.on("message-back")
    def on_message_back(*args):
        events.put(("message-back", list(args)))

    @client.on("auth", namespace="/custom")
    def on_custom_auth(payload):
        events.put(("custom-auth", payload))

    def next_event(name):
        kind, value = events.get(timeout=TIMEOUT_S)
        check(kind == name, f"next event is {name}", (kind, value))
        return value

    auth = {"token": "py", "n": 3}
    client.connect(
        url,
        auth=auth,
        transports=transports,
        namespaces=["/", "/custom"],
        wait_timeout=TIMEOUT_S,
    )
    check(client.connected, "connected")
    # Order across namespaces is not defined, so collect both auth echoes first.
    seen = {}
    for _ in range(2):
        kind, value = events.get(timeout=TIMEOUT_S)
        seen[kind] = value
    check(seen.get("auth") == auth, "auth payload echoed on /", seen)
    check(seen.get("custom-auth") == auth, "auth payload echoed on /custom", seen)

    # A tuple is sent as several arguments, a list would be one argument.
    client.emit("message", ("hello", 1, {"a": [1, 2]}))
    back = next_event("message-back")
    check(back == ["hello", 1, {"a": [1, 2]}], "message-back with text", back)

    blob = bytes([0, 1, 2, 255, 0x1E])
    client.emit("message", blob)
    back = next_event("message-back")
    check(back == [blob], "message-back with binary", back)

    reply = client.call("message-with-ack", ("ack me", 2), timeout=TIMEOUT_S)
    check(list(reply) == ["ack me", 2], "message-with-ack acked with the same arguments", reply)
    reply = client.call("message-with-ack", "in custom", namespace="/custom", timeout=TIMEOUT_S)
    check(reply == "in custom", "message-with-ack on /custom", reply)

    if mode == "upgrade":
        check(client.transport() == "websocket", "upgraded to websocket", client.transport())
    else:
        check(client.transport() == mode, f"stays on {mode}", client.transport())
    client.disconnect()

    refused = socketio.Client(reconnection=False, request_timeout=TIMEOUT_S)
    refusals = queue.Queue()

    @refused.on("connect_error", namespace="/random")
    def on_refused(data):
        refusals.put(data)

    try:
        refused.connect(url, transports=transports, namespaces=["/random"], wait_timeout=TIMEOUT_S)
    except socketio.exceptions.ConnectionError:
        pass
    else:
        refused.disconnect()
        check(False, "/random refused", "connected")
    reason = refusals.get(timeout=TIMEOUT_S)
    message = reason.get("message") if isinstance(reason, dict) else reason
    check(message == "Invalid namespace", "/random refused with Invalid namespace", reason)
    refused.disconnect()
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
