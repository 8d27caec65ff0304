//! `GET /metrics`: the server's gauges, counters and histograms in the Prometheus text
//! exposition format (version 0.0.4), for scraping.
//!
//! In a cluster, also the bus's events by outcome and whether it is connected.
//!
//! Not exported, because the engine does not count them: volatile emits dropped and
//! slow-reader disconnects.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::IntoResponse;
use http::header;

use super::AppState;
use crate::store::stats::Histogram;

pub(crate) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    gauge(
        &mut out,
        "chinwag_socketio_connections",
        "Socket.IO connections open.",
        state.io.connection_count() as f64,
    );
    gauge(
        &mut out,
        "chinwag_users_present",
        "Users present (connected, or within their reconnection grace period).",
        state.chat.user_count() as f64,
    );
    gauge(
        &mut out,
        "chinwag_http_connections_open",
        "TCP connections open (HTTP and upgraded WebSocket).",
        state.serve_stats.open_connections() as f64,
    );
    gauge(
        &mut out,
        "chinwag_polling_sessions_open",
        "Engine.IO polling sessions open, each counted as a connection against the limits.",
        state.serve_stats.polling_sessions() as f64,
    );
    let _ = writeln!(
        out,
        "# HELP chinwag_http_connections_refused_total Connections and polling handshakes refused at a connection limit.\n\
         # TYPE chinwag_http_connections_refused_total counter\n\
         chinwag_http_connections_refused_total{{limit=\"total\"}} {}\n\
         chinwag_http_connections_refused_total{{limit=\"per_ip\"}} {}",
        state.serve_stats.refused_total_limit(),
        state.serve_stats.refused_ip_limit(),
    );
    if let Some(stats) = state.chat.history.writer_stats() {
        counter(
            &mut out,
            "chinwag_messages_stored_total",
            "Messages durably stored (resends of stored ones not counted).",
            stats.messages_stored.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "chinwag_store_failed_batches_total",
            "Write batches that failed and were rolled back.",
            stats.failed_batches.load(Ordering::Relaxed),
        );
        histogram(
            &mut out,
            "chinwag_store_batch_size",
            "Writes committed per transaction (group commit).",
            &stats.batch_size,
        );
        histogram(
            &mut out,
            "chinwag_store_commit_seconds",
            "Time from a write batch's start to its commit.",
            &stats.commit_seconds,
        );
    }
    counter(
        &mut out,
        "chinwag_gap_repairs_total",
        "Gaps in a conversation's sequence (a message waiting for a predecessor) repaired by reading the store.",
        state.chat.repairs.gaps.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "chinwag_gap_repaired_messages_total",
        "Messages read from the store by gap repairs.",
        state.chat.repairs.messages.load(Ordering::Relaxed),
    );
    if let (Some(connected), Some(bus)) = (state.chat.bus_connected(), state.chat.bus_counters()) {
        gauge(
            &mut out,
            "chinwag_cluster_bus_connected",
            "1 while the cluster bus (Redis pub/sub) is connected and subscribed.",
            if connected { 1.0 } else { 0.0 },
        );
        let events = [
            ("published", &bus.published),
            ("publish_failed", &bus.publish_failed),
            ("dropped_outbox", &bus.dropped_outbox),
            ("received", &bus.received),
            ("dropped_inbox", &bus.dropped_inbox),
            ("missed", &bus.missed),
        ];
        let _ = writeln!(
            out,
            "# HELP chinwag_cluster_bus_events_total Cluster bus events by outcome (a lost event is repaired from the store).\n\
             # TYPE chinwag_cluster_bus_events_total counter"
        );
        for (outcome, count) in events {
            let _ = writeln!(
                out,
                "chinwag_cluster_bus_events_total{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let buckets = histogram.cumulative();
    for (bound, count) in &buckets {
        let le = if bound.is_infinite() {
            "+Inf".to_owned()
        } else {
            bound.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let total = buckets.last().map_or(0, |(_, count)| *count);
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {total}", histogram.sum());
}
