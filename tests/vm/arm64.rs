//! The arm64 guest (kernel, agent and initramfs cross-built by
//! `BERTH_ARCHES="x86_64 aarch64" packaging/setup.sh`) under
//! qemu-system-aarch64 `-M virt`: emulated (TCG) on x86_64 hosts, so one
//! boot for everything.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{describe, docker, docker_ok, Berth};

/// The arm64 guest's assets directory, as berth finds it (BERTH_ASSETS,
/// else the installed share/berth).
fn arm64_assets() -> Option<PathBuf> {
    let assets = std::env::var_os("BERTH_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/berth")))?;
    let dir = assets.join("aarch64");
    (dir.join("Image").is_file() && dir.join("initramfs.cpio").is_file()).then_some(dir)
}

/// An arm64 busybox image, from Debian's busybox-static:arm64 (unpacked by
/// the same script the arm64 initramfs is built from).
fn load_arm64_busybox(berth: &Berth) {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let sysroot = Command::new(format!("{repo}/initramfs/foreign-sysroot.sh")).arg("aarch64").output().unwrap();
    assert!(sysroot.status.success(), "the arm64 userland: {}", describe(&sysroot));
    let busybox = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim()).join("bin/busybox");
    let archive = berth.home.path().join("busybox-arm64.tar");
    let made = Command::new(format!("{repo}/tests/images/busybox-archive.py"))
        .arg(&archive)
        .env("BUSYBOX", &busybox)
        .env("IMAGE_ARCH", "arm64")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", describe(&made));
    docker_ok(berth, &["load", "-i", &archive.display().to_string()]);
}

#[test]
fn arm64_guest_runs_an_arm64_container_with_the_docker_cli() {
    let Some(dir) = arm64_assets() else {
        // tests/run.sh builds the arm64 guest and says so: there, no assets is a failure.
        assert!(
            std::env::var_os("BERTH_REQUIRE_ARM64").is_none_or(|v| v != "1"),
            "BERTH_REQUIRE_ARM64=1 but there is no arm64 guest (aarch64/Image and aarch64/initramfs.cpio) in \
             BERTH_ASSETS or the installed assets; build it with BERTH_ARCHES=\"x86_64 aarch64\" packaging/setup.sh"
        );
        eprintln!(
            "SKIPPED: no arm64 guest (aarch64/Image and aarch64/initramfs.cpio) in BERTH_ASSETS or the installed \
             assets; build it with BERTH_ARCHES=\"x86_64 aarch64\" packaging/setup.sh"
        );
        return;
    };
    eprintln!("arm64 guest from {}", dir.display());
    let share = tempfile::Builder::new().prefix("berth share ").tempdir().unwrap();
    std::fs::write(share.path().join("from-host.txt"), "written on the host\n").unwrap();
    let berth = Berth::with_config(share, "arch = \"aarch64\"\n");
    berth.start();
    let status = berth.status();
    assert_eq!(status["state"], "running", "{status}");
    eprintln!("arm64 boot to ready: {} ms ({})", status["boot_ms"], status["accel"]);

    // The guest itself is arm64.
    let out = berth.shell(&["uname", "-m"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "aarch64", "{}", describe(&out));

    load_arm64_busybox(&berth);
    let share_path = berth.share.path().display().to_string();
    let bind = format!("{share_path}:/host");
    let out =
        docker_ok(&berth, &["run", "--rm", "-v", &bind, "busybox", "sh", "-c", "uname -m; cat /host/from-host.txt"]);
    assert_eq!(out, "aarch64\nwritten on the host\n");

    docker_ok(&berth, &["run", "-d", "--name", "arm", "busybox", "sh", "-c", "echo started on $(uname -m); sleep 600"]);
    let out = docker_ok(&berth, &["exec", "arm", "uname", "-m"]);
    assert_eq!(out.trim(), "aarch64");
    let mut logs = String::new();
    for _ in 0..50 {
        let out = docker(&berth, &["logs", "arm"]);
        logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if !logs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(logs, "started on aarch64\n");
    docker_ok(&berth, &["rm", "-f", "arm"]);
    berth.stop_and_check_clean();
}
