//! The guest's CPU architecture (`[vm] arch`), and what follows from it for
//! the guest's files: every backend boots one of these.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Named as `uname -m` names them, which is what `[vm] arch` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestArch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl GuestArch {
    pub const ALL: [GuestArch; 2] = [GuestArch::X86_64, GuestArch::Aarch64];

    pub fn name(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
        }
    }

    /// The host's architecture, if a guest of it can be built.
    pub fn host() -> Option<GuestArch> {
        GuestArch::ALL.into_iter().find(|arch| arch.name() == std::env::consts::ARCH)
    }

    /// The default guest: the host's own, so that virtualisation can run it.
    pub fn default_for_host() -> GuestArch {
        GuestArch::host().unwrap_or(GuestArch::X86_64)
    }

    pub fn is_host(self) -> bool {
        GuestArch::host() == Some(self)
    }

    /// Where this guest's kernel and initramfs live in the assets directory:
    /// x86_64's at its top (where they were before there were two), every
    /// other one in a directory of its name (packaging/setup.sh's layout).
    pub fn assets_dir(self, assets: &Path) -> PathBuf {
        match self {
            GuestArch::X86_64 => assets.to_path_buf(),
            other => assets.join(other.name()),
        }
    }

    /// How packaging/setup.sh is asked to build this guest.
    pub fn setup_hint(self) -> String {
        match self {
            GuestArch::X86_64 => "build it with `packaging/setup.sh`".into(),
            other => format!("build it with `BERTH_ARCHES={} packaging/setup.sh`", other.name()),
        }
    }
}

/// The arm64 boot protocol's image header (Documentation/arm64/booting.rst):
/// the magic "ARM\x64" at offset 56. Virtualization.framework and QEMU's
/// direct kernel boot both need the uncompressed `Image`; a compressed one
/// (Image.gz, a distribution's vmlinuz) is refused by VZ without a word and
/// hangs QEMU, so it is checked before booting.
pub fn check_arm64_image(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut header = [0u8; 64];
    let mut file = std::fs::File::open(path).with_context(|| format!("opening the guest kernel {}", path.display()))?;
    let read = file.read(&mut header).with_context(|| format!("reading the guest kernel {}", path.display()))?;
    check_arm64_header(&header[..read]).with_context(|| format!("the guest kernel {}", path.display()))
}

fn check_arm64_header(header: &[u8]) -> Result<()> {
    const MAGIC: &[u8; 4] = b"ARM\x64";
    if header.get(56..60) == Some(MAGIC) {
        return Ok(());
    }
    if header.starts_with(&[0x1f, 0x8b]) {
        bail!("is gzip-compressed; an arm64 guest boots the uncompressed `Image` (gunzip it first)");
    }
    bail!("is not an arm64 kernel `Image` (no \"ARM\\x64\" magic at offset 56)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_header() -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[56..60].copy_from_slice(b"ARM\x64");
        header
    }

    #[test]
    fn the_arm64_header_check_takes_an_image_and_names_what_else_it_got() {
        assert!(check_arm64_header(&image_header()).is_ok());
        let gzip = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        assert!(check_arm64_header(&gzip).unwrap_err().to_string().contains("gzip-compressed"));
        let mut elf = vec![0x7f, b'E', b'L', b'F'];
        elf.resize(64, 0);
        assert!(check_arm64_header(&elf).unwrap_err().to_string().contains("no \"ARM\\x64\" magic"));
        assert!(check_arm64_header(&image_header()[..58]).is_err(), "a truncated header is not an Image");
    }

    #[test]
    fn the_file_check_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("Image");
        let mut bytes = image_header();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&good, &bytes).unwrap();
        check_arm64_image(&good).unwrap();
        let bad = dir.path().join("bzImage");
        std::fs::write(&bad, [0u8; 600]).unwrap();
        let err = format!("{:#}", check_arm64_image(&bad).unwrap_err());
        assert!(err.contains("bzImage") && err.contains("not an arm64 kernel"), "{err}");
        let err = format!("{:#}", check_arm64_image(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("opening the guest kernel"), "{err}");
    }

    #[test]
    fn arch_names_and_asset_dirs() {
        let parsed: GuestArch = toml::Value::String("aarch64".into()).try_into().unwrap();
        assert_eq!(parsed, GuestArch::Aarch64);
        assert!(toml::Value::String("arm64".into()).try_into::<GuestArch>().is_err());
        assert_eq!(GuestArch::X86_64.assets_dir(Path::new("/s")), Path::new("/s"));
        assert_eq!(GuestArch::Aarch64.assets_dir(Path::new("/s")), Path::new("/s/aarch64"));
        assert_eq!(GuestArch::host().map(GuestArch::name), Some(std::env::consts::ARCH));
        assert!(GuestArch::default_for_host().is_host());
        assert!(GuestArch::Aarch64.setup_hint().contains("BERTH_ARCHES=aarch64"));
    }
}
