//! What the kernel says about a process: resident memory and CPU time, from `/proc`.

use std::time::Instant;

/// Kernel clock ticks per second for `/proc/PID/stat` times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Resident set size of `pid` (`self` for this process) in KiB, from `VmRSS` in its status.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of `pid` in seconds, from fields 14 and 15 of its stat.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its closing paren.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// CPU use of one process over an interval, as a percentage of one core.
pub struct CpuMeter {
    pid: String,
    start_cpu: f64,
    start: Instant,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            pid: pid.to_owned(),
            start_cpu: cpu_seconds(pid).unwrap_or(0.0),
            start: Instant::now(),
        }
    }

    /// Percent of one core used since `start` (200 = both cores of this machine).
    pub fn percent(&self) -> f64 {
        let wall = self.start.elapsed().as_secs_f64();
        let used = cpu_seconds(&self.pid).unwrap_or(self.start_cpu) - self.start_cpu;
        if wall > 0.0 { 100.0 * used / wall } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(rss_kib("self").is_some_and(|kib| kib > 0));
        assert!(cpu_seconds("self").is_some());
    }
}
