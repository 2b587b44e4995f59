//! `berth logs [-f]`: the daemon's log, the VM's kernel console, the agent's
//! log, and what QEMU and the helper programs (virtiofsd,
//! vhost-device-vsock) printed, each in its own file under `$BERTH_HOME/logs`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

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

pub fn show(paths: &Paths, follow: bool, only: Option<Source>) -> Result<()> {
    let sources = sources(paths, only);
    let mut out = std::io::stdout().lock();
    if !follow {
        for (name, path) in &sources {
            if sources.len() > 1 {
                writeln!(out, "==> {name} ({}) <==", path.display())?;
            }
            match std::fs::read(path) {
                Ok(bytes) => out.write_all(&bytes)?,
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
                if sources.len() > 1 {
                    write!(out, "[{name}] ")?;
                }
                out.write_all(&line)?;
            }
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}
