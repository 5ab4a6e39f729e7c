//! Measurement helpers of the benchmarks: percentiles of latency samples,
//! a process's memory and CPU time from /proc, the machine's description,
//! and clock readings comparable across processes (CLOCK_REALTIME).

use std::fmt;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: what `date +%s%N` prints on the node,
/// so that a timestamp written by a node step and one taken here compare.
pub fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The time now as RFC 3339 UTC (seconds precision is enough for a run's date).
pub fn utc_now() -> String {
    rdrunner_actors::model::rfc3339(SystemTime::now())
}

/// The 1, 5 and 15 minute load averages: the machine may be shared, and a
/// figure taken under load says so.
pub fn load_avg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Latency samples and their order statistics.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Samples { sorted: v }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `p` (0 < p <= 100); `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, self.sorted.len()) - 1])
    }

    pub fn max(&self) -> Option<Duration> {
        self.sorted.last().copied()
    }
}

/// A duration as the tables show it: milliseconds with one decimal under 10 s.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Memory and CPU time of one process, from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUsage {
    /// Resident set size now (VmRSS), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time so far, threads that ended included, in
    /// clock ticks (10 ms).
    pub cpu: Duration,
    /// CPU time of the live threads, to the nanosecond: for a process whose
    /// threads all live on (an idle runner).
    pub live_threads_cpu: Option<Duration>,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`; `None` once the process is gone.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let tick_cpu = Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
    Some(ProcUsage {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        cpu: tick_cpu,
        // Clock ticks are 10 ms: too coarse for an idle process.
        live_threads_cpu: schedstat_cpu(pid),
    })
}

/// The number of threads of a process (`Threads:` in `/proc/PID/status`).
pub fn threads(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The machine's count of connections dropped because a listening
/// socket's accept queue was full (`TcpExt: ListenOverflows` in
/// `/proc/net/netstat`); machine-wide, so other work counts too.
pub fn listen_overflows() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// CPU time of a process and of every child it has reaped (utime, stime,
/// cutime, cstime): for a server that forks a process per connection
/// (sshd), the CPU of every connection that has ended.
pub fn cpu_with_children(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// CPU time of every thread of the process in nanoseconds, from
/// `/proc/PID/task/*/schedstat` (first field: time spent on a CPU).
/// Threads that already ended are not counted, so this is for long-lived
/// processes whose threads live as long as they do.
fn schedstat_cpu(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_mib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let os = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("PRETTY_NAME="))
                    .map(|l| l["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
            })
            .unwrap_or_default();
        Machine {
            cpu_model,
            cores,
            memory_mib,
            kernel,
            os,
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores ({}), {:.1} GiB memory, Linux {} ({})",
            self.cores,
            self.cpu_model,
            self.memory_mib as f64 / 1024.0,
            self.kernel,
            self.os
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(s.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(s.max(), Some(Duration::from_millis(100)));
        assert_eq!(Samples::new(vec![]).percentile(50.0), None);
    }

    #[test]
    fn own_usage_is_readable() {
        let u = proc_usage(std::process::id()).expect("own /proc entry");
        assert!(u.rss_kib > 0 && u.peak_rss_kib >= u.rss_kib);
    }
}
