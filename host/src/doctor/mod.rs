//! `berth doctor [--json]`: inspects the machine and the profile (this
//! file: the only part that reads anything), then runs the checks over what
//! it found (checks.rs) and prints each finding with its fix.
//!
//! Exits 1 when a check fails (Berth cannot work as it is), 0 otherwise:
//! warnings (TCG, a docker CLI pointed elsewhere) leave a working Berth.

mod checks;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};

pub use checks::troubleshooting_page;
use checks::{AssetFile, Finding, Helper, Inspection, Kvm, Level};

use crate::config::Config;
use crate::lifecycle;
use crate::paths::{Assets, Paths};
use crate::state::{Phase, State};

/// The helpers of the Linux VM backend, with how to install each.
fn helper_list() -> Vec<(&'static str, String)> {
    vec![
        ("qemu-system-x86_64", "install Debian's QEMU: `sudo apt-get install qemu-system-x86`".into()),
        ("virtiofsd", crate::paths::install_hint()),
        ("vhost-device-vsock", crate::paths::install_hint()),
    ]
}

pub fn run(paths: &Paths, json: bool) -> Result<i32> {
    let inspection = inspect(paths);
    let findings = checks::all(&inspection);
    let failed = findings.iter().any(|f| f.level == Level::Fail);
    if json {
        let report = serde_json::json!({
            "profile": inspection.profile,
            "ok": !failed,
            "checks": findings,
            "assets": inspection.asset_files,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_findings(&inspection.profile, &findings);
    }
    Ok(if failed { 1 } else { 0 })
}

fn print_findings(profile: &str, findings: &[Finding]) {
    let color = crate::ui::stdout_color();
    let paint = |code: &str, text: &str| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() };
    println!("berth doctor (profile {profile})");
    for finding in findings {
        let mark = match finding.level {
            Level::Ok => paint("32", "ok  "),
            Level::Info => paint("36", "info"),
            Level::Warn => paint("33", "warn"),
            Level::Fail => paint("31", "FAIL"),
        };
        println!("{mark} {:<12} {}", finding.check, finding.message);
        if let Some(fix) = &finding.fix {
            println!("     {:<12} fix: {fix}", "");
        }
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    println!(
        "{}",
        match worst {
            Level::Fail => "Berth cannot run as things are: see FAIL above (docs/TROUBLESHOOTING.md has more).",
            Level::Warn => "Berth can run; see the warnings above.",
            _ => "Everything Berth needs is in place.",
        }
    );
}

fn inspect(paths: &Paths) -> Inspection {
    let home_error = paths.check_dirs().err().map(|e| format!("{e:#}"));
    let state = home_error.is_none().then(|| lifecycle::effective_state(paths).ok()).flatten();
    // Nothing in a refused home is trusted (private_fs.rs says why).
    let trusted = home_error.is_none();
    let recorded = State::read(&paths.state_file()).ok().flatten().filter(|_| trusted);
    let daemon_alive = trusted && lifecycle::daemon_alive(paths).unwrap_or(false);
    let running = state.as_ref().is_some_and(|s| s.state == Phase::Running) && daemon_alive;
    let config = Config::load(&paths.config_file());
    let assets = Assets::locate();
    let context = lifecycle::home_context(paths);
    let docker_dir = crate::docker_context::docker_config_dir();
    let target = crate::docker_context::current_target(docker_dir.as_deref());
    let current_context_host = match (&target, &docker_dir) {
        (crate::docker_context::DockerTarget::Context(name), Some(dir)) => {
            crate::docker_context::context_host(dir, name)
        }
        _ => None,
    };
    let api_tcp = config.as_ref().ok().and_then(|c| c.api_tcp);
    Inspection {
        profile: paths.profile_name().to_string(),
        kvm: inspect_kvm(),
        accel_env: std::env::var("BERTH_ACCEL").ok().filter(|a| !a.is_empty()),
        running_accel: state.as_ref().filter(|_| running).and_then(|s| s.accel.clone()),
        config_error: config.as_ref().err().map(|e| format!("{e:#}")),
        assets_error: assets.as_ref().err().map(|e| format!("{e:#}")),
        asset_files: assets.as_ref().map(asset_files).unwrap_or_default(),
        helpers: helper_list()
            .into_iter()
            .map(|(name, install)| {
                let path = find_helper(assets.as_ref().ok(), name);
                let version = path.as_deref().and_then(crate::version::first_line_of_version);
                Helper { name: name.into(), path, version, install }
            })
            .collect(),
        disk_allocated: disk_allocated(&paths.disk_image()),
        disk_gib: config.as_ref().ok().map(|c| c.disk_gib),
        free_bytes: free_bytes(&paths.home),
        home_error,
        daemon_alive,
        pid_file: std::fs::read_to_string(paths.pid_file())
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .filter(|_| trusted),
        phase: state
            .as_ref()
            .and_then(|s| serde_json::to_value(s.state).ok()?.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into()),
        state_error: state.as_ref().and_then(|s| s.error.clone()).or(recorded.and_then(|s| s.error)),
        socket: paths.docker_socket(),
        socket_answers: daemon_alive && socket_answers(&paths.docker_socket()),
        docker_cli: find_on_path("docker"),
        docker_target: Some(target),
        context_name: context.name.clone(),
        context_is_current_by_design: context.make_current,
        context_host: docker_dir.as_deref().and_then(|dir| crate::docker_context::context_host(dir, &context.name)),
        current_context_host,
        shares: config.as_ref().map(|c| c.shares.clone()).unwrap_or_default(),
        api_tcp: api_tcp.map(|a| a.to_string()),
        api_tcp_free: api_tcp.filter(|_| !daemon_alive).map(|a| std::net::TcpListener::bind(a).is_ok()),
        clock_skew_ms: if running { state.as_ref().and_then(|s| clock_skew_ms(paths, s)) } else { None },
        last_log_error: last_log_error(paths).filter(|_| trusted),
    }
}

fn inspect_kvm() -> Kvm {
    if !Path::new("/dev/kvm").exists() {
        return Kvm::Missing;
    }
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Kvm::Unopenable(err.to_string());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if crate::vm::qemu::kvm_usable(true, &cpuinfo, crate::vm::arch::GuestArch::default_for_host()) {
        Kvm::Usable
    } else {
        Kvm::NoHardwareVirtualization
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn find_helper(assets: Option<&Assets>, name: &str) -> Option<PathBuf> {
    match assets {
        Some(assets) => assets.find_helper(name),
        None => find_on_path(name),
    }
}

fn asset_files(assets: &Assets) -> Vec<AssetFile> {
    let mut names = vec![assets.initramfs()];
    names.extend(assets.kernel().ok());
    names
        .into_iter()
        .filter_map(|path| {
            let mut file = std::fs::File::open(&path).ok()?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            loop {
                let n = file.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
                hasher.update(&buf[..n]);
            }
            let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            Some(AssetFile { path, bytes, sha256 })
        })
        .collect()
}

fn disk_allocated(image: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    // st_blocks is in 512-byte units whatever the filesystem's block size.
    std::fs::metadata(image).ok().map(|m| m.blocks() * 512)
}

/// Free space for the user on the filesystem of `dir` (or its nearest existing parent).
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

fn socket_answers(socket: &Path) -> bool {
    use std::io::Write;
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: berth\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.")
}

/// Host minus guest, in ms, as the daemon's clock sync measures it.
fn clock_skew_ms(paths: &Paths, state: &State) -> Option<i64> {
    let endpoint = state.agent.clone()?;
    let key = crate::agent_client::read_key_file(&paths.agent_key_file()).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async move {
        let mut client = endpoint.client(&key);
        let sent = crate::clock_sync::host_now_ns();
        let request = berth_agent_proto::SyncClockRequest { correct_by_nanos: 0 };
        let reading = tokio::time::timeout(Duration::from_secs(5), client.sync_clock(request)).await.ok()?.ok()?;
        let answered = crate::clock_sync::host_now_ns();
        Some(crate::clock_sync::offset_ns(sent, answered, reading.into_inner().guest_unix_nanos) / 1_000_000)
    })
}

/// The last ERROR line of the daemon and agent logs (tracing's level
/// column), or the kernel's panic, whichever log has one; the daemon's first.
fn last_log_error(paths: &Paths) -> Option<(String, String)> {
    let logs = [
        ("daemon", paths.daemon_log(), " ERROR "),
        ("agent", paths.agent_log(), " ERROR "),
        ("console", paths.console_log(), "Kernel panic"),
    ];
    logs.into_iter().find_map(|(name, path, marker)| {
        let text = std::fs::read(&path).ok()?;
        let text = String::from_utf8_lossy(&text);
        let line = text.lines().rev().find(|line| line.contains(marker))?;
        Some((name.to_string(), line.trim().chars().take(300).collect()))
    })
}
