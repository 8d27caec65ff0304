#!/usr/bin/env bash
# One command for chinwag's cluster benchmark (issue 13): builds chinwag and chinwag-bench
# (release), then runs the same fan-out scenario (chinwag's own protocol: C named users in
# `general`, S of them sending, rising total msg/s until saturation) against
#   a  sqlite        one node, embedded SQLite (what bench/run.sh measures)
#   b  postgres      one node, PostgreSQL
#   c  pg+redis      one node in cluster mode (PostgreSQL + Redis)
#   d  3 nodes+nginx three cluster nodes behind nginx (deploy/nginx.conf), clients through nginx
#   e  3 nodes       the same three nodes, clients spread over the nodes' own ports
# and prints, per step, deliveries/s, p50/p99, each node's CPU, Redis', PostgreSQL's and
# nginx's CPU, the PostgreSQL commit rate of the run's database and how busy each node's
# history writer was (from its /metrics), then ratios against a and b.
#
#   bench/cluster.sh                          (about 8 minutes)
#   options: --configs a,b,c,d,e  --clients 500  --senders 12  --step-secs 5
#            --rates 100,200,400,700,1000,1500,2000,3000
#   environment: CHINWAG_BENCH_PG (default postgres://postgres@127.0.0.1:5432),
#                CHINWAG_BENCH_REDIS (default redis://127.0.0.1:6379/0),
#                CHINWAG_BIN=path: measure that chinwag binary instead of building one
#
# Each PostgreSQL configuration gets a fresh database, dropped afterwards; each Redis one a
# fresh key prefix, whose keys are deleted afterwards. PostgreSQL and Redis must already run;
# they are only read from (CPU from /proc, commits from pg_stat_database), never restarted.
# nginx runs as a child of this script with a private prefix directory. Everything started
# here is stopped by its PID, also on Ctrl-C; every generator run is under `timeout`.
# Records and logs go to bench/results/RUN-cluster/ (not committed), the table to table.md.
set -uo pipefail

main() {

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

CONFIGS=a,b,c,d,e
CLIENTS=500
SENDERS=12
STEP_SECS=5
RATES=100,200,400,700,1000,1500,2000,3000
while [ $# -gt 0 ]; do
    case "$1" in
        --configs) CONFIGS=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --senders) SENDERS=$2; shift ;;
        --step-secs) STEP_SECS=$2; shift ;;
        --rates) RATES=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

PG=${CHINWAG_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${CHINWAG_BENCH_REDIS:-redis://127.0.0.1:6379/0}
RUN_ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
RUN_DIR="$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-cluster"
mkdir -p "$RUN_DIR"
RECORDS="$RUN_DIR/records.jsonl"
: > "$RECORDS"
WORK=$(mktemp -d)
BENCH="$ROOT/target/release/chinwag-bench"
CHINWAG="$ROOT/target/release/chinwag"
# As in run.sh: no per-connection rate limit, no per-address caps (all clients are loopback).
FLAGS="--host 127.0.0.1 --port 0 --max-messages-per-second 0 --max-connections-per-ip 20000 \
--max-new-users-per-ip 0 --max-rooms-per-ip 0"
# nginx hashes the client address to pick a node: clients connect from 48 loopback addresses so
# that they spread over the nodes (client i from address i % 48).
SOURCES=$(seq -s, -f '127.0.0.%g' 2 49)

PIDS=()          # every process started here
DATABASES=()     # databases created here
PREFIXES=()      # Redis prefixes used here
NODE_PIDS=()
NODE_PORTS=()
NGINX_PID=""
NGINX_PORT=""

log() { echo "== $*" >&2; }
wants() { case ",$CONFIGS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
stop_all() {
    [ -n "$NGINX_PID" ] && stop_pid "$NGINX_PID"
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
    NGINX_PID=""
    NODE_PIDS=()
    NODE_PORTS=()
}
drop_database() {
    psql "$PG/postgres" -qAt -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 \
        || log "could not drop database $1"
}
delete_prefix() {
    redis-cli -u "$REDIS" --scan --pattern "$1*" | xargs -r -n 100 redis-cli -u "$REDIS" del >/dev/null
}
cleanup() {
    stop_all
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for db in "${DATABASES[@]}"; do drop_database "$db"; done
    for prefix in "${PREFIXES[@]}"; do delete_prefix "$prefix"; done
    rm -rf "$WORK"
}
trap 'cleanup; exit 130' INT TERM
trap 'cleanup' EXIT

for tool in psql redis-cli python3; do
    command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done
NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null)
if [ -z "$NGINX" ] && { wants d; }; then
    log "nginx is needed for configuration d (apt-get install -y nginx; its service is not used)"
    exit 1
fi
REDIS_PID=$(redis-cli -u "$REDIS" info server | tr -d '\r' | sed -n 's/^process_id://p')
[ -n "$REDIS_PID" ] || { log "Redis at $REDIS does not answer"; exit 1; }
psql "$PG/postgres" -qAt -c 'select 1' >/dev/null || { log "PostgreSQL at $PG does not answer"; exit 1; }

log "building (release)"
if [ -n "${CHINWAG_BIN:-}" ]; then
    [ -x "$CHINWAG_BIN" ] || { log "CHINWAG_BIN=$CHINWAG_BIN is not executable"; exit 1; }
    CHINWAG=$CHINWAG_BIN
else
    cargo build --release --bin chinwag || exit 1
fi
cargo build --release -p chinwag-bench || exit 1

# start_node NAME ARGS...: one chinwag node on a free port; appends to NODE_PIDS/NODE_PORTS.
start_node() {
    local name=$1
    shift
    local logfile="$RUN_DIR/$name.log"
    RUST_LOG=warn "$CHINWAG" $FLAGS "$@" >"$logfile" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 300); do
        local port
        port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$logfile" 2>/dev/null | sed 's/.*://')
        if [ -n "$port" ]; then
            NODE_PIDS+=("$pid")
            NODE_PORTS+=("$port")
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start; see $logfile"
    stop_pid "$pid"
    return 1
}

# start_nginx: deploy/nginx.conf with its @listen line on a free port and one @node line per
# node (what the e2e tests change, nothing else), as a child process.
start_nginx() {
    local dir="$WORK/nginx"
    mkdir -p "$dir/logs" "$dir/tmp"
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local nodes=""
    for port in "${NODE_PORTS[@]}"; do nodes="$nodes $port"; done
    awk -v listen="$NGINX_PORT" -v nodes="$nodes" '
        /# *@listen/ { sub(/127\.0\.0\.1:[0-9]+/, "127.0.0.1:" listen); print; next }
        /# *@node/ {
            if (done) next
            done = 1
            n = split(nodes, ports, " ")
            for (i = 1; i <= n; i++) { line = $0; sub(/127\.0\.0\.1:[0-9]+/, "127.0.0.1:" ports[i], line); print line }
            next
        }
        { print }' deploy/nginx.conf >"$dir/nginx.conf"
    "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' >"$RUN_DIR/nginx.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null; then return 0; fi
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "nginx did not start"
    cat "$RUN_DIR/nginx.log" "$dir/logs/error.log" >&2 2>/dev/null
    return 1
}

# fresh_database NAME: creates it, prints its URL.
fresh_database() {
    psql "$PG/postgres" -qAt -c "CREATE DATABASE $1" >/dev/null || return 1
    DATABASES+=("$1")
    echo "$PG/$1"
}

# fanout LABEL URLS DB: the scenario, watching every node, Redis, PostgreSQL and nginx.
fanout() {
    local label=$1 urls=$2 db=$3
    local watches=()
    local i=1
    for pid in "${NODE_PIDS[@]}"; do watches+=(--watch "node$i=$pid"); i=$((i + 1)); done
    watches+=(--watch "redis=$REDIS_PID" --watch "postgres=comm:postgres")
    # The machine is shared: its total busy CPU shows what else ran meanwhile.
    watches+=(--watch "machine=machine")
    if [ -n "$NGINX_PID" ]; then
        local workers
        workers=$(ps -o pid= --ppid "$NGINX_PID" | tr -s ' \n' '+' | sed 's/^+//; s/+$//')
        watches+=(--watch "nginx=$NGINX_PID${workers:++$workers}")
    fi
    local counters=()
    # Each node's history writer (one transaction per batch, see /metrics): seconds spent in
    # batches per second (1 = always busy) and batches per second.
    i=1
    for port in "${NODE_PORTS[@]}"; do
        local metrics="curl -sf http://127.0.0.1:$port/metrics | awk"
        counters+=(--counter "writer$i=$metrics '\$1 == \"chinwag_store_commit_seconds_sum\" {print \$2}'")
        counters+=(--counter "batches$i=$metrics '\$1 == \"chinwag_store_commit_seconds_count\" {print \$2}'")
        i=$((i + 1))
    done
    # The cluster bus's events missed by a lagging subscription, and the gaps read back from
    # the store, summed over the nodes (0 on one node without Redis).
    local all_metrics="for port in ${NODE_PORTS[*]}; do curl -sf http://127.0.0.1:\$port/metrics; done"
    counters+=(--counter "bus_missed=$all_metrics | awk '\$1 ~ /outcome=\"missed\"/ {s += \$2} END {print s + 0}'")
    counters+=(--counter "gap_repairs=$all_metrics | awk '\$1 == \"chinwag_gap_repairs_total\" {s += \$2} END {print s + 0}'")
    if [ -n "$db" ]; then
        counters+=(--counter "pg_commits=psql '$PG/postgres' -qAt -c \"select xact_commit from pg_stat_database where datname = '$db'\"")
    fi
    log "$label: fan-out C=$CLIENTS S=$SENDERS over $urls"
    timeout --kill-after=10 420 "$BENCH" --url "$urls" --pid "${NODE_PIDS[0]}" --label "$label" \
        --full --sources "$SOURCES" fanout --clients "$CLIENTS" --senders "$SENDERS" \
        --rates "$RATES" --step-secs "$STEP_SECS" --max-secs 400 \
        "${watches[@]}" "${counters[@]}" >>"$RECORDS" 2> >(tee -a "$RUN_DIR/bench.log" >&2) &
    local gen=$!
    PIDS+=("$gen")
    # Where the clients landed, once all are connected: established connections per node port
    # (through nginx, nginx's connections to that node).
    local spread=""
    while kill -0 "$gen" 2>/dev/null; do
        if grep -qF "[$label] fan-out: $CLIENTS clients connected" "$RUN_DIR/bench.log" 2>/dev/null; then
            for port in "${NODE_PORTS[@]}"; do
                spread="$spread,$(ss -Htn state established "( sport = :$port )" | wc -l)"
            done
            break
        fi
        sleep 0.2
    done
    wait "$gen"
    local status=$?
    [ $status -eq 0 ] || log "$label: chinwag-bench exited with $status (see bench.log)"
    if [ -n "$spread" ]; then
        log "$label: connections per node: ${spread#,}"
        echo "{\"scenario\":\"spread\",\"label\":\"$label\",\"per_node\":[${spread#,}]}" >>"$RECORDS"
    fi
}

node_urls() {
    local urls=""
    for port in "${NODE_PORTS[@]}"; do urls="$urls,http://127.0.0.1:$port"; done
    echo "${urls#,}"
}

if wants a; then
    if start_node a-sqlite --db "$WORK/a.db"; then
        fanout "a sqlite" "$(node_urls)" ""
    fi
    stop_all
fi

if wants b; then
    db="chinwag_bench_${RUN_ID}_b"
    if url=$(fresh_database "$db") && start_node b-postgres --db "$url"; then
        fanout "b postgres" "$(node_urls)" "$db"
    fi
    stop_all
    drop_database "$db"
fi

if wants c; then
    db="chinwag_bench_${RUN_ID}_c"
    prefix="chinwag-bench-$RUN_ID-c"
    PREFIXES+=("$prefix")
    if url=$(fresh_database "$db") \
        && start_node c-pg-redis --db "$url" --redis-url "$REDIS" --redis-prefix "$prefix"; then
        fanout "c pg+redis" "$(node_urls)" "$db"
    fi
    stop_all
    drop_database "$db"
    delete_prefix "$prefix"
fi

# d and e: the same three nodes (fresh database and prefix for each).
for config in d e; do
    wants "$config" || continue
    db="chinwag_bench_${RUN_ID}_$config"
    prefix="chinwag-bench-$RUN_ID-$config"
    PREFIXES+=("$prefix")
    if url=$(fresh_database "$db"); then
        ok=yes
        # One after the other: each node creates or updates the tables as it starts.
        for n in 1 2 3; do
            start_node "$config-node$n" --db "$url" --redis-url "$REDIS" --redis-prefix "$prefix" \
                --trusted-proxies 127.0.0.1 || { ok=no; break; }
        done
        if [ "$ok" = yes ] && [ "$config" = d ]; then
            start_nginx && fanout "d 3 nodes+nginx" "http://127.0.0.1:$NGINX_PORT" "$db"
        elif [ "$ok" = yes ]; then
            fanout "e 3 nodes" "$(node_urls)" "$db"
        fi
    fi
    stop_all
    drop_database "$db"
    delete_prefix "$prefix"
done

python3 "$ROOT/bench/cluster_table.py" "$RECORDS" | tee "$RUN_DIR/table.md"
echo "records: $RECORDS" >&2
}

main "$@"; exit
