//! Small facts about the machine, read from /proc.

pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

pub fn meminfo() -> MemInfo {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    MemInfo { total: kib_field(&text, "MemTotal:") * 1024, available: kib_field(&text, "MemAvailable:") * 1024 }
}

pub fn self_rss_bytes() -> u64 {
    kib_field(&std::fs::read_to_string("/proc/self/status").unwrap_or_default(), "VmRSS:") * 1024
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<f64>().ok()))
        .map(|secs| (secs * 1000.0) as u64)
        .unwrap_or(0)
}

pub fn online_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// Total CPU time of the machine in nanoseconds (/proc/stat's first line),
/// Docker's `system_cpu_usage`.
pub fn system_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf takes a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

/// One `ps -ef` row for `pid`: UID PID PPID C STIME TTY TIME CMD.
pub fn ps_row(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(0) ppid(1) ... tty_nr(4) ... utime(11) stime(12).
    let ppid = fields.get(1)?.to_string();
    // SAFETY: sysconf takes a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let cpu_secs = (fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?) / hz;
    let time = format!("{:02}:{:02}:{:02}", cpu_secs / 3600, cpu_secs / 60 % 60, cpu_secs % 60);
    let tty = if fields.get(4)? == &"0" { "?".to_string() } else { "pts".to_string() };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0")
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = String::from_utf8_lossy(&cmdline).trim_end_matches('\0').replace('\0', " ");
    Some(vec![uid, pid.to_string(), ppid, "0".into(), "-".into(), tty, time, cmd])
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_kib_fields() {
        let text = "MemTotal:        2017192 kB\nMemFree:  100 kB\nMemAvailable:    1843712 kB\n";
        assert_eq!(super::kib_field(text, "MemTotal:"), 2017192);
        assert_eq!(super::kib_field(text, "MemAvailable:"), 1843712);
        assert_eq!(super::kib_field(text, "Missing:"), 0);
    }
}
