//! The agent as a service under another init, as in WSL 2 (`berth-agent
//! --service`, guest-agent/src/service_mode.rs), in a real VM: Berth's
//! kernel boots the WSL root filesystem (initramfs/wsl-rootfs.sh, the
//! tarball `wsl --import` registers) with busybox's init as PID 1 in the
//! part of WSL's /init: it mounts the pseudo filesystems (and, as WSL, an
//! empty tmpfs at /sys/fs/cgroup), reaps orphans, and starts the agent as a
//! child the way the WSL backend's `wsl.exe --exec` does: as root in /, on
//! vsock port 1024, its key in the environment (WSLENV's part). The real
//! daemon boots that VM through `BERTH_ASSETS` and the docker CLI runs
//! containers through it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::harness::{self, describe, Berth};

/// PID 1's first stage: WSL's root is the distro's ext4 disk, not the
/// kernel's initial rootfs, where pivot_root (every container start) fails;
/// so, as there, the distro runs from a real filesystem (a tmpfs here).
/// The boot's key file (boot_key.rs appends it to the initramfs) goes along,
/// for the start script to hand over.
/// The initramfs has no /dev/console, so the kernel starts /init without
/// standard descriptors: they come from a devtmpfs mounted first (every
/// process after inherits them, as under WSL's init).
const STAGE_ONE: &str = r#"#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox mkdir -p /distro
/bin/busybox mount -t tmpfs -o mode=0755 distro /distro
for entry in /*; do
  case "$entry" in /distro|/proc|/sys|/dev) ;; *) /bin/busybox cp -a "$entry" /distro/ ;; esac
done
/bin/busybox mkdir -p /distro/proc /distro/sys /distro/dev
/bin/busybox mount --move /dev /distro/dev
exec /bin/busybox switch_root /distro /sbin/init
"#;

/// busybox init's table: set-up once, then the agent (not respawned: the
/// daemon restarts a VM whose agent died, as it would restart `wsl.exe`).
const INITTAB: &str = "::sysinit:/etc/init.d/rcS\n::once:/usr/libexec/berth/start-agent\n";

/// What WSL's /init mounts before any distro process runs (/dev is stage
/// one's). cgroup: WSL
/// puts its v1 controllers in a tmpfs at /sys/fs/cgroup; the tmpfs alone
/// here, so the agent must put the unified hierarchy beside them.
const RC_S: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
hostname berth
ip link set lo up
"#;

/// The agent started as plan.rs's `WslPlan::agent` starts it in WSL
/// (`--user root --cd / --exec /usr/bin/berth-agent --vsock-port 1024
/// --service`, BERTH_AGENT_KEY in its environment), its stderr the agent
/// log the daemon keeps (the VM's second console). When it ends, the VM
/// does (WSL ends a distro whose last process exited).
const START_AGENT: &str = r#"#!/bin/sh
cd /
BERTH_AGENT_KEY=$(cat /berth-agent.key)
rm -f /berth-agent.key
export BERTH_AGENT_KEY
/usr/bin/berth-agent --vsock-port 1024 --service 2>/dev/hvc0
reboot -f
"#;

fn write_script(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An assets directory whose initramfs is the WSL rootfs under busybox
/// init; kernel and helper programs are the installed ones.
fn assets_with_another_init(dir: &Path) {
    let installed = crate::wsl_rootfs::assets_dir();
    let tarball = dir.join("berth-wsl-rootfs.tar");
    crate::wsl_rootfs::build_rootfs(&tarball);
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).unwrap();
    let unpacked = Command::new("tar").arg("-xpf").arg(&tarball).arg("-C").arg(&stage).output().unwrap();
    assert!(unpacked.status.success(), "{}", describe(&unpacked));
    assert!(!stage.join("init").exists(), "the WSL rootfs brings no /init");
    write_script(&stage.join("init"), STAGE_ONE);
    std::os::unix::fs::symlink("/bin/busybox", stage.join("sbin/init")).unwrap();
    std::fs::write(stage.join("etc/inittab"), INITTAB).unwrap();
    write_script(&stage.join("etc/init.d/rcS"), RC_S);
    write_script(&stage.join("usr/libexec/berth/start-agent"), START_AGENT);
    let assets = dir.join("assets");
    std::fs::create_dir(&assets).unwrap();
    let packed = Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 -printf '%P\\n' | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 > \"$1\"")
        .arg("sh")
        .arg(assets.join("initramfs.cpio"))
        .current_dir(&stage)
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}", describe(&packed));
    for name in ["vmlinux", "bzImage", "bin"] {
        if installed.join(name).exists() {
            std::os::unix::fs::symlink(installed.join(name), assets.join(name)).unwrap();
        }
    }
}

#[test]
fn the_agent_as_a_service_under_busybox_init_runs_containers_for_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    assets_with_another_init(dir.path());
    // No shares: WSL reaches Windows' drives through its own mounts, and a
    // service mounts none.
    let berth = Berth::with_config_file("[vm]\ncpus = 1\nmemory-mib = 512\ndisk-gib = 2\nshares = []\n");
    let out = berth.cmd(&["start"]).env("BERTH_ASSETS", dir.path().join("assets")).output().unwrap();
    assert!(out.status.success(), "berth start: {}\n--- logs ---\n{}", describe(&out), berth.logs());
    let status = berth.status();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["agent_version"], env!("CARGO_PKG_VERSION"));

    // PID 1 is busybox's init; the agent is its child, not PID 1, and the
    // key is gone from the disk and from what the agent passes on (this
    // shell is its child; the agent's own /proc environ shows its exec-time
    // environment, readable by root alone).
    let script = "agent=$(pidof berth-agent | tr ' ' '\\n' | sort -n | head -1); \
                  readlink /proc/1/exe; echo \"agent $agent\"; \
                  awk '/^PPid:/ {print \"parent\", $2}' /proc/$agent/status; \
                  tr '\\0' '\\n' < /proc/$$/environ | grep -c BERTH_AGENT_KEY; \
                  test -e /berth-agent.key && echo key-file-left; \
                  awk '$3 == \"cgroup2\" {print \"cgroup2\", $2}' /proc/mounts";
    let out = berth.shell(&["sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"/bin/busybox"), "PID 1 is busybox init: {stdout}\n{}", describe(&out));
    let agent_pid: u32 = lines[1].strip_prefix("agent ").and_then(|p| p.parse().ok()).expect(&stdout);
    assert!(agent_pid > 1, "{stdout}");
    assert!(lines[2].starts_with("parent ") && lines[2] != "parent 0", "{stdout}");
    assert_eq!(lines[3], "0", "the agent passed its key on: {stdout}");
    assert_eq!(
        &lines[4..],
        ["cgroup2 /sys/fs/cgroup/unified"],
        "the agent mounts cgroup v2 beside the init's tmpfs: {stdout}"
    );

    // The engine works as a service: an image in, containers with limits
    // (cgroup v2 controllers delegated) and output back.
    harness::load_busybox(&berth);
    let out = harness::docker(
        &berth,
        &[
            "run",
            "--rm",
            "--memory",
            "64m",
            "busybox",
            "sh",
            "-c",
            "echo hi from under another init; cat /sys/fs/cgroup/memory.max",
        ],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), berth.logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from under another init\n67108864\n");
    let out = harness::docker(&berth, &["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));

    // `berth stop` ends the agent; the init then ends the VM, and nothing is left.
    berth.stop_and_check_clean();
}
