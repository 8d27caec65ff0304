//! The comparison table of one run: reads the JSON records the scenarios printed (one per line)
//! and prints, per scenario, one row per server and the ratios of chinwag to each peer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::error::BenchError;

/// Options of `report`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Files of JSON records written by the scenarios (several runs can be merged).
    #[arg(required = true)]
    pub records: Vec<std::path::PathBuf>,
    /// The server the ratios are computed for.
    #[arg(long, default_value = "chinwag")]
    pub subject: String,
}

/// The servers in the order they are shown, peers after the subject.
const ORDER: [&str; 7] = [
    "chinwag",
    "chinwag-full",
    "node",
    "node-csr",
    "socketioxide",
    "raw",
    "chinwag-nohistory",
];

fn order_of(label: &str) -> usize {
    ORDER
        .iter()
        .position(|known| *known == label)
        .unwrap_or(ORDER.len())
}

fn number(record: &Value, field: &str) -> Option<f64> {
    record.get(field).and_then(Value::as_f64)
}

/// `a/b` as a ratio, or a dash when either side is missing.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

pub fn run(args: &ReportArgs) -> Result<(), BenchError> {
    let mut records: Vec<Value> = Vec::new();
    for path in &args.records {
        let text = std::fs::read_to_string(path)?;
        records.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok()),
        );
    }
    print!("{}", render(&records, &args.subject));
    Ok(())
}

/// Collects `field` of the records of `scenario`, by label, keyed by `key` (e.g. N or rate).
fn by_label(
    records: &[Value],
    scenario: &str,
    key: &str,
    field: &str,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut table: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for record in records {
        if record.get("scenario").and_then(Value::as_str) != Some(scenario) {
            continue;
        }
        let Some(label) = record.get("label").and_then(Value::as_str) else {
            continue;
        };
        let key = record.get(key).and_then(Value::as_i64).unwrap_or(0);
        if let Some(value) = number(record, field) {
            table
                .entry(label.to_owned())
                .or_default()
                .insert(key, value);
        }
    }
    table
}

fn labels_of(table: &BTreeMap<String, BTreeMap<i64, f64>>) -> Vec<String> {
    let mut labels: Vec<String> = table.keys().cloned().collect();
    labels.sort_by_key(|label| (order_of(label), label.clone()));
    labels
}

/// One section: rows are servers, columns are keys (N or rate), then the subject's ratio to
/// each peer at the largest key both have.
fn section(
    out: &mut String,
    title: &str,
    key_name: &str,
    table: &BTreeMap<String, BTreeMap<i64, f64>>,
    subject: &str,
    decimals: usize,
) {
    if table.is_empty() {
        return;
    }
    let mut keys: Vec<i64> = table.values().flat_map(|row| row.keys().copied()).collect();
    keys.sort_unstable();
    keys.dedup();
    let _ = writeln!(out, "\n## {title}");
    let mut header = format!("| server | {}", key_name);
    for key in &keys {
        let _ = write!(header, " | {key}");
    }
    let _ = writeln!(out, "{header} |");
    let _ = writeln!(out, "|{}", " --- |".repeat(keys.len() + 2));
    for label in labels_of(table) {
        let row = &table[&label];
        let mut line = format!("| {label} |");
        for key in &keys {
            let _ = write!(line, " | {}", cell(row.get(key).copied(), decimals));
        }
        let _ = writeln!(out, "{line} |");
    }
    if let Some(subject_row) = table.get(subject) {
        for label in labels_of(table) {
            if label == subject {
                continue;
            }
            let peer_row = &table[&label];
            let common = keys
                .iter()
                .rev()
                .find(|key| subject_row.contains_key(key) && peer_row.contains_key(key));
            if let Some(key) = common {
                let _ = writeln!(
                    out,
                    "- {subject}/{label} at {key_name} {key}: {}",
                    ratio(subject_row.get(key).copied(), peer_row.get(key).copied())
                );
            }
        }
    }
}

/// One value per server (e.g. saturation), with the subject's ratio to each peer.
fn single(
    out: &mut String,
    title: &str,
    records: &[Value],
    scenario: &str,
    field: &str,
    subject: &str,
) {
    let mut values: Vec<(String, f64)> = records
        .iter()
        .filter(|record| record.get("scenario").and_then(Value::as_str) == Some(scenario))
        .filter_map(|record| {
            let label = record.get("label")?.as_str()?.to_owned();
            Some((label, number(record, field)?))
        })
        .collect();
    if values.is_empty() {
        return;
    }
    values.sort_by_key(|(label, _)| (order_of(label), label.clone()));
    let subject_value = values
        .iter()
        .find(|(label, _)| label == subject)
        .map(|(_, value)| *value);
    let _ = writeln!(out, "\n## {title}");
    let _ = writeln!(
        out,
        "| server | value | {subject}/server |\n| --- | --- | --- |"
    );
    for (label, value) in &values {
        let _ = writeln!(
            out,
            "| {label} | {value:.0} | {} |",
            ratio(subject_value, Some(*value))
        );
    }
}

/// Rows of a scenario with several fields per server (jitter, avalanche).
fn rows(out: &mut String, title: &str, records: &[Value], scenario: &str, fields: &[&str]) {
    let mut matching: Vec<&Value> = records
        .iter()
        .filter(|record| record.get("scenario").and_then(Value::as_str) == Some(scenario))
        .collect();
    if matching.is_empty() {
        return;
    }
    matching.sort_by_key(|record| {
        let label = record.get("label").and_then(Value::as_str).unwrap_or("");
        (order_of(label), label.to_owned())
    });
    let _ = writeln!(out, "\n## {title}");
    let _ = writeln!(out, "| server | {} |", fields.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(fields.len() + 1));
    for record in matching {
        let label = record.get("label").and_then(Value::as_str).unwrap_or("?");
        let cells: Vec<String> = fields
            .iter()
            .map(|field| match record.get(*field) {
                Some(Value::Number(n)) if n.is_f64() => cell(n.as_f64(), 1),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "-".to_owned(),
            })
            .collect();
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
}

/// The value of `field` in the record of `scenario` for `label` (the last one if several),
/// optionally only where `key` equals `at`.
fn lookup(
    records: &[Value],
    scenario: &str,
    label: &str,
    field: &str,
    key: Option<(&str, i64)>,
) -> Option<f64> {
    records
        .iter()
        .filter(|record| record.get("scenario").and_then(Value::as_str) == Some(scenario))
        .filter(|record| record.get("label").and_then(Value::as_str) == Some(label))
        .filter(|record| {
            key.is_none_or(|(key, at)| record.get(key).and_then(Value::as_i64) == Some(at))
        })
        .filter_map(|record| number(record, field))
        .next_back()
}

/// The idle KiB/connection of `label` at the largest N it reached.
fn idle_at_largest(records: &[Value], label: &str) -> Option<(i64, f64)> {
    records
        .iter()
        .filter(|record| record.get("scenario").and_then(Value::as_str) == Some("idle"))
        .filter(|record| record.get("label").and_then(Value::as_str) == Some(label))
        .filter_map(|record| Some((record.get("n")?.as_i64()?, number(record, "per_conn_kib")?)))
        .max_by_key(|(n, _)| *n)
}

/// One target row: what is compared, the measured value, whether the target is met.
fn target(
    out: &mut String,
    name: &str,
    value: Option<f64>,
    shown: String,
    met: impl Fn(f64) -> bool,
) {
    let verdict = match value {
        Some(value) if met(value) => "met",
        Some(_) => "not met",
        None => "not measured",
    };
    let _ = writeln!(out, "| {name} | {shown} | {verdict} |");
}

/// The targets of issue 5, each with the measured ratio from this run.
fn targets(out: &mut String, records: &[Value], subject: &str) {
    let saturation =
        |label: &str| lookup(records, "fanout_max", label, "max_deliveries_per_s", None);
    let ratio_of = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show = |value: Option<f64>, unit: &str| {
        value.map_or_else(|| "-".to_owned(), |value| format!("{value:.2}{unit}"))
    };
    let _ = writeln!(out, "\n## Targets (issue 5), {subject} in this run");
    let _ = writeln!(out, "| target | measured | verdict |\n| --- | --- | --- |");
    let vs_node = ratio_of(saturation(subject), saturation("node"));
    target(
        out,
        "fan-out saturation >= 5x Node",
        vs_node,
        show(vs_node, "x"),
        |r| r >= 5.0,
    );
    let vs_raw = ratio_of(saturation(subject), saturation("raw"));
    target(
        out,
        "fan-out saturation >= 80 % of raw",
        vs_raw,
        show(vs_raw, "x"),
        |r| r >= 0.8,
    );
    let vs_sio = ratio_of(saturation(subject), saturation("socketioxide"));
    target(
        out,
        "fan-out saturation ahead of socketioxide",
        vs_sio,
        show(vs_sio, "x"),
        |r| r > 1.0,
    );
    let full_vs_node = ratio_of(saturation("chinwag-full"), saturation("node"));
    target(
        out,
        "(own protocol) fan-out saturation >= 5x Node",
        full_vs_node,
        show(full_vs_node, "x"),
        |r| r >= 5.0,
    );
    let p99 = |label: &str| lookup(records, "fanout", label, "p99_ms", Some(("rate", 50)));
    let p99_ratio = ratio_of(p99(subject), p99("node"));
    target(
        out,
        "p99 at 50 msg/s no worse than Node (ratio <= 1)",
        p99_ratio,
        show(p99_ratio, "x"),
        |r| r <= 1.0,
    );
    let idle = idle_at_largest(records, subject);
    let kib = idle.map(|(_, kib)| kib);
    let shown = idle.map_or_else(
        || "-".to_owned(),
        |(n, kib)| format!("{kib:.2} KiB at N={n}"),
    );
    target(
        out,
        "<= 4 KiB per idle connection at the largest N",
        kib,
        shown,
        |k| k <= 4.0,
    );
    let idle_vs_sio = ratio_of(
        kib,
        idle_at_largest(records, "socketioxide").map(|(_, kib)| kib),
    );
    target(
        out,
        "idle memory ahead of socketioxide (ratio < 1)",
        idle_vs_sio,
        show(idle_vs_sio, "x"),
        |r| r < 1.0,
    );
    let history = ratio_of(saturation(subject), saturation("chinwag-nohistory"));
    target(
        out,
        "history on costs <= 10 % of fan-out (ratio >= 0.9)",
        history,
        show(history, "x"),
        |r| r >= 0.9,
    );
    // The reconnect scenarios run chinwag's own protocol (its catch-up is not in the tutorial's).
    let reconnecting = |scenario: &str, field: &str| {
        lookup(records, scenario, subject, field, None)
            .or_else(|| lookup(records, scenario, &format!("{subject}-full"), field, None))
    };
    let jitter = reconnecting("jitter", "delivery_pct");
    target(
        out,
        "jitter: 100 % delivery",
        jitter,
        show(jitter, " %"),
        |d| d >= 100.0,
    );
    let lag = reconnecting("jitter", "lag_p99_ms");
    target(
        out,
        "jitter: replay lag p99 < 500 ms",
        lag,
        show(lag, " ms"),
        |l| l < 500.0,
    );
    let back = reconnecting("avalanche", "back_p95_ms");
    target(
        out,
        "avalanche (last signal): back, p95 < 3 s",
        back,
        show(back, " ms"),
        |b| b < 3000.0,
    );
    let lost = reconnecting("avalanche", "lost_acknowledged");
    target(
        out,
        "avalanche (last signal): zero acknowledged messages lost",
        lost,
        show(lost, ""),
        |l| l == 0.0,
    );
}

pub fn render(records: &[Value], subject: &str) -> String {
    let mut out = String::from("# chinwag benchmark comparison\n");
    targets(&mut out, records, subject);
    let idle = by_label(records, "idle", "n", "per_conn_kib");
    section(
        &mut out,
        "Idle: server KiB per handshaken connection (lower is better)",
        "N",
        &idle,
        subject,
        2,
    );
    let joined = by_label(records, "idle_joined", "n", "per_conn_kib");
    section(
        &mut out,
        "Idle: server KiB per joined user (lower is better)",
        "N",
        &joined,
        subject,
        2,
    );
    single(
        &mut out,
        "Fan-out saturation: most deliveries/s in one step (higher is better)",
        records,
        "fanout_max",
        "max_deliveries_per_s",
        subject,
    );
    let p99 = by_label(records, "fanout", "rate", "p99_ms");
    section(
        &mut out,
        "Fan-out p99 latency, ms, by total msg/s (lower is better)",
        "msg/s",
        &p99,
        subject,
        1,
    );
    let delivered = by_label(records, "fanout", "rate", "ratio");
    section(
        &mut out,
        "Fan-out delivered/expected by msg/s",
        "msg/s",
        &delivered,
        subject,
        4,
    );
    let cpu = by_label(records, "fanout", "rate", "server_cpu_pct");
    section(
        &mut out,
        "Fan-out server CPU % (of one core) by msg/s",
        "msg/s",
        &cpu,
        subject,
        0,
    );
    let generator = by_label(records, "fanout", "rate", "gen_cpu_pct");
    section(
        &mut out,
        "Fan-out generator CPU % by msg/s",
        "msg/s",
        &generator,
        subject,
        0,
    );
    rows(
        &mut out,
        "Jitter: delivery under connection drops",
        records,
        "jitter",
        &[
            "delivery_pct",
            "send_p50_ms",
            "send_p99_ms",
            "send_max_ms",
            "lag_p50_ms",
            "lag_p95_ms",
            "lag_p99_ms",
            "lag_max_ms",
            "drops",
        ],
    );
    rows(
        &mut out,
        "Restart avalanche",
        records,
        "avalanche",
        &[
            "signal",
            "clients",
            "back",
            "never_back",
            "back_p50_ms",
            "back_p95_ms",
            "back_max_ms",
            "lost_messages",
            "acknowledged",
            "lost_acknowledged",
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_the_subject_to_each_peer() {
        let records: Vec<Value> = [
            r#"{"scenario":"idle","label":"chinwag","n":1000,"per_conn_kib":2.0}"#,
            r#"{"scenario":"idle","label":"node","n":1000,"per_conn_kib":8.0}"#,
            r#"{"scenario":"fanout_max","label":"chinwag","max_deliveries_per_s":300000}"#,
            r#"{"scenario":"fanout_max","label":"node","max_deliveries_per_s":60000}"#,
        ]
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
        let table = render(&records, "chinwag");
        assert!(table.contains("chinwag/node at N 1000: 0.25x"), "{table}");
        assert!(table.contains("| node | 60000 | 5.00x |"), "{table}");
    }
}
