//! Hands the agent its per-boot key inside the initramfs.
//!
//! Backends that boot the kernel directly (QEMU here; Virtualization.framework
//! and Hyper-V's direct boot take an initrd too) load the initramfs from a
//! file. The kernel unpacks concatenated cpio archives one after the other,
//! so the boot's initramfs is the built one with a second, tiny archive
//! appended that holds only the key file: no other channel is needed, no
//! process can race the agent for it, and the key is in no command line
//! (the host's process list shows QEMU's; containers see the guest's).

use std::io::{self, Write};
use std::path::Path;

use berth_agent_proto::agent_key::AGENT_KEY_GUEST_PATH;
use berth_agent_proto::AgentKey;

/// Writes `base` followed by an archive holding the key to `out` (0600).
pub fn write_initramfs_with_key(base: &Path, key: &AgentKey, out: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let _ = std::fs::remove_file(out);
    let mut file = crate::private_fs::open_for_writing(out, false)?;
    let mut built = std::fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let length = io::copy(&mut built, &mut file)?;
    // The kernel looks for the next archive on a 4-byte boundary.
    file.write_all(&[0u8; 3][..(4 - length as usize % 4) % 4])?;
    file.write_all(&key_archive(key))?;
    Ok(())
}

/// A newc cpio archive with the key as a root-only file, then the trailer.
fn key_archive(key: &AgentKey) -> Vec<u8> {
    let mut archive = Vec::new();
    let name = AGENT_KEY_GUEST_PATH.trim_start_matches('/');
    push_entry(&mut archive, 1, 0o100400, name, key.to_hex().as_bytes());
    push_entry(&mut archive, 0, 0, "TRAILER!!!", &[]);
    archive
}

fn push_entry(archive: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = u32::from(mode != 0);
    // magic, then ino mode uid gid nlink mtime filesize devmajor devminor
    // rdevmajor rdevminor namesize check, each as 8 hex digits.
    let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    archive.extend_from_slice(b"070701");
    for field in fields {
        archive.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    archive.extend_from_slice(name.as_bytes());
    archive.push(0);
    pad_to_four(archive);
    archive.extend_from_slice(data);
    pad_to_four(archive);
}

fn pad_to_four(archive: &mut Vec<u8>) {
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_rides_after_the_built_archive() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("initramfs.cpio");
        std::fs::write(&base, b"built archive, 23 bytes").unwrap();
        let out = dir.path().join("boot.cpio");
        let key = AgentKey::from_bytes([0xab; 32]);
        std::fs::write(&out, b"an old boot's file").unwrap();
        write_initramfs_with_key(&base, &key, &out).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert!(written.starts_with(b"built archive, 23 bytes\0"), "padded to 4 bytes");
        let archive = &written[24..];
        assert_eq!(archive, key_archive(&key).as_slice());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }

        // The first entry as cpio(1) would read it.
        let header = std::str::from_utf8(&archive[..110]).unwrap();
        let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
        assert_eq!(&header[..6], "070701");
        assert_eq!(field(1), 0o100400, "a regular file only root can read");
        assert_eq!(field(6), 64, "the key in hex");
        let name_len = field(11) as usize;
        assert_eq!(&archive[110..110 + name_len], b"berth-agent.key\0");
        let data_at = (110 + name_len).div_ceil(4) * 4;
        assert_eq!(&archive[data_at..data_at + 64], key.to_hex().as_bytes());
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(archive.len() % 4, 0);
    }

    #[test]
    #[cfg(unix)]
    fn the_archive_matches_cpio() {
        // cpio(1) from Debian reads what we write: list the entry back.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            panic!("cpio is not installed (packaging/setup.sh installs it)");
        };
        child.stdin.take().unwrap().write_all(&key_archive(&AgentKey::from_bytes([1; 32]))).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "berth-agent.key");
    }
}
