//! The Debian package as a user gets it: packaging/deb/build.sh packs the
//! berth binary and assets under test (BERTH_BIN, BERTH_ASSETS: what the
//! suite built), and tests/package/debian-root.sh installs it in a clean
//! Debian 12 root, boots a VM with it, runs `docker run --rm busybox echo ok`,
//! stops, purges, and checks that nothing is left.
//!
//! Needs root, debootstrap and the docker CLI (packaging/setup.sh installs
//! them). The first run debootstraps (a few minutes, needs the Debian
//! mirror); later runs reuse the root cached in ~/.cache/berth-build.

// The harness's registry is for the other test binaries.
#[allow(unused_imports)]
#[path = "../vm/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{berth_bin, describe};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assets_dir() -> PathBuf {
    std::env::var_os("BERTH_ASSETS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share/berth")))
        .expect("BERTH_ASSETS or HOME")
}

#[test]
fn the_deb_installs_starts_runs_busybox_stops_and_purges_clean_in_debian_12() {
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo().join("packaging/deb/build.sh"))
        .arg("--from-installed")
        .arg(berth_bin())
        .arg(assets_dir())
        .arg("--out")
        .arg(out.path())
        // Packing speed over size: the package is unpacked once, here.
        .env("BERTH_DEB_COMPRESSION", "gzip")
        .output()
        .unwrap();
    assert!(built.status.success(), "packaging/deb/build.sh: {}", describe(&built));
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    let fields = Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Package", "Depends"]).output().unwrap();
    let fields = String::from_utf8_lossy(&fields.stdout);
    assert!(fields.contains("Package: berth") && fields.contains("qemu-system-x86"), "{fields}");

    let busybox = out.path().join("busybox.tar");
    let made = Command::new(repo().join("tests/images/busybox-archive.py")).arg(&busybox).status().unwrap();
    assert!(made.success());
    let run = Command::new(repo().join("tests/package/debian-root.sh")).arg(&deb).arg(&busybox).output().unwrap();
    assert!(run.status.success(), "tests/package/debian-root.sh: {}", describe(&run));
    let log = String::from_utf8_lossy(&run.stdout);
    assert!(log.contains("Berth VM is running"), "{log}");
}
