//! `berth start`, `stop` and `status`: the CLI side of the daemon's life.
//!
//! One daemon per `BERTH_HOME`. It holds an exclusive lock on
//! `run/daemon.lock` for its whole life, so "is the daemon alive?" is
//! answered by the kernel (a lock dies with its holder), not by a pid file
//! that may be stale after a crash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::paths::Paths;
use crate::platform::{self, ExclusiveLock};
use crate::state::{Phase, State};
use crate::vm::VmProcess;

/// What the daemon tells `berth start` on its stdout, once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StartOutcome {
    Ready { boot_ms: u64, accel: String },
    AlreadyRunning,
    Failed { error: String },
}

/// How long `berth start` waits for a boot (TCG on a busy machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the daemon lock without blocking; None when another process holds it.
pub fn try_lock(paths: &Paths) -> Result<Option<ExclusiveLock>> {
    let file = crate::private_fs::open_for_writing(&paths.lock_file(), false)?;
    platform::try_lock_exclusive(file).context("locking the daemon lock file")
}

pub fn daemon_alive(paths: &Paths) -> Result<bool> {
    if !paths.run_dir().exists() {
        return Ok(false);
    }
    Ok(try_lock(paths)?.is_none())
}

/// The state as the user should see it: a state file that claims a live VM
/// while no daemon holds the lock describes a crash.
pub fn effective_state(paths: &Paths) -> Result<State> {
    let alive = daemon_alive(paths)?;
    let recorded = State::read(&paths.state_file())?;
    Ok(match recorded {
        Some(state) if alive => state,
        Some(mut state) if matches!(state.state, Phase::Running | Phase::Starting) => {
            state.state = Phase::Error;
            state.error = Some(format!(
                "the Berth daemon (pid {}) is gone without shutting the VM down (crash or host reboot); \
                 `berth start` recovers, `berth logs` shows what happened",
                state.daemon_pid
            ));
            state
        }
        Some(state) => state,
        None if alive => State::new(Phase::Starting),
        None => State::new(Phase::Stopped),
    })
}

pub fn start(paths: &Paths, config_changes: &[(&str, toml::Value)]) -> Result<()> {
    paths.ensure_dirs()?;
    apply_start_flags(paths, config_changes)?;
    // Fail fast, in the user's terminal, on what the daemon would fail on.
    let config = Config::load(&paths.config_file())?;
    crate::vm::host_backend(config.backend, config.arch, config.hypervisor)?;

    // The lock says a daemon exists, not that it serves: one killed a
    // moment ago still holds it while the kernel releases its files, and
    // its state file still says running. So a holder is judged by whether
    // it answers, and one that lets go of the lock is replaced.
    for _ in 0..3 {
        if daemon_alive(paths)? && wait_for_lock_holder(paths)? == LockHolder::Serving {
            crate::ui::say("berth is already running");
            return Ok(());
        }
        match spawn_daemon(paths, &config)? {
            StartOutcome::Ready { boot_ms, accel } => {
                crate::ui::say(format_args!(
                    "Berth VM{} is running ({accel}, ready in {:.2}s)",
                    profile_suffix(paths),
                    boot_ms as f64 / 1000.0
                ));
                warn_if_tcp(paths);
                use_docker_context(paths);
                return Ok(());
            }
            // Another process took the lock first: judge it as above.
            StartOutcome::AlreadyRunning => continue,
            StartOutcome::Failed { error } => bail!("{error}\n(see `berth logs` for details)"),
        }
    }
    bail!("another process keeps taking the lock {} without serving the Docker API", paths.lock_file().display())
}

/// Starts `berth daemon` in the background and reads the one line it
/// reports on its stdout.
fn spawn_daemon(paths: &Paths, config: &Config) -> Result<StartOutcome> {
    let disk = crate::vm::disk::image_for(&paths.disk_image(), config.hypervisor);
    if config.backend == crate::vm::BackendKind::Vm && !disk.exists() {
        crate::ui::say(format_args!(
            "First start{}: creating a {} GiB data disk (sparse); the VM formats it, so this boot takes longer",
            profile_suffix(paths),
            config.disk_gib
        ));
    }
    let exe = std::env::current_exe().context("locating the berth binary")?;
    let log = crate::private_fs::open_for_writing(&paths.daemon_log(), true)?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon").env("BERTH_HOME", &paths.home).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    platform::detach_from_terminal(&mut cmd);
    let mut child = cmd.spawn().context("starting the berth daemon")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
        anyhow::anyhow!("the VM did not become ready within {}s; see `berth logs`", START_TIMEOUT.as_secs())
    })?;
    if line.trim().is_empty() {
        let status = child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_else(|| "still running".into());
        bail!("the berth daemon stopped before the VM was ready ({status}); see `berth logs`");
    }
    serde_json::from_str(line.trim()).context("unexpected reply from the berth daemon")
}

/// Writes `berth start --cpus/--memory/--disk` into config.toml, as Colima's
/// flags do, so the next plain `berth start` keeps them. A running VM is not
/// changed under its user: the flags must wait for a stop.
fn apply_start_flags(paths: &Paths, changes: &[(&str, toml::Value)]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let path = paths.config_file();
    let before = Config::load(&path)?;
    let (new_text, after) = crate::config_edit::prepare(&path, changes)?;
    if after == before {
        return Ok(());
    }
    if daemon_alive(paths)? {
        bail!(
            "berth{} is running with vm.cpus = {}, vm.memory-mib = {}, vm.disk-gib = {}; `berth stop` it first to \
             change them",
            profile_suffix(paths),
            before.cpus,
            before.memory_mib,
            before.disk_gib
        );
    }
    let disk_bytes = std::fs::metadata(paths.disk_image()).map(|m| m.len()).unwrap_or(0);
    if disk_bytes > after.disk_gib << 30 {
        bail!(
            "--disk: the data disk is already {} GiB; it can grow, not shrink (delete {} to start over, losing its images and volumes)",
            disk_bytes >> 30,
            paths.disk_image().display()
        );
    }
    crate::state::write_atomically(&path, new_text.as_bytes())?;
    crate::ui::say(format_args!(
        "{}: vm.cpus = {}, vm.memory-mib = {}, vm.disk-gib = {}",
        path.display(),
        after.cpus,
        after.memory_mib,
        after.disk_gib
    ));
    Ok(())
}

/// ` (profile NAME)` for messages about a profile other than the default.
pub fn profile_suffix(paths: &Paths) -> String {
    paths.profile.as_ref().map(|name| format!(" (profile {name})")).unwrap_or_default()
}

/// One line on stderr when the API is open on TCP: anyone who can connect
/// there drives the engine, so whoever starts Berth should know.
fn warn_if_tcp(paths: &Paths) {
    if let Ok(Some(State { docker_tcp: Some(address), .. })) = State::read(&paths.state_file()) {
        eprintln!("berth: warning: the Docker API is also served on {address} without authentication or TLS ([api] tcp in config.toml)");
    }
}

#[derive(Debug, PartialEq)]
enum LockHolder {
    /// A daemon with a running VM that answers on its API socket.
    Serving,
    /// The lock is free again: its holder was exiting (or was a CLI
    /// probing it).
    Gone,
}

/// Waits until the daemon lock's holder serves the Docker API (it was
/// running, or it was booting and is ready now) or lets go of the lock (it
/// was stopping, or failed: a daemon whose VM failed exits).
fn wait_for_lock_holder(paths: &Paths) -> Result<LockHolder> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !daemon_alive(paths)? {
            return Ok(LockHolder::Gone);
        }
        match State::read(&paths.state_file())? {
            Some(State { state: Phase::Running, .. }) if api_answers(paths) => return Ok(LockHolder::Serving),
            _ if Instant::now() > deadline => bail!("the VM did not become ready in time; see `berth logs`"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether a daemon answers `GET /_ping` on the API socket. A connect
/// alone is not enough: a listening socket accepts into its backlog even
/// while its process is being torn down.
#[cfg(unix)]
fn api_answers(paths: &Paths) -> bool {
    pings_back(&paths.docker_socket())
}

#[cfg(unix)]
fn pings_back(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let timeout = Some(Duration::from_secs(2));
    let mut status_line = [0u8; 12];
    stream.set_read_timeout(timeout).is_ok()
        && stream.set_write_timeout(timeout).is_ok()
        && stream.write_all(b"GET /_ping HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n").is_ok()
        && stream.read_exact(&mut status_line).is_ok()
        && &status_line == b"HTTP/1.1 200"
}

/// The named pipe's server is the daemon's own handle too; as before, a
/// held lock with a running state is taken for a live daemon.
#[cfg(not(unix))]
fn api_answers(_paths: &Paths) -> bool {
    true
}

pub fn stop(paths: &Paths) -> Result<()> {
    if !paths.run_dir().exists() {
        crate::ui::say("berth is not running");
        return Ok(());
    }
    // Recovery happens while holding the lock, which keeps a concurrent `start` out.
    if let Some(_lock) = try_lock(paths)? {
        let recovered = recover_stale(paths)?;
        crate::ui::say(if recovered {
            "berth was not running (cleaned up after a daemon that died)"
        } else {
            "berth is not running"
        });
        return Ok(());
    }
    let pid = read_pid(&paths.pid_file()).context("the daemon holds its lock but its pid file is unreadable")?;
    platform::request_stop(pid).context("signalling the berth daemon")?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while daemon_alive(paths)? {
        if Instant::now() > deadline {
            tracing::warn!(pid, "the daemon did not stop in time; killing it");
            let _ = platform::kill_now(pid);
            // "stopped" only once the lock is free: a `start` right after
            // must not meet the dying daemon.
            let killed_at = Instant::now();
            while killed_at.elapsed() < Duration::from_secs(5) {
                if let Some(_lock) = try_lock(paths)? {
                    recover_stale(paths)?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::ui::say(format_args!("berth{} stopped", profile_suffix(paths)));
    Ok(())
}

fn read_pid(path: &Path) -> Result<u32> {
    Ok(std::fs::read_to_string(path)?.trim().parse()?)
}

/// After a daemon died without cleaning up: kill what is left of its VM,
/// remove its sockets and pid file, and record that it stopped. Call it only
/// while holding the daemon lock.
/// Returns whether there was anything to recover.
pub fn recover_stale(paths: &Paths) -> Result<bool> {
    let Some(mut state) = State::read(&paths.state_file()).unwrap_or(None) else {
        return Ok(false);
    };
    if !matches!(state.state, Phase::Running | Phase::Starting) {
        return Ok(false);
    }
    tracing::warn!(pid = state.daemon_pid, "recovering after a daemon that did not shut down");
    for process in &state.processes {
        kill_if_ours(process, paths);
    }
    if let Ok(entries) = std::fs::read_dir(paths.run_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            let is_socket = platform::is_socket(&entry.file_type()?);
            if is_socket || path == paths.pid_file() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    state.state = Phase::Stopped;
    state.error = Some(format!("recovered after daemon pid {} died", state.daemon_pid));
    state.processes.clear();
    state.write(&paths.state_file())?;
    Ok(true)
}

/// Kills a recorded VM process, but only if that pid still runs a program
/// that refers to our run directory: pids are reused after a host reboot.
fn kill_if_ours(process: &VmProcess, paths: &Paths) {
    let cmdline = platform::command_line(process.pid).unwrap_or_default();
    let ours = cmdline.contains(paths.run_dir().to_string_lossy().as_ref());
    if ours {
        tracing::warn!(name = %process.name, pid = process.pid, "killing a leftover VM process");
        let _ = platform::kill_now(process.pid);
    }
}

#[derive(Serialize)]
struct StatusJson {
    /// `default`, or the `--profile` name.
    profile: String,
    state: Phase,
    docker_host: String,
    /// This home's docker context (see docker_context.rs).
    docker_context: String,
    /// `tcp://IP:port` when `[api] tcp` is on, else null.
    docker_tcp: Option<String>,
    accel: Option<String>,
    /// The VM's outbound network where the backend chose one (QEMU: passt or slirp).
    uplink: Option<crate::vm::Uplink>,
    boot_ms: Option<u64>,
    agent_version: Option<String>,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    kernel_release: Option<String>,
    daemon_pid: Option<u32>,
    error: Option<String>,
}

pub fn status(paths: &Paths, json: bool) -> Result<()> {
    let state = effective_state(paths)?;
    let live = matches!(state.state, Phase::Running | Phase::Starting);
    let out = StatusJson {
        profile: paths.profile_name().to_string(),
        state: state.state,
        docker_host: paths.docker_api().docker_host(),
        docker_context: home_context(paths).name,
        docker_tcp: state.docker_tcp.clone().filter(|_| live),
        accel: state.accel.clone().filter(|_| live),
        uplink: state.uplink.filter(|_| live),
        boot_ms: state.boot_ms.filter(|_| live),
        agent_version: state.agent_version.clone().filter(|_| live),
        cpus: state.cpus.filter(|_| live),
        memory_mib: state.memory_mib.filter(|_| live),
        kernel_release: state.kernel_release.clone().filter(|_| live),
        daemon_pid: live.then_some(state.daemon_pid),
        error: state.error.clone().filter(|_| state.state == Phase::Error),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("state:       {}", serde_json::to_value(out.state)?.as_str().unwrap_or("?"));
        if let Some(err) = &out.error {
            println!("error:       {err}");
        }
        if live {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!("accel:       {}", opt(out.accel));
            if let Some(uplink) = out.uplink {
                println!("uplink:      {}", uplink.name());
            }
            println!("boot:        {}", opt(out.boot_ms.map(|ms| format!("{:.2}s", ms as f64 / 1000.0))));
            println!("agent:       {}", opt(out.agent_version));
            println!("kernel:      {}", opt(out.kernel_release));
            println!("cpus:        {}", opt(out.cpus.map(|c| c.to_string())));
            println!("memory:      {}", opt(out.memory_mib.map(|m| format!("{m} MiB"))));
        }
        println!("docker_host: {}", out.docker_host);
        println!("context:     {}", out.docker_context);
        if let Some(tcp) = &out.docker_tcp {
            println!("docker_tcp:  {tcp} (no authentication)");
        }
    }
    Ok(())
}

/// Sets up this home's docker context (see docker_context.rs); a failure
/// is reported, not fatal: the API works through DOCKER_HOST too.
fn use_docker_context(paths: &Paths) {
    let Some(dir) = crate::docker_context::docker_config_dir() else { return };
    let host = paths.docker_api().docker_host();
    let context = home_context(paths);
    match crate::docker_context::install(&dir, &context, &host) {
        Ok(()) if context.make_current => {
            crate::ui::say(format_args!("docker context \"{}\" is current ({host})", context.name))
        }
        Ok(()) => crate::ui::say(format_args!(
            "docker context \"{name}\" points at this Berth ({host}); the current context is unchanged \
             (BERTH_HOME is not the default home): use `docker --context {name}` or `docker context use {name}`",
            name = context.name
        )),
        Err(err) => eprintln!("berth: the docker context was not set up: {err:#}"),
    }
    // DOCKER_HOST wins over any context (Docker Desktop's installer sets it on Windows).
    if let Some(other) =
        std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty() && !paths.docker_api().is_named_by(h))
    {
        eprintln!(
            "berth: DOCKER_HOST={other} overrides the docker context, so `docker` does not reach this Berth; \
             unset it, or set it to {host}"
        );
    }
}

pub fn home_context(paths: &Paths) -> crate::docker_context::HomeContext {
    crate::docker_context::HomeContext::for_profile(&paths.home, paths.profile.as_deref(), paths.root_is_default())
}

#[cfg(all(test, unix))]
mod tests {
    use super::pings_back;
    use std::io::{Read, Write};

    #[test]
    fn only_a_daemon_that_answers_the_ping_counts() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        assert!(!pings_back(&socket), "no socket");

        // Bound and listening, but its process never accepts (one being
        // torn down): the connect succeeds, the ping does not.
        let silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(!pings_back(&socket), "a listener that never answers");
        drop(silent);
        std::fs::remove_file(&socket).unwrap();

        let serving = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = serving.accept().unwrap();
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        assert!(pings_back(&socket), "a daemon that answers");
        assert!(server.join().unwrap().starts_with("GET /_ping HTTP/1.1\r\n"));
    }
}
