//! The data disk of a backend whose guest has one: a sparse raw image.

use std::path::{Path, PathBuf};

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

/// The data disk's file for `hypervisor`, given where the raw image is:
/// HCS attaches a VHDX instead, beside it (`disk.raw` becomes `disk.vhdx`).
pub fn image_for(raw_image: &Path, hypervisor: Option<super::Hypervisor>) -> PathBuf {
    match hypervisor {
        Some(super::Hypervisor::Hcs) => raw_image.with_extension("vhdx"),
        _ => raw_image.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Hypervisor;

    #[test]
    fn hcs_has_a_vhdx_beside_the_raw_image() {
        let raw = Path::new("/h/disk.raw");
        assert_eq!(image_for(raw, Some(Hypervisor::Hcs)), Path::new("/h/disk.vhdx"));
        assert_eq!(image_for(raw, Some(Hypervisor::Qemu)), raw);
        assert_eq!(image_for(raw, None), raw);
    }
}
