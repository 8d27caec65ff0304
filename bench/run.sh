#!/usr/bin/env bash
# One command for chinwag's side-by-side benchmarks: builds everything (release), starts each
# server in turn on 127.0.0.1 (port 0), runs the scenarios against it with chinwag-bench, stops
# it by its PID, and prints the comparison table (ratios chinwag/peer).
#
#   bench/run.sh            full run (about 30-40 minutes)
#   bench/run.sh --quick    the optimisation loop (about 3 minutes)
#   CHINWAG_BIN=path bench/run.sh   measures that chinwag binary instead of building one
#   options: --servers node,socketioxide,raw,chinwag,chinwag-full   (default: all available)
#            --scenarios idle,joined,fanout,jitter,avalanche,history
#                        (default: all; --quick: idle,fanout,history)
#
# Records (one JSON line per measurement) and server logs go to bench/results/RUN/; the table
# is printed at the end and saved as table.md there. Every generator call runs under `timeout`,
# every server is stopped by the PID this script started, also on Ctrl-C.
set -uo pipefail

# Everything runs inside main, which bash parses whole before running: editing this file during
# a run cannot change what the run does.
main() {

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

MODE=full
SERVERS="node,socketioxide,raw,chinwag,chinwag-full"
SCENARIOS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --servers) SERVERS=$2; shift ;;
        --scenarios) SCENARIOS=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = quick ]; then
    SCENARIOS=${SCENARIOS:-idle,fanout,history}
    IDLE_COUNTS=1000,5000
    JOINED=200
    FULL_JOINED=1000,5000
    RATES=20,50,100,200,400,700,1000,1500,2000,3000
    STEP_SECS=3
    JITTER_CLIENTS=1000
    JITTER_SECS=30
    AVALANCHE_CLIENTS=1000
else
    SCENARIOS=${SCENARIOS:-idle,joined,fanout,jitter,avalanche,history}
    IDLE_COUNTS=1000,5000,10000,19500
    JOINED=300
    # chinwag's own protocol: named users in general, the issue-10 scenario (15k users).
    FULL_JOINED=1000,5000,15000
    RATES=10,20,50,70,100,150,200,300,400,500,700,1000,1500,2000,3000,4000
    STEP_SECS=5
    JITTER_CLIENTS=2000
    JITTER_SECS=60
    AVALANCHE_CLIENTS=5000
fi

RUN_DIR="$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-$MODE"
mkdir -p "$RUN_DIR"
RECORDS="$RUN_DIR/records.jsonl"
: > "$RECORDS"
BENCH="$ROOT/target/release/chinwag-bench"
# chinwag's default per-connection rate limit (100 msg/s) would refuse the fan-out senders'
# traffic at high rates; the peers have no limit, so it is lifted for like-for-like saturation.
# Its per-address connection cap (1000) would refuse the generators, which hold up to 19,500
# connections from a few loopback addresses; the peers have no cap either. Likewise its bound
# on new users per address per minute (60), which thousands of named clients would pass.
CHINWAG_FLAGS=${CHINWAG_FLAGS:---max-messages-per-second 0 --max-connections-per-ip 20000 --max-new-users-per-ip 0}
SERVER_PID=""
SERVER_PORT=""
DB_SEQ=0

log() { echo "== $*" >&2; }
wants() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    local signal=${1:-TERM}
    kill "-$signal" "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}
trap 'stop_server; exit 130' INT TERM
trap 'stop_server' EXIT

# start_server NAME [PORT]: starts NAME on PORT (0 = any), waits for its "listening on" line.
start_server() {
    local name=$1 port=${2:-0}
    # A fresh database and log per start, except when restarting (the avalanche keeps its
    # history, and the log then counts one more "listening on" line).
    [ "${RESTARTS:-0}" -gt 0 ] || DB_SEQ=$((DB_SEQ + 1))
    local logfile="$RUN_DIR/$name-$DB_SEQ.log"
    local db="$RUN_DIR/chinwag-$DB_SEQ.db"
    case "$name" in
        node) (cd bench/node && PORT=$port exec node server.js) >>"$logfile" 2>&1 & ;;
        node-csr) (cd bench/node && CSR=1 PORT=$port exec node server.js) >>"$logfile" 2>&1 & ;;
        socketioxide) PORT=$port exec_bin bench/peers/target/release/socketioxide_tutorial >>"$logfile" 2>&1 & ;;
        raw) PORT=$port exec_bin bench/peers/target/release/raw_relay >>"$logfile" 2>&1 & ;;
        chinwag|chinwag-full)
            RUST_LOG=warn exec_bin "$CHINWAG_BIN" --port "$port" --host 127.0.0.1 \
                --db "$db" $CHINWAG_FLAGS >>"$logfile" 2>&1 & ;;
        chinwag-nohistory)
            RUST_LOG=warn exec_bin "$CHINWAG_BIN" --port "$port" --host 127.0.0.1 \
                --db "$db" --no-history $CHINWAG_FLAGS >>"$logfile" 2>&1 & ;;
        *) echo "unknown server $name" >&2; return 1 ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 300); do
        SERVER_PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$logfile" 2>/dev/null | tail -1 | sed 's/.*://')
        if [ -n "$SERVER_PORT" ] && [ "$(grep -c 'listening on' "$logfile")" -gt "${RESTARTS:-0}" ]; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start; see $logfile" >&2
    stop_server KILL
    return 1
}
exec_bin() { exec "$@"; }

# bench LABEL SECONDS ARGS...: one bounded generator run, records appended.
bench() {
    local label=$1 bound=$2
    shift 2
    timeout --kill-after=10 "$bound" "$BENCH" --url "http://127.0.0.1:$SERVER_PORT" \
        --pid "$SERVER_PID" --label "$label" "$@" >>"$RECORDS" 2> >(tee -a "$RUN_DIR/bench.log" >&2)
    local status=$?
    [ $status -eq 0 ] || log "$label: chinwag-bench exited with $status (see bench.log)"
    return 0
}

log "building (release)"
cargo build --release -p chinwag-bench || exit 1
CHINWAG_BUILT=yes
if [ -n "${CHINWAG_BIN:-}" ]; then
    [ -x "$CHINWAG_BIN" ] || { log "CHINWAG_BIN=$CHINWAG_BIN is not executable"; exit 1; }
else
    CHINWAG_BIN="$ROOT/target/release/chinwag"
    cargo build --release --bin chinwag || { CHINWAG_BUILT=no; log "chinwag does not build: measuring the peers only"; }
fi
(cd bench/peers && cargo build --release) || exit 1
if [ ! -d bench/node/node_modules ]; then (cd bench/node && npm ci --no-audit --no-fund) || exit 1; fi

# kind_args NAME: how the generator speaks to each server.
kind_args() {
    case "$1" in
        raw) echo "--raw" ;;
        chinwag-full) echo "--full" ;;
        *) echo "" ;;
    esac
}
# How fan-out clients join. The tutorial's io.emit reaches every socket, so only the senders
# name themselves (addUser). chinwag's tutorial protocol delivers only to named sockets, and
# 1000 addUser calls cost O(N²) user lists (~5 GB), so its receivers are named at CONNECT
# (auth) while its senders speak the tutorial protocol (see BENCHMARKS.md).
fanout_join() {
    case "$1" in
        chinwag|chinwag-nohistory) echo "senders --auth {\"name\":\"r{i}\"} --auth-receivers-only" ;;
        *) echo "senders" ;;
    esac
}

for server in ${SERVERS//,/ }; do
    case "$server" in chinwag*) [ "$CHINWAG_BUILT" = yes ] || continue ;; esac
    kind=$(kind_args "$server")
    if wants "$SCENARIOS" idle && [ "$server" != chinwag-full ]; then
        log "$server: idle $IDLE_COUNTS"
        if start_server "$server"; then
            # Node's GC runs lazily; all servers get the same settle time (see idle.rs).
            bench "$server" 400 $kind idle --counts "$IDLE_COUNTS" --procs 2
            stop_server
        fi
    fi
    if wants "$SCENARIOS" joined && [ "$server" != raw ]; then
        log "$server: idle joined $JOINED"
        if start_server "$server"; then
            if [ "$server" = chinwag-full ]; then
                bench "$server" 300 $kind idle --counts "$FULL_JOINED" --procs 1
            else
                bench "$server" 120 $kind idle --counts "$JOINED" --procs 1 --join
            fi
            stop_server
        fi
    fi
    if wants "$SCENARIOS" fanout; then
        log "$server: fan-out C=1000"
        if start_server "$server"; then
            bench "$server" 600 $kind fanout --clients 1000 --senders 10 --rates "$RATES" \
                --step-secs "$STEP_SECS" --join $(fanout_join "$server") --max-secs 300
            stop_server
        fi
    fi
done

# The reconnect scenarios: Node without and with connection-state recovery, and chinwag's own
# protocol with its catch-up (session token + sync).
RECONNECT_SERVERS=""
wants "$SERVERS" node && RECONNECT_SERVERS="node node-csr"
if [ "$CHINWAG_BUILT" = yes ] && wants "$SERVERS" chinwag-full; then
    RECONNECT_SERVERS="$RECONNECT_SERVERS chinwag-full"
fi
recovery_of() {
    case "$1" in
        node-csr) echo socketio ;;
        chinwag-full) echo chinwag ;;
        *) echo none ;;
    esac
}

if wants "$SCENARIOS" jitter; then
    for server in $RECONNECT_SERVERS; do
        log "$server: jitter $JITTER_CLIENTS clients"
        if start_server "$server"; then
            bench "$server" $((JITTER_SECS + 120)) $(kind_args "$server") jitter \
                --clients "$JITTER_CLIENTS" --secs "$JITTER_SECS" --recovery "$(recovery_of "$server")"
            stop_server
        fi
    done
fi

if wants "$SCENARIOS" avalanche; then
    for server in $RECONNECT_SERVERS; do
        for signal in TERM KILL; do
            log "$server: restart avalanche ($signal) $AVALANCHE_CLIENTS clients"
            RESTARTS=0
            start_server "$server" || continue
            port=$SERVER_PORT
            ready="$RUN_DIR/avalanche-$server-$signal.ready"
            timeout --kill-after=10 180 "$BENCH" --url "http://127.0.0.1:$port" --label "$server" \
                $(kind_args "$server") avalanche --clients "$AVALANCHE_CLIENTS" --signal "$signal" \
                --ready-file "$ready" --recovery "$(recovery_of "$server")" --max-secs 150 >>"$RECORDS" 2> >(tee -a "$RUN_DIR/bench.log" >&2) &
            gen=$!
            for _ in $(seq 1200); do [ -e "$ready" ] && break; kill -0 $gen 2>/dev/null || break; sleep 0.1; done
            if [ -e "$ready" ]; then
                stop_server "$signal"
                RESTARTS=1
                start_server "$server" "$port" || log "$server did not restart on port $port"
            fi
            wait $gen
            stop_server
            RESTARTS=0
        done
    done
fi

if wants "$SCENARIOS" history && [ "$CHINWAG_BUILT" = yes ] && wants "$SERVERS" chinwag; then
    log "chinwag-nohistory: fan-out C=1000 with history off"
    if start_server chinwag-nohistory; then
        bench chinwag-nohistory 600 fanout --clients 1000 --senders 10 --rates "$RATES" \
            --step-secs "$STEP_SECS" --join $(fanout_join chinwag-nohistory) --max-secs 300
        stop_server
    fi
fi

"$BENCH" report "$RECORDS" | tee "$RUN_DIR/table.md"
echo "records: $RECORDS" >&2
}

main "$@"
