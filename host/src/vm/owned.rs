//! Processes a backend starts on the host (VMM, helpers, a local agent):
//! they die with the daemon, and their sockets are waited for.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// Spawns a process that dies with the daemon (platform::spawn_owned), so a
/// killed daemon leaves no VM or helper behind; its output goes to `log`.
pub fn spawn_owned(cmd: &mut Command, log: &Path, name: &str) -> Result<Child> {
    let log_file = crate::private_fs::open_for_writing(log, true)?;
    cmd.stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file).kill_on_drop(true);
    crate::platform::spawn_owned(cmd).with_context(|| format!("starting {name}"))
}

pub async fn wait_for_socket(path: &Path, child: &mut Child, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited during start-up ({status}); see `berth logs`");
        }
        if Instant::now() > deadline {
            bail!("{name} did not create {} in time", path.display());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
