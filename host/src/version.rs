//! `berth version`: every piece a bug report needs, the running VM's agent
//! and kernel (from the daemon's state record) and the helper programs the
//! backend would start (each asked for its own `--version`).

use std::process::Command;

use anyhow::Result;
use serde::Serialize;

use crate::lifecycle;
use crate::paths::{Assets, Paths};
use crate::state::Phase;

#[derive(Serialize)]
struct Versions {
    berth: String,
    /// Of the running VM; None when no VM runs.
    agent: Option<String>,
    kernel: Option<String>,
    helpers: Vec<Helper>,
}

#[derive(Serialize)]
struct Helper {
    name: String,
    /// The first line of its `--version`, or why there is none.
    version: String,
}

/// The helpers of this platform's VM backend.
const HELPERS: &[&str] =
    if cfg!(target_os = "linux") { &["qemu-system-x86_64", "virtiofsd", "vhost-device-vsock"] } else { &[] };

pub fn show(paths: &Paths, json: bool) -> Result<()> {
    let state = lifecycle::effective_state(paths)?;
    let running = state.state == Phase::Running;
    let assets = Assets::locate().ok();
    let helpers = HELPERS
        .iter()
        .map(|name| {
            let version = match assets.as_ref().map(|a| a.helper(name, "")) {
                Some(Ok(path)) => first_line_of_version(&path),
                _ => "not found".to_string(),
            };
            Helper { name: name.to_string(), version }
        })
        .collect();
    let versions = Versions {
        berth: env!("CARGO_PKG_VERSION").into(),
        agent: state.agent_version.filter(|_| running),
        kernel: state.kernel_release.filter(|_| running),
        helpers,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    let not_running = || "- (no VM running)".to_string();
    println!("{:<20} {}", "berth", versions.berth);
    println!("{:<20} {}", "agent", versions.agent.unwrap_or_else(not_running));
    println!("{:<20} {}", "kernel", versions.kernel.unwrap_or_else(not_running));
    for Helper { name, version } in versions.helpers {
        println!("{name:<20} {version}");
    }
    Ok(())
}

fn first_line_of_version(program: &std::path::Path) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(err) => format!("{} (cannot run: {err})", program.display()),
    }
}
