//! The host side of Berth against other local users and careless readers:
//! a BERTH_HOME is private, a planted one is refused, and the CLI ends
//! quietly on a closed pipe.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{berth_bin, describe};

fn berth_at(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(berth_bin());
    cmd.args(args)
        .env("BERTH_HOME", home)
        .env("DOCKER_CONFIG", home.with_extension("docker-config"))
        .stdin(Stdio::null());
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn status_into_a_closed_pipe_does_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    // A pipe whose reader is gone before berth writes: what `| head -1` becomes.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    };
    drop(reader);
    let out = berth_at(&tmp.path().join("home"), &["status"]).stdout(Stdio::from(writer)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", describe(&out));
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ends as `cat` would: {}", describe(&out));
}

#[test]
fn a_symlinked_or_foreign_home_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (target, link) = (tmp.path().join("target"), tmp.path().join("home"));
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    for command in ["start", "status", "stop", "logs"] {
        let out = berth_at(&link, &[command]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "berth {command}: {}", describe(&out));
        assert!(
            stderr.contains(&format!("BERTH_HOME {}", link.display())) && stderr.contains("is a symbolic link"),
            "berth {command}: {}",
            describe(&out)
        );
    }
    assert_eq!(mode(&target), 0o755, "the link's target was not touched");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nothing was created through the link");

    // A home another user created (as one would under /tmp), and a run
    // directory planted inside a home of ours.
    let theirs = tmp.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("the tests run as root");
    let out = berth_at(&theirs, &["start"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to uid 65534"), "{}", describe(&out));
    let planted = tmp.path().join("planted");
    std::fs::create_dir_all(planted.join("logs")).unwrap();
    std::os::unix::fs::symlink(&target, planted.join("run")).unwrap();
    let out = berth_at(&planted, &["status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the run directory") && stderr.contains("is a symbolic link"), "{}", describe(&out));
}

#[test]
fn a_symlinked_or_foreign_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let elsewhere = tmp.path().join("their-config.toml");
    std::fs::write(&elsewhere, "backend = \"local\"\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.join("config.toml")).unwrap();
    let out = berth_at(&home, &["start"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the config file") && stderr.contains("is a symbolic link"), "{}", describe(&out));

    std::fs::remove_file(home.join("config.toml")).unwrap();
    std::fs::rename(&elsewhere, home.join("config.toml")).unwrap();
    std::os::unix::fs::chown(home.join("config.toml"), Some(65534), Some(65534)).unwrap();
    let out = berth_at(&home, &["start"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to uid 65534"), "{}", describe(&out));
}

#[test]
fn an_existing_wide_home_becomes_private_with_private_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("logs")).unwrap();
    std::fs::write(home.join("config.toml"), "backend = \"local\"\n[vm]\nshares = []\n").unwrap();
    // As an older Berth left it: 0755 directories, a 0644 log.
    for dir in [&home, &home.join("logs")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(home.join("logs/daemon.log"), "old\n").unwrap();
    std::fs::set_permissions(home.join("logs/daemon.log"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Whether the daemon then starts (it needs the assets) does not matter here.
    let _ = berth_at(&home, &["start"]).output().unwrap();
    let stopped = berth_at(&home, &["stop"]).output().unwrap();
    assert!(stopped.status.success(), "{}", describe(&stopped));
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("run")), 0o700);
    assert_eq!(mode(&home.join("logs")), 0o700);
    for log in std::fs::read_dir(home.join("logs")).unwrap() {
        let log = log.unwrap().path();
        assert_eq!(mode(&log), 0o600, "{}", log.display());
    }
}
