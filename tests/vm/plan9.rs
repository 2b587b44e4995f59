//! Shares over 9P on a vsock stream (`[vm] share-transport = "9p"`), the
//! wire the Hyper-V backends give the guest: the agent dials the host and
//! mounts with the fd transport, the host serves each connection with a
//! confined file server, and containers use the share through bind mounts.

use crate::harness::{self, describe, Berth};

#[test]
fn a_container_reads_and_writes_a_host_directory_over_9p() {
    let share = tempfile::Builder::new().prefix("berth 9p ").tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let dir = share.path().join("proj");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("from-host.txt"), "written on the host\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("out")).unwrap();
    let berth = Berth::with_config(share, "share-transport = \"9p\"\n");
    berth.start();
    let mounts = berth.ok(&["shell", "--", "cat", "/proc/mounts"]);
    let share_path = berth.share.path().display().to_string().replace(' ', "\\040");
    let line =
        mounts.lines().find(|l| l.contains(&share_path)).unwrap_or_else(|| panic!("share not mounted: {mounts}"));
    assert!(line.contains(" 9p ") && line.contains("trans=fd"), "not a 9p mount over fd: {line}");

    harness::load_busybox(&berth);
    let bind = format!("{}:/work", dir.display());
    let out = harness::docker(
        &berth,
        &[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "cat /work/from-host.txt && echo from the container > /work/new.txt",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written on the host\n");
    assert_eq!(std::fs::read_to_string(dir.join("new.txt")).unwrap(), "from the container\n");

    // The link resolves in the VM, where the host's directory is not.
    let out = harness::docker(&berth, &["run", "--rm", "-v", &bind, "busybox", "cat", "/work/out/secret.txt"]);
    assert!(!out.status.success(), "a symlink led out of the share: {}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("host secret"));
    berth.stop_and_check_clean();
}
