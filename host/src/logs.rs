//! `berth logs [-f]`: the daemon's log, the VM's kernel console, the agent's
//! log, and what QEMU and the helper programs (virtiofsd,
//! vhost-device-vsock) printed, each in its own file under `$BERTH_HOME/logs`.
//!
//! `--since`: the daemon's and the agent's lines start with an RFC 3339
//! time (tracing's format); a line without one (a continuation) goes with
//! the line before it. The other logs carry no wall-clock times (the
//! kernel's are seconds since boot), so they are shown whole when written to
//! since then, and left out otherwise.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use crate::paths::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Daemon,
    Console,
    Agent,
    Qemu,
    Helpers,
}

fn sources(paths: &Paths, only: Option<Source>) -> Vec<(&'static str, PathBuf)> {
    let all = [
        (Source::Daemon, "daemon", paths.daemon_log()),
        (Source::Console, "console", paths.console_log()),
        (Source::Agent, "agent", paths.agent_log()),
        (Source::Qemu, "qemu", paths.qemu_log()),
        (Source::Helpers, "helpers", paths.helpers_log()),
    ];
    all.into_iter().filter(|(s, _, _)| only.is_none_or(|o| o == *s)).map(|(_, n, p)| (n, p)).collect()
}

/// `--since`'s cut-off: a duration ago (`90s`, `10m`, `1h30m`, `2d`) or an
/// RFC 3339 time, as `docker logs --since` takes them.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let bad = || {
        anyhow::anyhow!("--since {text:?}: use a duration (10m, 1h30m, 2d) or an RFC 3339 time (2026-01-31T12:00:00Z)")
    };
    let mut seconds: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        seconds = n.checked_mul(unit).and_then(|s| seconds.checked_add(s)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || seconds == 0 && text.is_empty() {
        bail!(bad());
    }
    Ok(now - chrono::Duration::seconds(seconds))
}

/// Which lines of one log `--since` keeps.
struct SinceFilter {
    since: Option<DateTime<Utc>>,
    timestamped: bool,
    keeping: bool,
}

impl SinceFilter {
    fn new(since: Option<DateTime<Utc>>, name: &str, path: &std::path::Path) -> SinceFilter {
        let timestamped = matches!(name, "daemon" | "agent");
        let written_since = || {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            modified.is_some_and(|m| since.is_some_and(|since| DateTime::<Utc>::from(m) >= since))
        };
        let keeping = since.is_none() || (!timestamped && written_since());
        SinceFilter { since, timestamped, keeping }
    }

    fn keep(&mut self, line: &[u8]) -> bool {
        let Some(since) = self.since.filter(|_| self.timestamped) else {
            return self.keeping;
        };
        let first = line.split(|b| *b == b' ').next().unwrap_or_default();
        if let Some(time) = std::str::from_utf8(first).ok().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
            self.keeping = time.with_timezone(&Utc) >= since;
        }
        self.keeping
    }
}

pub fn show(paths: &Paths, follow: bool, only: Option<Source>, since: Option<&str>) -> Result<()> {
    let since = since.map(|text| parse_since(text, DateTime::<Utc>::from(std::time::SystemTime::now()))).transpose()?;
    let sources = sources(paths, only);
    let mut filters: Vec<SinceFilter> =
        sources.iter().map(|(name, path)| SinceFilter::new(since, name, path)).collect();
    let mut out = std::io::stdout().lock();
    if !follow {
        for ((name, path), filter) in sources.iter().zip(&mut filters) {
            if sources.len() > 1 {
                writeln!(out, "==> {name} ({}) <==", path.display())?;
            }
            match std::fs::read(path) {
                Ok(bytes) => {
                    for line in bytes.split_inclusive(|b| *b == b'\n') {
                        if filter.keep(line) {
                            out.write_all(line)?;
                        }
                    }
                }
                Err(_) => writeln!(out, "(no log yet)")?,
            }
        }
        return Ok(());
    }
    // Follow: print what is there, then poll for appended lines (logs are
    // rotated at boot, so a file that shrank is read again from the start).
    let mut offsets = vec![0u64; sources.len()];
    let mut partial = vec![Vec::new(); sources.len()];
    loop {
        for (i, (name, path)) in sources.iter().enumerate() {
            let Ok(mut file) = File::open(path) else {
                continue;
            };
            let len = file.metadata()?.len();
            if len < offsets[i] {
                offsets[i] = 0;
            }
            if len == offsets[i] {
                continue;
            }
            file.seek(SeekFrom::Start(offsets[i]))?;
            let mut chunk = Vec::new();
            file.read_to_end(&mut chunk)?;
            offsets[i] += chunk.len() as u64;
            partial[i].extend_from_slice(&chunk);
            while let Some(pos) = partial[i].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial[i].drain(..=pos).collect();
                if !filters[i].keep(&line) {
                    continue;
                }
                if sources.len() > 1 {
                    write!(out, "[{name}] ")?;
                }
                out.write_all(&line)?;
            }
        }
        out.flush()?;
        // What an untimed log gets from now on is new, so within --since.
        for filter in &mut filters {
            filter.keeping |= !filter.timestamped;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = at("2026-12-01T12:00:00Z");
        assert_eq!(parse_since("10m", now).unwrap(), at("2026-12-01T11:50:00Z"));
        assert_eq!(parse_since("1h30m", now).unwrap(), at("2026-12-01T10:30:00Z"));
        assert_eq!(parse_since("2d", now).unwrap(), at("2026-11-29T12:00:00Z"));
        assert_eq!(parse_since("2026-12-01T13:00:00+02:00", now).unwrap(), at("2026-12-01T11:00:00Z"));
        for bad in ["", "10", "ten minutes", "5w", "m"] {
            assert!(parse_since(bad, now).unwrap_err().to_string().contains("--since"), "{bad:?}");
        }
    }

    #[test]
    fn since_keeps_timestamped_lines_and_their_continuations() {
        let mut filter = SinceFilter { since: Some(at("2026-12-01T11:00:00Z")), timestamped: true, keeping: false };
        let kept: Vec<&str> = [
            "2026-12-01T10:59:59.9Z  INFO old\n",
            "  continuation of old\n",
            "2026-12-01T11:00:00.000001Z  WARN new\n",
            "  continuation of new\n",
        ]
        .into_iter()
        .filter(|line| filter.keep(line.as_bytes()))
        .collect();
        assert_eq!(kept, ["2026-12-01T11:00:00.000001Z  WARN new\n", "  continuation of new\n"]);
    }
}
