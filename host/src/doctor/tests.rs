//! The checks against prepared states: each problem the issue names
//! (missing helper, stale pid, context pointing elsewhere, unusable KVM)
//! and the healthy case.

use std::path::PathBuf;

use super::checks::*;
use crate::docker_context::DockerTarget;

const SOCKET: &str = "/h/run/docker.sock";

/// A running, healthy Berth as inspect() would find it.
fn healthy() -> Inspection {
    Inspection {
        profile: "default".into(),
        kvm: Kvm::Usable,
        running_accel: Some("kvm".into()),
        asset_files: vec![AssetFile {
            path: "/usr/lib/berth/initramfs.cpio".into(),
            bytes: 28 << 20,
            sha256: "ab".repeat(32),
        }],
        helpers: ["qemu-system-x86_64", "virtiofsd", "vhost-device-vsock"]
            .iter()
            .map(|name| Helper {
                name: name.to_string(),
                path: Some(PathBuf::from("/usr/lib/berth/bin").join(name)),
                version: Some(format!("{name} 1.0")),
                install: "install it".into(),
            })
            .collect(),
        disk_allocated: Some(300 << 20),
        disk_gib: Some(64),
        free_bytes: Some(40 << 30),
        daemon_alive: true,
        pid_file: Some(42),
        phase: "running".into(),
        socket: SOCKET.into(),
        socket_answers: true,
        docker_cli: Some("/usr/bin/docker".into()),
        docker_target: Some(DockerTarget::Context("berth".into())),
        context_name: "berth".into(),
        context_is_current_by_design: true,
        context_host: Some(format!("unix://{SOCKET}")),
        current_context_host: Some(format!("unix://{SOCKET}")),
        clock_skew_ms: Some(2),
        ..Default::default()
    }
}

fn levels(findings: &[Finding]) -> Vec<(&'static str, Level)> {
    findings.iter().map(|f| (f.check, f.level)).collect()
}

fn worst(findings: &[Finding]) -> Level {
    findings.iter().map(|f| f.level).max().unwrap()
}

#[test]
fn a_healthy_berth_passes_every_check() {
    let findings = all(&healthy());
    assert!(findings.iter().all(|f| f.level <= Level::Info && f.fix.is_none()), "{findings:#?}");
    assert!(findings.iter().any(|f| f.check == "clock"));
}

#[test]
fn a_missing_helper_fails_and_says_how_to_install_it() {
    let mut state = healthy();
    state.helpers[1].path = None;
    state.helpers[1].install = "reinstall the Berth package".into();
    let findings = helpers(&state);
    assert_eq!(levels(&findings), [("helpers", Level::Ok), ("helpers", Level::Fail), ("helpers", Level::Ok)]);
    assert_eq!(findings[1].message, "virtiofsd is not installed");
    assert_eq!(findings[1].fix.as_deref(), Some("reinstall the Berth package"));
    assert_eq!(worst(&all(&state)), Level::Fail);
}

#[test]
fn missing_assets_fail_with_the_install_hint() {
    let mut state = healthy();
    state.assets_error = Some("the Berth guest image (initramfs.cpio) was not found".into());
    let findings = assets(&state);
    assert_eq!(findings[0].level, Level::Fail);
    assert!(findings[0].fix.as_deref().unwrap().contains("apt-get install --reinstall berth"));
}

#[test]
fn a_stale_pid_file_is_a_warning_that_berth_stop_fixes() {
    let mut state = healthy();
    state.daemon_alive = false;
    state.socket_answers = false;
    state.phase = "error".into();
    state.state_error = Some("the Berth daemon (pid 42) is gone without shutting the VM down".into());
    let finding = daemon(&state);
    assert_eq!((finding.level, finding.problem), (Level::Warn, Some("stale-daemon")));
    assert!(finding.message.contains("pid 42 is gone"), "{finding:?}");
    assert!(finding.fix.unwrap().contains("berth stop"));
    // Without a pid file but with a state record that says it ran.
    state.pid_file = None;
    assert_eq!(daemon(&state).problem, Some("stale-daemon"));
    state.phase = "stopped".into();
    state.state_error = None;
    assert_eq!(daemon(&state).level, Level::Info, "a clean stop is not a problem");
}

#[test]
fn a_context_pointing_elsewhere_is_named_with_the_fix() {
    let mut state = healthy();
    state.docker_target = Some(DockerTarget::Context("desktop-linux".into()));
    state.current_context_host = Some("unix:///home/me/.docker/desktop/docker.sock".into());
    let finding = docker(&state);
    assert_eq!(finding.level, Level::Warn);
    assert!(finding.message.contains("\"desktop-linux\" (unix:///home/me/.docker/desktop/docker.sock)"), "{finding:?}");
    assert!(finding.fix.unwrap().contains("docker context use berth"));

    state.docker_target = Some(DockerTarget::Host("tcp://10.0.0.1:2375".into()));
    let finding = docker(&state);
    assert!(finding.message.contains("DOCKER_HOST=tcp://10.0.0.1:2375"), "{finding:?}");
    assert!(finding.fix.unwrap().contains("unset DOCKER_HOST"));

    state.docker_target = Some(DockerTarget::Context("berth".into()));
    state.context_host = Some("unix:///old/home/run/docker.sock".into());
    assert!(docker(&state).message.contains("points at unix:///old/home/run/docker.sock"));

    // A profile under a scripted BERTH_HOME never takes the current context: only a hint.
    state.context_is_current_by_design = false;
    state.context_name = "berth-1234abcd".into();
    let finding = docker(&state);
    assert_eq!(finding.level, Level::Info);
    assert!(finding.fix.unwrap().contains("docker --context berth-1234abcd"));

    state.docker_cli = None;
    assert_eq!(docker(&state).problem, Some("no-docker-cli"));
}

#[test]
fn unusable_kvm_warns_that_tcg_is_in_use() {
    let mut state = healthy();
    state.running_accel = Some("tcg".into());
    for kvm in [Kvm::Missing, Kvm::Unopenable("Permission denied (os error 13)".into()), Kvm::NoHardwareVirtualization]
    {
        state.kvm = kvm.clone();
        let finding = accelerator(&state);
        assert_eq!((finding.level, finding.problem), (Level::Warn, Some("no-kvm")), "{kvm:?}");
        assert!(finding.message.contains("TCG") && finding.message.contains("uses tcg"), "{finding:?}");
    }
    state.kvm = Kvm::Unopenable("Permission denied (os error 13)".into());
    assert!(accelerator(&state).message.contains("Permission denied"));
    state.accel_env = Some("tcg".into());
    assert_eq!(accelerator(&state).level, Level::Info, "TCG asked for is not a problem");
}

#[test]
fn disk_socket_port_clock_and_errors() {
    let mut state = healthy();
    state.free_bytes = Some(100 << 20);
    assert_eq!(disk(&state).problem, Some("low-disk"));
    state.socket_answers = false;
    assert_eq!(socket(&state).level, Level::Fail);
    state.api_tcp = Some("127.0.0.1:2375".into());
    state.api_tcp_free = Some(false);
    assert!(ports_and_shares(&state).iter().any(|f| f.problem == Some("port-in-use")));
    state.clock_skew_ms = Some(-4200);
    assert_eq!(clock(&state).unwrap().problem, Some("clock-skew"));
    state.last_log_error = Some(("agent".into(), "2026-12-01T10:00:00Z ERROR mount failed".into()));
    let finding = last_error(&state).unwrap();
    assert!(finding.message.contains("agent log: 2026-12-01T10:00:00Z ERROR mount failed"));
    assert!(finding.fix.unwrap().contains("berth logs --source agent"));
    state.phase = "error".into();
    state.state_error = Some("QEMU exited: could not open kernel".into());
    assert_eq!(last_error(&state).unwrap().level, Level::Fail);
    state.home_error = Some("BERTH_HOME /tmp/h is a symbolic link".into());
    assert_eq!(home(&state).unwrap().problem, Some("unsafe-home"));
    state.config_error = Some("invalid config: vm.cpus = 0 is out of range".into());
    assert_eq!(config(&state).problem, Some("bad-config"));
}

#[test]
fn the_troubleshooting_page_is_generated_from_the_checks() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/TROUBLESHOOTING.md")).unwrap();
    assert_eq!(
        page,
        troubleshooting_page(),
        "docs/TROUBLESHOOTING.md is out of date: `berth doctor --troubleshooting-page > docs/TROUBLESHOOTING.md`"
    );
    for problem in PROBLEMS {
        assert!(page.contains(&format!("(`{}`)", problem.id)));
    }
}
