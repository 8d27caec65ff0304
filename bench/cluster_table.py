#!/usr/bin/env python3
"""The tables of bench/cluster.sh from its JSON records (one per line): every step of every
configuration, then a summary with ratios against configuration a (one node, SQLite) and b (one
node, PostgreSQL). A step is "clean" when at least 99 % of the copies arrived and p99 <= 1 s.
CPU is in % of one core (the machine has 2: 200 % is all of it); "rest" is what the machine
ran besides the watched processes and the generator. "writer busy" is, per node, the share of the
step its history writer spent in batches (begin to commit), and "batches/s" its batches (one
transaction each); "bus missed/s" the cluster bus's events lost by a lagging Redis subscription
and "gap repairs/s" the gaps read back from the store, over all nodes."""

import json
import sys


def load(paths):
    steps, spread = {}, {}
    for path in paths:
        with open(path) as lines:
            for line in lines:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if record.get("scenario") == "fanout":
                    steps.setdefault(record["label"], []).append(record)
                elif record.get("scenario") == "spread":
                    spread[record["label"]] = record["per_node"]
    return steps, spread


def clean(step):
    return step["ratio"] >= 0.99 and step["p99_ms"] <= 1000


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def step_table(label, rows, spread):
    watched = list(rows[0].get("watch_cpu_pct", {}).keys())
    nodes = [name for name in watched if name.startswith("node")]
    others = [name for name in watched if not name.startswith("node") and name != "machine"]
    print(f"#### {label}: C={rows[0]['clients']}, S={rows[0]['senders']}"
          + (f", connections per node {spread}" if spread else ""))
    print()
    head = ["msg/s", "delivered", "deliveries/s", "p50 ms", "p99 ms"]
    head += [f"{name} CPU %" for name in nodes + others]
    head += ["PG commits/s", "msgs/commit", "writer busy %", "batches/s", "bus missed/s",
             "gap repairs/s"]
    head += ["generator CPU %", "machine CPU %", "rest CPU %"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for step in rows:
        cpu = step.get("watch_cpu_pct", {})
        commits = step.get("counters_per_s", {}).get("pg_commits")
        window = step.get("window_secs")
        per_commit = step["sent"] / (commits * window) if commits and window else None
        cells = [
            str(step["rate"]),
            f"{step['ratio']:.4f}",
            fmt(step["deliveries_per_s"]),
            fmt(step["p50_ms"], 1),
            fmt(step["p99_ms"], 1),
        ]
        cells += [fmt(cpu.get(name)) for name in nodes + others]
        machine = cpu.get("machine")
        # What the machine ran besides the watched processes and the generator (other work).
        rest = None
        if machine is not None:
            rest = machine - sum(cpu.get(name) or 0 for name in nodes + others)
            rest -= step.get("gen_cpu_pct") or 0
        counted = step.get("counters_per_s", {})
        writers = [counted.get(f"writer{n}") for n in range(1, len(nodes) + 1)]
        batches = [counted.get(f"batches{n}") for n in range(1, len(nodes) + 1)]
        busy = "/".join(fmt(None if w is None else 100 * w) for w in writers)
        cells += [fmt(commits), fmt(per_commit, 1), busy, "/".join(fmt(b) for b in batches)]
        cells += [fmt(counted.get("bus_missed")), fmt(counted.get("gap_repairs"), 1)]
        cells += [fmt(step.get("gen_cpu_pct")),
                  fmt(machine), fmt(rest)]
        print("| " + " | ".join(cells) + " |")
    print()


def summary(steps):
    labels = list(steps)
    # The highest rate every configuration ran cleanly: latencies are compared there.
    common = None
    for rows in steps.values():
        best = max((step["rate"] for step in rows if clean(step)), default=None)
        if best is not None:
            common = best if common is None else min(common, best)
    best = {}
    at_common = {}
    for label, rows in steps.items():
        good = [step for step in rows if clean(step)]
        best[label] = max(good, key=lambda step: step["deliveries_per_s"]) if good else None
        at_common[label] = next((step for step in rows if step["rate"] == common), None)

    def ratio(label, base, pick):
        base_label = next((name for name in labels if name.startswith(base + " ")), None)
        if base_label is None:
            return "-"
        mine, theirs = pick(label), pick(base_label)
        if not mine or not theirs:
            return "-"
        return f"{mine / theirs:.2f}x"

    def best_rate(label):
        return best[label]["deliveries_per_s"] if best[label] else None

    def p50(label):
        return at_common[label]["p50_ms"] if at_common[label] else None

    def p99(label):
        return at_common[label]["p99_ms"] if at_common[label] else None

    print(f"#### Summary: best clean step, and latency at {common} msg/s "
          "(the highest rate every configuration ran cleanly)")
    print()
    head = ["configuration", "best clean msg/s", "deliveries/s", "vs a", "vs b",
            f"p50 ms @{common}", "vs a", "vs b", f"p99 ms @{common}", "vs a", "vs b"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for label in labels:
        top = best[label]
        cells = [
            label,
            str(top["rate"]) if top else "-",
            fmt(best_rate(label)),
            ratio(label, "a", best_rate),
            ratio(label, "b", best_rate),
            fmt(p50(label), 1),
            ratio(label, "a", p50),
            ratio(label, "b", p50),
            fmt(p99(label), 1),
            ratio(label, "a", p99),
            ratio(label, "b", p99),
        ]
        print("| " + " | ".join(cells) + " |")
    print()


def main():
    if len(sys.argv) < 2:
        print("usage: cluster_table.py RECORDS.jsonl [MORE.jsonl ...]", file=sys.stderr)
        return 2
    steps, spread = load(sys.argv[1:])
    if not steps:
        print("no fan-out records", file=sys.stderr)
        return 1
    summary(steps)
    for label, rows in steps.items():
        step_table(label, rows, spread.get(label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
