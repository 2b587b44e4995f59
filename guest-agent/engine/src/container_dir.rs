//! The per-container directory contract: every file the agent, the shim
//! and inspect read or write under `<data>/containers/<id>`. The directory
//! is the container's truth (the agent's memory is a cache of it), so its
//! layout is named here once rather than as strings in each reader.

use std::path::{Path, PathBuf};

use crate::rootfs::ContainerLayer;

/// The container's record (engine container.rs), written by the agent.
pub const RECORD_FILE: &str = "container.json";
/// The OCI runtime spec of the current run.
pub const SPEC_FILE: &str = "spec.json";
/// The shim's own settings for the current run (shim.rs `ShimConfig`).
pub const SHIM_CONFIG: &str = "shim.json";
/// How the last run ended, as the shim recorded it.
pub const EXIT_FILE: &str = "exit.json";
/// The container's output (logfile.rs; rotated copies get `.1`, `.2`, ...).
pub const LOG_FILE: &str = "container.log";
/// Attach input, read by the shim.
pub const STDIN_FIFO: &str = "stdin.fifo";
/// Terminal resizes, read by the shim.
pub const RESIZE_FIFO: &str = "resize.fifo";
/// The files bound over the image's /etc ones at start, as Docker does.
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];
/// The overlay's writable layer, its work dir and its mount point.
pub const UPPER_DIR: &str = "upper";
pub const WORK_DIR: &str = "work";
pub const ROOTFS_DIR: &str = "rootfs";

/// One container's directory, naming each file of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir(PathBuf);

impl ContainerDir {
    pub fn new(path: impl Into<PathBuf>) -> ContainerDir {
        ContainerDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn record(&self) -> PathBuf {
        self.0.join(RECORD_FILE)
    }

    pub fn spec(&self) -> PathBuf {
        self.0.join(SPEC_FILE)
    }

    pub fn shim_config(&self) -> PathBuf {
        self.0.join(SHIM_CONFIG)
    }

    pub fn exit(&self) -> PathBuf {
        self.0.join(EXIT_FILE)
    }

    pub fn log(&self) -> PathBuf {
        self.0.join(LOG_FILE)
    }

    pub fn stdin_fifo(&self) -> PathBuf {
        self.0.join(STDIN_FIFO)
    }

    pub fn resize_fifo(&self) -> PathBuf {
        self.0.join(RESIZE_FIFO)
    }

    pub fn hostname(&self) -> PathBuf {
        self.0.join("hostname")
    }

    pub fn hosts(&self) -> PathBuf {
        self.0.join("hosts")
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.0.join("resolv.conf")
    }

    /// The container's writable layer (what `docker diff` and commit read).
    pub fn upper(&self) -> PathBuf {
        self.0.join(UPPER_DIR)
    }

    pub fn layer(&self) -> ContainerLayer {
        ContainerLayer::under(&self.0)
    }

    /// Where the directory goes while it is removed: a crash part-way
    /// leaves a name the next start sweeps, never a half container.
    pub fn removing(&self) -> PathBuf {
        self.0.with_file_name(format!("{REMOVING_PREFIX}{}", self.0.file_name().unwrap_or_default().to_string_lossy()))
    }
}

/// The prefix of a directory being removed (see `ContainerDir::removing`).
pub const REMOVING_PREFIX: &str = ".removing-";

impl AsRef<Path> for ContainerDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_file_under_the_directory() {
        let dir = ContainerDir::new("/data/containers/abc");
        assert_eq!(dir.record(), Path::new("/data/containers/abc/container.json"));
        assert_eq!(dir.spec(), Path::new("/data/containers/abc/spec.json"));
        assert_eq!(dir.shim_config(), Path::new("/data/containers/abc/shim.json"));
        assert_eq!(dir.exit(), Path::new("/data/containers/abc/exit.json"));
        assert_eq!(dir.log(), Path::new("/data/containers/abc/container.log"));
        assert_eq!(dir.stdin_fifo(), Path::new("/data/containers/abc/stdin.fifo"));
        assert_eq!(dir.resize_fifo(), Path::new("/data/containers/abc/resize.fifo"));
        assert_eq!(dir.resolv_conf(), Path::new("/data/containers/abc/resolv.conf"));
        let layer = dir.layer();
        assert_eq!(layer.upper, dir.upper());
        assert_eq!(layer.work, Path::new("/data/containers/abc/work"));
        assert_eq!(layer.merged, Path::new("/data/containers/abc/rootfs"));
    }

    #[test]
    fn a_removed_directory_keeps_its_parent_and_id() {
        let dir = ContainerDir::new("/data/containers/abc");
        assert_eq!(dir.removing(), Path::new("/data/containers/.removing-abc"));
        assert!(dir.removing().file_name().unwrap().to_string_lossy().starts_with(REMOVING_PREFIX));
    }
}
