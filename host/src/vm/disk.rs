//! The data disk of a backend whose guest has one: a sparse raw image.

use std::path::Path;

use anyhow::{Context, Result};

/// Creates the image on first use and grows it to `disk_gib`; the guest
/// formats it (ext4) when it finds no filesystem.
pub fn prepare_raw(path: &Path, disk_gib: u64) -> Result<()> {
    let want = disk_gib << 30;
    let file = crate::private_fs::open_for_writing(path, false)?;
    let have = file.metadata()?.len();
    if have < want {
        if have > 0 {
            tracing::warn!(have, want, "growing the data disk image; the guest filesystem keeps its old size for now");
        }
        file.set_len(want).with_context(|| format!("sizing {}", path.display()))?;
    }
    Ok(())
}
