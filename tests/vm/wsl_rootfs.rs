//! The WSL 2 root filesystem (`initramfs/wsl-rootfs.sh`): what `wsl
//! --import` unpacks as the `berth` distro. No VM: it checks the tarball's
//! files, their modes and owners, and /etc/wsl.conf's keys (under_another_init.rs
//! boots it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::describe;

/// The installed guest assets (BERTH_ASSETS, else packaging/setup.sh's).
pub fn assets_dir() -> PathBuf {
    std::env::var_os("BERTH_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/berth")))
        .expect("BERTH_ASSETS or HOME")
}

/// Builds the tarball at `out` from the agent Berth installs for the local
/// backend (a static musl build).
pub fn build_rootfs(out: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../initramfs/wsl-rootfs.sh");
    let built = Command::new(script).arg(assets_dir().join("bin/berth-agent")).arg(out).output().unwrap();
    assert!(built.status.success(), "{}", describe(&built));
}

/// `[section] key = value` lines, as `section.key`.
fn ini(text: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            keys.insert(format!("{section}.{}", key.trim()), value.trim().to_string());
        }
    }
    keys
}

#[test]
fn the_wsl_rootfs_holds_the_agent_where_the_host_starts_it_its_tools_and_a_wsl_conf() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("berth-wsl-rootfs.tar");
    build_rootfs(&out);

    // path -> (mode, owner, kind)
    let mut entries = BTreeMap::new();
    let mut wsl_conf = String::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
        let header = entry.header();
        let value =
            (header.mode().unwrap() & 0o7777, (header.uid().unwrap(), header.gid().unwrap()), header.entry_type());
        if path == "etc/wsl.conf" {
            entry.read_to_string(&mut wsl_conf).unwrap();
        }
        entries.insert(path, value);
    }
    assert!(entries.values().all(|(_, owner, _)| *owner == (0, 0)), "every file is root's");
    for (path, mode) in [
        ("usr/bin/berth-agent", 0o755),
        ("bin/busybox", 0o755),
        ("sbin/mke2fs", 0o755),
        ("usr/sbin/nft", 0o755),
        ("usr/libexec/berth/docker-init", 0o755),
        ("etc/ssl/certs/ca-certificates.crt", 0o644),
        ("etc/wsl.conf", 0o644),
    ] {
        let (found, _, kind) = entries.get(path).unwrap_or_else(|| panic!("{path} is missing"));
        assert!(kind.is_file(), "{path} is not a regular file");
        assert_eq!(*found, mode, "{path}'s mode");
    }
    assert!(entries.get("bin/sh").is_some_and(|(_, _, kind)| kind.is_symlink()), "/bin/sh is busybox's");
    assert_eq!(entries["tmp"].0, 0o1777);
    assert_eq!(entries["root"].0, 0o700);
    assert!(!entries.contains_key("init"), "WSL's /init is Microsoft's: the tarball must not bring one");

    let keys = ini(&wsl_conf);
    assert_eq!(keys["boot.systemd"], "false");
    // The daemon starts the agent with this boot's key; a boot command's would have none.
    assert!(!keys.contains_key("boot.command"), "{keys:?}");
    assert_eq!(keys["automount.enabled"], "true");
    assert_eq!(keys["automount.root"], "/mnt/");
    assert_eq!(keys["interop.enabled"], "false", "no Windows programs from the engine's distro");
    assert_eq!(keys["user.default"], "root");
}
