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
