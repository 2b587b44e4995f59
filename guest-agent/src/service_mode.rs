//! The agent as a service under another init (`berth-agent --service`):
//! in WSL 2, /init is Microsoft's, which mounts /proc, /sys, /dev and the
//! Windows drives, runs the distro's boot command (wsl.conf) and reaps
//! orphans itself. So the agent does only what a service must: no root
//! switch, no pseudo filesystems, no reaping beyond its own descendants (it
//! is their subreaper, as the local agent), its state on the distro's disk;
//! and the cgroup v2 hierarchy the engine needs, mounted if the distro's init
//! left none (WSL mounts v1 controllers and, depending on its version, the
//! unified hierarchy at /sys/fs/cgroup/unified or nothing), with its
//! controllers delegated to child cgroups.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// Sets up what the engine needs that a service's init may not have.
/// Returns where the unified cgroup hierarchy is.
pub fn prepare(data_dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    let root = match berth_engine::cgroup::hierarchy_root() {
        Some(root) => root,
        None => {
            let root = cgroup2_mount_point()?;
            std::fs::create_dir_all(&root)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("cgroup2"), &root, Some("cgroup2"), flags, None::<&str>)
                .map_err(|e| io::Error::other(format!("mounting cgroup2 on {}: {e}", root.display())))?;
            tracing::info!(path = %root.display(), "mounted the cgroup v2 hierarchy");
            root
        }
    };
    crate::init::delegate_controllers(&root);
    Ok(root)
}

/// /sys/fs/cgroup when nothing is mounted there; beside the v1 hierarchies
/// (at `unified`, where systemd puts it on hybrid hosts) when something is.
fn cgroup2_mount_point() -> io::Result<PathBuf> {
    let cgroup = Path::new("/sys/fs/cgroup");
    let mounted = match (std::fs::metadata(cgroup), std::fs::metadata("/sys/fs")) {
        (Ok(dir), Ok(parent)) => dir.dev() != parent.dev(),
        _ => false,
    };
    Ok(if mounted { cgroup.join("unified") } else { cgroup.to_path_buf() })
}
