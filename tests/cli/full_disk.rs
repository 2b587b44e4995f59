//! A full data disk: containers still report their real exit codes.

use std::process::Command;

use crate::harness::Berth;
use crate::{docker, harness::describe, load_busybox, local_config, ok, stdout};

/// A small tmpfs as the local engine's data directory, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"]).arg(&path).status();
        assert!(mounted.unwrap().success(), "mounting a tmpfs at {}", path.display());
        SmallDisk(path)
    }

    /// Writes zeros until the filesystem is full.
    fn fill(&self) {
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.0.join("fill").display()))
            .arg("bs=64k")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{}", describe(&out));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_exit_codes() {
    let berth = Berth::with_config_file(&local_config(""));
    // The local backend keeps the engine's state in $BERTH_HOME/local.
    let disk = SmallDisk::mount(berth.home.path().join("local"));
    berth.start();
    load_busybox(&berth);
    ok(&berth, &["run", "-d", "--name", "full", "busybox", "sh", "-c", "sleep 2; exit 7"]);
    disk.fill();
    let waited = docker(&berth, &["wait", "full"]);
    assert_eq!(stdout(&waited), "7\n", "{}\n{}", describe(&waited), berth.logs());
    let state = ok(&berth, &["inspect", "--format", "{{.State.ExitCode}} {{.State.Error}}", "full"]);
    assert_eq!(state, "7 \n", "the exit, not \"the container's supervisor died\"");
    std::fs::remove_file(disk.0.join("fill")).unwrap();
    ok(&berth, &["rm", "full"]);
    berth.ok(&["stop"]);
}
