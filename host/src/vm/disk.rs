//! The data disk of a backend whose guest has one: a sparse raw image.

use std::path::Path;

use anyhow::{Context, Result};

/// Creates the image on first use and grows it to `disk_gib`; the guest
/// formats it (ext4) when it finds no filesystem and grows the filesystem
/// to the image at boot (guest-agent/src/init.rs `grow_to_device`).
pub fn prepare_raw(path: &Path, disk_gib: u64) -> Result<()> {
    let want = disk_gib << 30;
    let file = crate::private_fs::open_for_writing(path, false)?;
    let have = file.metadata()?.len();
    if have < want {
        if have > 0 {
            tracing::info!(have, want, "growing the data disk image; the guest grows its filesystem at boot");
        }
        file.set_len(want).with_context(|| format!("sizing {}", path.display()))?;
    }
    Ok(())
}
