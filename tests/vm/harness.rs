// Shared by the `vm` and `cli` test binaries; each uses part of it.
#![allow(dead_code)]

//! A Berth instance for one test: its own BERTH_HOME, the real `berth`
//! binary, a real VM. Dropping it stops the VM and checks that nothing is
//! left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub struct Berth {
    pub home: tempfile::TempDir,
    pub share: tempfile::TempDir,
}

/// The berth binary under test: $BERTH_BIN, else the newest of the
/// workspace's release and debug builds.
pub fn berth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(bin);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release/berth", "debug/berth"]
        .iter()
        .map(|p| target.join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no berth binary: build it (cargo build -p berth) or set BERTH_BIN")
}

impl Berth {
    /// A Berth home whose VM shares one fresh temporary directory.
    pub fn new() -> Berth {
        let share = tempfile::Builder::new().prefix("berth share ").tempdir().unwrap();
        Berth::with_config(share, "")
    }

    /// A Berth home with exactly this config.toml.
    pub fn with_config_file(contents: &str) -> Berth {
        let share = tempfile::tempdir().unwrap();
        let home = tempfile::Builder::new().prefix("berth-home-").tempdir().unwrap();
        std::fs::write(home.path().join("config.toml"), contents).unwrap();
        Berth { home, share }
    }

    pub fn with_config(share: tempfile::TempDir, extra_vm: &str) -> Berth {
        let home = tempfile::Builder::new().prefix("berth-home-").tempdir().unwrap();
        let config = format!(
            "[vm]\ncpus = 1\nmemory-mib = 512\ndisk-gib = 2\nshares = [{:?}]\n{extra_vm}",
            share.path().display().to_string()
        );
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        Berth { home, share }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        // The docker context goes to this test's own docker config.
        cmd.args(args)
            .env("BERTH_HOME", self.home.path())
            .env("DOCKER_CONFIG", self.home.path().join("docker-config"))
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running berth")
    }

    /// Runs berth and insists on success, showing everything on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth {args:?} failed: {}\n--- logs ---\n{}", describe(&out), self.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start(&self) {
        self.ok(&["start"]);
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json is JSON")
    }

    pub fn shell(&self, command: &[&str]) -> Output {
        let mut args = vec!["shell", "--"];
        args.extend_from_slice(command);
        self.run(&args)
    }

    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["logs"]).output().map(|o| o.stdout).unwrap_or_default()).into_owned()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.home.path().join("run")
    }

    /// Live (non-zombie) processes whose command line mentions this home.
    pub fn live_processes(&self) -> Vec<String> {
        processes_mentioning(&self.home.path().display().to_string())
    }

    /// Files left in run/ other than the lock and the state record.
    pub fn leftover_run_files(&self) -> Vec<String> {
        std::fs::read_dir(self.run_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "daemon.lock" && n != "state.json")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the VM and asserts that no process, socket or pid file is left.
    pub fn stop_and_check_clean(&self) {
        self.ok(&["stop"]);
        let procs = self.live_processes();
        assert!(procs.is_empty(), "processes left after stop: {procs:#?}");
        let files = self.leftover_run_files();
        assert!(files.is_empty(), "files left in run/ after stop: {files:?}");
        assert_eq!(self.status()["state"], "stopped");
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.cmd(&["stop"]).output();
        // A test that failed half-way must not leak a VM into the next one.
        for line in self.live_processes() {
            if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain kill(2) on a pid we just read.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// "pid cmdline" of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 3, after the parenthesised command name, is the state.
        let zombie = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')).unwrap_or(true);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !zombie && cmdline.contains(needle) {
            found.push(format!("{name} {cmdline}"));
        }
    }
    found
}

pub fn pid_alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false)
}

/// The real docker CLI against this Berth's API socket.
pub fn docker(berth: &Berth, args: &[&str]) -> Output {
    docker_command(berth, args).output().expect("the docker CLI (packaging/setup.sh installs it)")
}

/// Runs docker and insists on success (the berth logs in the failure).
pub fn docker_ok(berth: &Berth, args: &[&str]) -> String {
    let out = docker(berth, args);
    assert!(out.status.success(), "docker {args:?}: {}\n{}", describe(&out), berth.logs());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker load`s the busybox test image (tests/images) into a started Berth.
pub fn load_busybox(berth: &Berth) {
    let archive = berth.home.path().join("busybox.tar");
    let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/images/busybox-archive.py")).arg(&archive).status();
    assert!(made.expect("python3").success());
    docker_ok(berth, &["load", "-i", &archive.display().to_string()]);
}

/// The docker CLI pointed at this Berth, to spawn or run.
pub fn docker_command(berth: &Berth, args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.arg("-H")
        .arg(format!("unix://{}", berth.run_dir().join("docker.sock").display()))
        .args(args)
        .env("DOCKER_CONFIG", berth.home.path().join("docker-config"))
        .stdin(Stdio::null());
    cmd
}

/// A one-layer image as `docker save` writes it (docker-archive), tagged `tag`.
pub fn docker_archive(tag: &str, file: &str, contents: &[u8]) -> Vec<u8> {
    use berth_engine::test_support;
    test_support::docker_archive(&[test_support::tar(&[(file, contents)])], &[tag]).0
}

#[path = "net_probes.rs"]
pub mod net;
#[path = "registry.rs"]
mod registry;
pub use registry::LocalRegistry;
