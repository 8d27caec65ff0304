#!/usr/bin/env bash
# A ~20-second smoke pass of the bench tool for CI: builds chinwag-bench and the raw relay
# (debug), runs 50 idle connections and a short fan-out against the relay, and against a debug
# chinwag if one is built (target/debug/chinwag). It prints the results; it fails only when the
# bench tool itself fails (a crash, a refused run), never because a number is low.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d)
SERVER_PID=""
FAILED=0

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT

# start NAME COMMAND...: starts a server on port 0 and reads the port it prints.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        SERVER_PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$WORK/$name.log" | sed 's/.*://')
        [ -n "$SERVER_PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "smoke: $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    stop_server
    return 1
}

# run LABEL ARGS...: one bounded chinwag-bench call; a non-zero exit is a tool failure.
run() {
    local label=$1
    shift
    if ! timeout --kill-after=5 60 target/debug/chinwag-bench --url "http://127.0.0.1:$SERVER_PORT" \
        --pid "$SERVER_PID" --label "$label" "$@" >>"$WORK/records.jsonl"; then
        echo "smoke: chinwag-bench failed: $label $*" >&2
        FAILED=1
    fi
}

cargo build -p chinwag-bench || exit 1
(cd bench/peers && cargo build --no-default-features --bin raw_relay) || exit 1

if start raw env PORT=0 bench/peers/target/debug/raw_relay; then
    run raw --raw idle --counts 50 --procs 1 --max-secs 30 --left-wait-secs 0
    run raw --raw fanout --clients 50 --senders 2 --rates 20,50 --step-secs 2 --drain-secs 2 --max-secs 30
    stop_server
else
    FAILED=1
fi

if [ -x target/debug/chinwag ]; then
    if start chinwag target/debug/chinwag --port 0 --host 127.0.0.1 --db "$WORK/chinwag.db"; then
        run chinwag idle --counts 50 --procs 1 --max-secs 30 --left-wait-secs 0
        run chinwag fanout --clients 50 --senders 2 --rates 20 --step-secs 2 --drain-secs 2 \
            --join all --max-secs 30
        stop_server
    else
        echo "smoke: chinwag did not start (not a bench tool failure)" >&2
    fi
fi

target/debug/chinwag-bench report "$WORK/records.jsonl" || FAILED=1
exit $FAILED
