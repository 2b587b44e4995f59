//! The checks of `berth doctor`: plain functions from an [`Inspection`] (what
//! was found on this machine) to findings, so each is tested against a
//! prepared state (tests.rs) and none touches the machine itself.
//!
//! Each problem has an entry in [`PROBLEMS`]: what it means and how to fix
//! it. The checks cite it, and docs/TROUBLESHOOTING.md is generated from the
//! same table (`berth doctor --troubleshooting-page`), so the page and the
//! command cannot tell different stories.

use std::path::PathBuf;

use serde::Serialize;

use crate::docker_context::DockerTarget;

/// What `inspect` found (mod.rs); every field is plain data.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub profile: String,
    pub kvm: Kvm,
    /// BERTH_ACCEL, when set.
    pub accel_env: Option<String>,
    /// The running VM's accelerator.
    pub running_accel: Option<String>,
    pub config_error: Option<String>,
    /// Why the assets were not found, else their files.
    pub assets_error: Option<String>,
    pub asset_files: Vec<AssetFile>,
    pub helpers: Vec<Helper>,
    /// Bytes the data disk image takes (None: not created yet) and what it may grow to.
    pub disk_allocated: Option<u64>,
    pub disk_gib: Option<u64>,
    pub free_bytes: Option<u64>,
    /// Why the profile's directories are refused (a link, another user's).
    pub home_error: Option<String>,
    pub daemon_alive: bool,
    /// The pid in run/daemon.pid, if any.
    pub pid_file: Option<u32>,
    /// The state record's phase ("running", "error", ...) and error.
    pub phase: String,
    pub state_error: Option<String>,
    pub socket: PathBuf,
    pub socket_answers: bool,
    pub docker_cli: Option<PathBuf>,
    pub docker_target: Option<DockerTarget>,
    pub context_name: String,
    pub context_is_current_by_design: bool,
    /// Where Berth's context points (None: not written).
    pub context_host: Option<String>,
    /// Where the docker CLI's current context points.
    pub current_context_host: Option<String>,
    pub shares: Vec<PathBuf>,
    pub api_tcp: Option<String>,
    /// Whether api.tcp's port could be bound now (only asked while stopped).
    pub api_tcp_free: Option<bool>,
    /// Host minus guest clock, while running.
    pub clock_skew_ms: Option<i64>,
    /// The last error-level line of the logs, with the log it came from.
    pub last_log_error: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Kvm {
    #[default]
    Missing,
    /// /dev/kvm exists but cannot be opened: the error.
    Unopenable(String),
    /// Openable, but the CPU has no vmx/svm (a paravirtual KVM).
    NoHardwareVirtualization,
    Usable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssetFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default)]
pub struct Helper {
    pub name: String,
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    /// How to install it when missing.
    pub install: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub message: String,
    /// What to do, when something is to be done.
    pub fix: Option<String>,
    /// The [`PROBLEMS`] entry, for the troubleshooting page.
    pub problem: Option<&'static str>,
}

pub struct Problem {
    pub id: &'static str,
    pub title: &'static str,
    pub explanation: &'static str,
    pub fix: &'static str,
}

pub const PROBLEMS: &[Problem] = &[
    Problem {
        id: "no-kvm",
        title: "The VM runs under TCG (no usable KVM)",
        explanation: "Without KVM, QEMU emulates the guest CPU in software: everything works, several times slower.",
        fix: "Enable virtualization (VT-x/AMD-V) in the firmware, load the module (`sudo modprobe kvm_intel` or \
              `kvm_amd`); in a cloud VM, turn on nested virtualization. If /dev/kvm exists but cannot be opened, \
              join its group: `sudo usermod -aG kvm $USER`, then log in again.",
    },
    Problem {
        id: "missing-helper",
        title: "A helper program is missing",
        explanation: "The VM needs QEMU (`qemu-system-x86_64`), `virtiofsd` (the shares) and `vhost-device-vsock` \
                      (the agent's channel).",
        fix: "Install QEMU with `sudo apt-get install qemu-system-x86`. virtiofsd and vhost-device-vsock come with \
              the Berth package (/usr/lib/berth/bin); from a source checkout, `packaging/setup.sh` installs them.",
    },
    Problem {
        id: "missing-assets",
        title: "The guest kernel or initramfs is missing",
        explanation: "Berth looks in BERTH_ASSETS, then <berth>/../lib/berth (the package), <berth>/../share/berth \
                      (a source install), then ~/.local/share/berth.",
        fix: "Install (or reinstall) the Berth package: `sudo apt-get install --reinstall berth`; from a source \
              checkout, run `packaging/setup.sh`; or point BERTH_ASSETS at a directory that has them.",
    },
    Problem {
        id: "bad-config",
        title: "config.toml is refused",
        explanation: "Unknown keys and bad values are errors that name the key, so a typo does not fall back to a \
                      default.",
        fix: "Correct the key the error names (`berth config set KEY VALUE` checks a value before writing it), or \
              move the file away to use the defaults.",
    },
    Problem {
        id: "low-disk",
        title: "Little free space for the data disk",
        explanation: "The data disk is a sparse file in the profile's home: it takes space as images and \
                      containers fill it, up to its size.",
        fix: "Free space on the filesystem that holds the Berth home, or remove unused images and containers \
              (`docker system prune`).",
    },
    Problem {
        id: "unsafe-home",
        title: "The Berth home is refused",
        explanation: "The home, its run/ and logs/ hold the sockets that drive the VM and the disk with every image: \
                      one that is a symbolic link or belongs to another user (say, made in /tmp by someone else) \
                      would hand them over.",
        fix: "Move the directory the error names away (or fix its owner); `berth start` makes a new, private one.",
    },
    Problem {
        id: "stale-daemon",
        title: "A daemon died without cleaning up",
        explanation: "The state record or pid file says a daemon runs, but none holds the daemon lock (a crash or a \
                      host reboot). Its VM processes may still run.",
        fix: "`berth stop` kills what is left and cleans up; `berth start` does the same before booting.",
    },
    Problem {
        id: "socket",
        title: "The Docker API socket does not answer",
        explanation: "The daemon runs but its socket is gone or does not accept connections.",
        fix: "`berth stop` then `berth start`; `berth logs --source daemon` says what happened.",
    },
    Problem {
        id: "docker-elsewhere",
        title: "`docker` does not talk to Berth",
        explanation: "The docker CLI picks DOCKER_HOST first, then DOCKER_CONTEXT, then the current context in \
                      ~/.docker/config.json. `berth start` writes Berth's context and, for the everyday home, makes \
                      it current.",
        fix: "Unset DOCKER_HOST or DOCKER_CONTEXT if they point elsewhere; `docker context use berth` (or the \
              profile's `berth-NAME`), or run docker with `--context berth`.",
    },
    Problem {
        id: "no-docker-cli",
        title: "The docker CLI is not installed",
        explanation: "Berth serves the Docker Engine API; the docker CLI (or compose, or an SDK) is its client.",
        fix: "Install a docker CLI: Debian's `docker.io` package (its dockerd need not run), or Docker's \
              `docker-ce-cli`.",
    },
    Problem {
        id: "port-in-use",
        title: "The configured TCP port is taken",
        explanation: "`[api] tcp` in config.toml asks the daemon to serve the API on a TCP port as well.",
        fix: "Stop what listens there, or choose another port: `berth config set api.tcp 127.0.0.1:PORT`.",
    },
    Problem {
        id: "clock-skew",
        title: "The VM's clock is off",
        explanation: "The daemon corrects the guest's clock every few seconds; a large offset that stays means it \
                      cannot (see the daemon log).",
        fix: "`berth stop` then `berth start`; if it comes back, report it with `berth logs --source daemon`.",
    },
    Problem {
        id: "vm-error",
        title: "The VM reported an error",
        explanation: "The last error of the daemon, agent or kernel log is shown as it was logged.",
        fix: "Read it in context with `berth logs --since 1h`; `berth stop` then `berth start` recovers most \
              failures.",
    },
];

fn problem(id: &'static str) -> &'static Problem {
    PROBLEMS.iter().find(|p| p.id == id).expect("every cited problem is in PROBLEMS")
}

fn ok(check: &'static str, message: String) -> Finding {
    Finding { check, level: Level::Ok, message, fix: None, problem: None }
}

fn info(check: &'static str, message: String) -> Finding {
    Finding { check, level: Level::Info, message, fix: None, problem: None }
}

fn problem_finding(check: &'static str, level: Level, message: String, id: &'static str) -> Finding {
    Finding { check, level, message, fix: Some(problem(id).fix.to_string()), problem: Some(id) }
}

/// The threshold below which free space is a warning.
const LOW_FREE_BYTES: u64 = 2 << 30;
/// Skew the clock sync should have removed (it corrects beyond 5 ms).
const CLOCK_SKEW_WARN_MS: i64 = 1000;

pub fn accelerator(i: &Inspection) -> Finding {
    let in_use = i.running_accel.as_deref().map(|a| format!(" (the running VM uses {a})")).unwrap_or_default();
    if i.accel_env.as_deref() == Some("tcg") {
        return info("accelerator", format!("BERTH_ACCEL=tcg: the VM runs under TCG, as asked{in_use}"));
    }
    match &i.kvm {
        Kvm::Usable => ok("accelerator", format!("KVM is usable{in_use}")),
        Kvm::Missing => problem_finding(
            "accelerator",
            Level::Warn,
            format!("no /dev/kvm: the VM runs under TCG, software emulation{in_use}"),
            "no-kvm",
        ),
        Kvm::Unopenable(err) => problem_finding(
            "accelerator",
            Level::Warn,
            format!("/dev/kvm cannot be opened ({err}): the VM runs under TCG{in_use}"),
            "no-kvm",
        ),
        Kvm::NoHardwareVirtualization => problem_finding(
            "accelerator",
            Level::Warn,
            format!("/dev/kvm opens but the CPU reports no vmx/svm (a paravirtual KVM): the VM runs under TCG{in_use}"),
            "no-kvm",
        ),
    }
}

pub fn helpers(i: &Inspection) -> Vec<Finding> {
    i.helpers
        .iter()
        .map(|helper| match &helper.path {
            Some(path) => ok(
                "helpers",
                format!(
                    "{}: {} ({})",
                    helper.name,
                    helper.version.as_deref().unwrap_or("(version unknown)"),
                    path.display()
                ),
            ),
            None => Finding {
                fix: Some(helper.install.clone()),
                ..problem_finding("helpers", Level::Fail, format!("{} is not installed", helper.name), "missing-helper")
            },
        })
        .collect()
}

pub fn assets(i: &Inspection) -> Vec<Finding> {
    match &i.assets_error {
        Some(err) => vec![problem_finding("assets", Level::Fail, err.clone(), "missing-assets")],
        None => i
            .asset_files
            .iter()
            .map(|f| {
                let short = f.sha256.get(..16).unwrap_or(&f.sha256);
                ok("assets", format!("{} ({} MiB, sha256 {short}…)", f.path.display(), f.bytes >> 20))
            })
            .collect(),
    }
}

pub fn config(i: &Inspection) -> Finding {
    match &i.config_error {
        Some(err) => problem_finding("config", Level::Fail, err.clone(), "bad-config"),
        None => ok("config", "config.toml is valid".into()),
    }
}

pub fn disk(i: &Inspection) -> Finding {
    let size = i.disk_gib.map(|g| format!(" (up to {g} GiB)")).unwrap_or_default();
    let free = i.free_bytes.map(|b| format!("{:.1} GiB free", b as f64 / (1u64 << 30) as f64));
    let free_text = free.clone().unwrap_or_else(|| "free space unknown".into());
    if i.free_bytes.is_some_and(|b| b < LOW_FREE_BYTES) {
        return problem_finding("disk", Level::Warn, format!("only {free_text} for the data disk{size}"), "low-disk");
    }
    match i.disk_allocated {
        None => info("disk", format!("no data disk yet: the first `berth start` creates it{size}; {free_text}")),
        Some(bytes) => ok("disk", format!("data disk uses {} MiB{size}; {free_text}", bytes >> 20)),
    }
}

pub fn home(i: &Inspection) -> Option<Finding> {
    let error = i.home_error.clone()?;
    Some(problem_finding("home", Level::Fail, error, "unsafe-home"))
}

pub fn daemon(i: &Inspection) -> Finding {
    let claims_live = matches!(i.phase.as_str(), "running" | "starting");
    if i.daemon_alive {
        return ok(
            "daemon",
            format!("the daemon runs (pid {})", i.pid_file.map(|p| p.to_string()).unwrap_or("?".into())),
        );
    }
    if let Some(pid) = i.pid_file {
        return problem_finding(
            "daemon",
            Level::Warn,
            format!("stale pid file: daemon pid {pid} is gone"),
            "stale-daemon",
        );
    }
    if claims_live || i.state_error.as_deref().is_some_and(|e| e.contains("is gone without shutting")) {
        return problem_finding(
            "daemon",
            Level::Warn,
            "the last daemon died without shutting the VM down".into(),
            "stale-daemon",
        );
    }
    info("daemon", format!("not running ({}): `berth start` boots the VM", i.phase))
}

pub fn socket(i: &Inspection) -> Finding {
    if !i.daemon_alive {
        return info("socket", format!("{} appears when the VM runs", i.socket.display()));
    }
    if i.socket_answers {
        ok("socket", format!("the Docker API answers on {}", i.socket.display()))
    } else {
        problem_finding("socket", Level::Fail, format!("{} does not answer", i.socket.display()), "socket")
    }
}

pub fn docker(i: &Inspection) -> Finding {
    if i.docker_cli.is_none() {
        return problem_finding("docker", Level::Warn, "no `docker` on PATH".into(), "no-docker-cli");
    }
    let ours = format!("unix://{}", i.socket.display());
    let elsewhere = |message: String| {
        let level = if i.context_is_current_by_design { Level::Warn } else { Level::Info };
        Finding {
            fix: Some(if i.context_is_current_by_design {
                problem("docker-elsewhere").fix.to_string()
            } else {
                format!("this profile's context is not made current: use `docker --context {}`", i.context_name)
            }),
            ..problem_finding("docker", level, message, "docker-elsewhere")
        }
    };
    match &i.docker_target {
        Some(DockerTarget::Host(host)) if *host == ours => {
            ok("docker", format!("DOCKER_HOST points at Berth ({host})"))
        }
        Some(DockerTarget::Host(host)) => {
            let mut finding = elsewhere(format!("DOCKER_HOST={host} overrides every context: docker talks to it"));
            finding.fix = Some(format!("unset DOCKER_HOST (or set it to {ours})"));
            finding
        }
        Some(DockerTarget::Context(name)) if *name == i.context_name => match &i.context_host {
            Some(host) if *host == ours => {
                ok("docker", format!("docker's current context \"{name}\" is Berth's ({host})"))
            }
            Some(host) => elsewhere(format!("context \"{name}\" points at {host}, not at {ours}")),
            None => {
                info("docker", format!("context \"{name}\" is current but not written yet: `berth start` writes it"))
            }
        },
        Some(DockerTarget::Context(name)) => {
            let host = i.current_context_host.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
            elsewhere(format!("docker uses context \"{name}\"{host}, not Berth's \"{}\"", i.context_name))
        }
        None => info("docker", "the docker CLI's configuration could not be read".into()),
    }
}

pub fn ports_and_shares(i: &Inspection) -> Vec<Finding> {
    let mut findings = Vec::new();
    let shares = i.shares.iter().map(|s| s.display().to_string()).collect::<Vec<_>>().join(", ");
    findings.push(info(
        "shares",
        if shares.is_empty() { "no host directory is shared".into() } else { format!("shared: {shares}") },
    ));
    if let Some(tcp) = &i.api_tcp {
        findings.push(match i.api_tcp_free {
            Some(false) => problem_finding(
                "ports",
                Level::Fail,
                format!("api.tcp {tcp} is in use by another program"),
                "port-in-use",
            ),
            _ => info("ports", format!("the Docker API is also served on {tcp}, without authentication")),
        });
    }
    findings
}

pub fn clock(i: &Inspection) -> Option<Finding> {
    let skew = i.clock_skew_ms?;
    Some(if skew.abs() >= CLOCK_SKEW_WARN_MS {
        problem_finding("clock", Level::Warn, format!("the VM's clock is {skew} ms off the host's"), "clock-skew")
    } else {
        ok("clock", format!("the VM's clock is within {} ms of the host's", skew.abs().max(1)))
    })
}

pub fn last_error(i: &Inspection) -> Option<Finding> {
    if i.phase == "error" {
        let error = i.state_error.clone().unwrap_or_else(|| "the VM failed".into());
        return Some(problem_finding("vm-error", Level::Fail, error, "vm-error"));
    }
    let (log, line) = i.last_log_error.as_ref()?;
    Some(Finding {
        fix: Some(format!("`berth logs --source {log}` shows it in context; {}", problem("vm-error").fix)),
        ..problem_finding("vm-error", Level::Info, format!("last error in the {log} log: {line}"), "vm-error")
    })
}

/// Every check, in the order `berth doctor` prints them.
pub fn all(i: &Inspection) -> Vec<Finding> {
    let mut findings = vec![accelerator(i)];
    findings.extend(helpers(i));
    findings.extend(assets(i));
    findings.push(config(i));
    findings.push(disk(i));
    findings.extend(home(i));
    findings.push(daemon(i));
    findings.push(socket(i));
    findings.push(docker(i));
    findings.extend(ports_and_shares(i));
    findings.extend(clock(i));
    findings.extend(last_error(i));
    findings
}

/// docs/TROUBLESHOOTING.md: one section per problem.
pub fn troubleshooting_page() -> String {
    let mut page = String::from(
        "# Troubleshooting\n\n\
         Start with `berth doctor` (`berth --profile NAME doctor` for a profile; `--json` for tools): it checks \
         everything below and prints, for each problem it finds, the fix given here. This page is generated from \
         the same table as the command (`berth doctor --troubleshooting-page > docs/TROUBLESHOOTING.md`), so the \
         two say the same.\n\n\
         Logs: `berth logs` (all), `--source daemon|console|agent|qemu|helpers`, `--since 10m`, `-f`.\n",
    );
    for p in PROBLEMS {
        page.push_str(&format!("\n## {} (`{}`)\n\n{}\n\n**Fix:** {}\n", p.title, p.id, p.explanation, p.fix));
    }
    page
}
