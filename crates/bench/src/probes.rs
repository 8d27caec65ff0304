//! What a fan-out step watches besides the server: the CPU of named groups of processes (a
//! cluster's nodes, Redis, PostgreSQL, a balancer) and counters read by a shell command
//! (PostgreSQL's commits), each over the same window as the step's deliveries.

use std::collections::HashMap;
use std::time::Instant;

use crate::error::BenchError;
use crate::procfs;

/// Which processes a watch sums.
#[derive(Debug, Clone)]
enum Who {
    /// These PIDs.
    Pids(Vec<String>),
    /// Every process whose command name (`/proc/PID/comm`) is this, found at each sample:
    /// PostgreSQL runs one backend per connection, and they come and go.
    Command(String),
    /// The whole machine's busy time (user, nice, system, irq, softirq), from `/proc/stat`:
    /// on a shared machine, what everything else used is this minus the watched processes.
    Machine,
}

/// `NAME=PID[+PID…]` or `NAME=comm:COMMAND`: the summed CPU of those processes, per step;
/// `NAME=machine`: the whole machine's busy CPU time.
#[derive(Debug, Clone)]
pub struct Watch {
    pub name: String,
    who: Who,
}

/// `NAME=SHELL COMMAND` printing one number: its increase per second over each step.
#[derive(Debug, Clone)]
pub struct Counter {
    pub name: String,
    command: String,
}

fn split_spec<'a>(spec: &'a str, what: &str) -> Result<(&'a str, &'a str), BenchError> {
    match spec.split_once('=') {
        Some((name, rest)) if !name.is_empty() && !rest.is_empty() => Ok((name, rest)),
        _ => Err(BenchError::Usage(format!(
            "{what} {spec:?} is not NAME=VALUE"
        ))),
    }
}

impl Watch {
    pub fn parse(spec: &str) -> Result<Watch, BenchError> {
        let (name, rest) = split_spec(spec, "--watch")?;
        let who = match rest.strip_prefix("comm:") {
            Some(command) => Who::Command(command.to_owned()),
            None if rest == "machine" => Who::Machine,
            None => {
                let pids: Vec<String> = rest.split('+').map(str::to_owned).collect();
                if pids.iter().any(|pid| pid.parse::<u32>().is_err()) {
                    return Err(BenchError::Usage(format!(
                        "--watch {spec:?}: PIDs must be numbers joined by '+'"
                    )));
                }
                Who::Pids(pids)
            }
        };
        Ok(Watch {
            name: name.to_owned(),
            who,
        })
    }

    /// CPU seconds of each process of the group now.
    fn sample(&self) -> HashMap<String, f64> {
        let pids = match &self.who {
            Who::Pids(pids) => pids.clone(),
            Who::Command(command) => pids_named(command),
            Who::Machine => return machine_seconds(&[0, 1, 2, 5, 6]),
        };
        pids.into_iter()
            .filter_map(|pid| procfs::cpu_seconds(&pid).map(|cpu| (pid, cpu)))
            .collect()
    }

    pub fn start(&self) -> WatchMeter {
        WatchMeter {
            before: self.sample(),
            start: Instant::now(),
        }
    }

    /// Percent of one core the group used since `meter` started. A process that started
    /// meanwhile counts whole; one that exited meanwhile is lost (its last moments only, for
    /// PostgreSQL backends that a pool closes).
    pub fn percent(&self, meter: &WatchMeter) -> f64 {
        let wall = meter.start.elapsed().as_secs_f64();
        let used: f64 = self
            .sample()
            .iter()
            .map(|(pid, now)| now - meter.before.get(pid).copied().unwrap_or(0.0))
            .sum();
        if wall > 0.0 { 100.0 * used / wall } else { 0.0 }
    }
}

/// A group's CPU times at the start of a step.
pub struct WatchMeter {
    before: HashMap<String, f64>,
    start: Instant,
}

/// The sum of these columns of `/proc/stat`'s `cpu` line (all CPUs), in seconds, under one
/// key so that `percent` takes the difference like a process's.
fn machine_seconds(columns: &[usize]) -> HashMap<String, f64> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return HashMap::new();
    };
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return HashMap::new();
    };
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    let ticks: f64 = columns.iter().filter_map(|&at| fields.get(at)).sum();
    HashMap::from([("machine".to_owned(), ticks / procfs::TICKS_PER_SECOND)])
}

/// PIDs of the processes whose command name is `command`.
fn pids_named(command: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == command)
        })
        .collect()
}

impl Counter {
    pub fn parse(spec: &str) -> Result<Counter, BenchError> {
        let (name, command) = split_spec(spec, "--counter")?;
        Ok(Counter {
            name: name.to_owned(),
            command: command.to_owned(),
        })
    }

    /// Runs the command; `None` if it fails or prints no number.
    pub async fn read(&self) -> Option<f64> {
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .kill_on_drop(true)
            .output()
            .await
            .ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert!(Watch::parse("node1=123+456").is_ok());
        assert!(Watch::parse("postgres=comm:postgres").is_ok());
        assert!(Watch::parse("all=machine").is_ok());
        assert!(Watch::parse("redis=abc").is_err());
        assert!(Watch::parse("=1").is_err());
        assert!(Counter::parse("commits=echo 1").is_ok());
        assert!(Counter::parse("commits").is_err());
    }

    #[test]
    fn this_process_is_watched_by_pid_and_by_name() {
        let me = std::process::id().to_string();
        let by_pid = Watch::parse(&format!("me={me}")).expect("spec");
        assert_eq!(by_pid.sample().len(), 1);
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let by_name = Watch::parse(&format!("me=comm:{}", comm.trim_end())).expect("spec");
        assert!(by_name.sample().contains_key(&me));
    }

    #[tokio::test]
    async fn counters_read_a_number() {
        let counter = Counter::parse("n=echo 42").expect("spec");
        assert_eq!(counter.read().await, Some(42.0));
        let broken = Counter::parse("n=echo nope").expect("spec");
        assert_eq!(broken.read().await, None);
    }
}
