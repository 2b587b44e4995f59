//! Rosetta for Linux (Virtualization.framework on Apple silicon): the host
//! shares its translator as a virtio-fs directory (`berth.rosetta=TAG`),
//! and binfmt_misc hands it every x86_64 ELF program, so amd64 images run
//! in the arm64 VM.
//!
//! The registration is Apple's ("Running Intel Binaries in Linux VMs with
//! Rosetta"): the ELF header of an x86_64 executable (class 64, little
//! endian, e_machine 0x3e, ET_EXEC or ET_DYN through the mask), with
//! `--credentials yes --fix-binary yes --preserve no`, i.e. flags `CF`. F
//! opens the translator once, at registration, so programs in containers,
//! whose mount namespaces have no /run/rosetta, find it too.

use std::io;
use std::path::Path;

use nix::mount::MsFlags;

/// Where the share is mounted in the VM.
pub const MOUNT_POINT: &str = "/run/rosetta";
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// The entry's name in binfmt_misc.
const ENTRY: &str = "rosetta";

/// What binfmt_misc's `register` file is written (its own `\x` escapes, so
/// that no byte of the magic is the field separator).
pub fn registration(interpreter: &Path) -> String {
    const MAGIC: &str = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00";
    const MASK: &str = r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";
    format!(":{ENTRY}:M::{MAGIC}:{MASK}:{}:CF", interpreter.display())
}

/// Mounts the Rosetta share `tag` and registers its translator. An absent
/// share (the Mac has no Rosetta installed: the VM helper then leaves the
/// device out) is an error the caller logs; the VM runs arm64 images alone.
pub fn enable(tag: &str) -> io::Result<()> {
    std::fs::create_dir_all(MOUNT_POINT)?;
    nix::mount::mount(Some(tag), MOUNT_POINT, Some("virtiofs"), MsFlags::MS_RDONLY | MsFlags::MS_NODEV, None::<&str>)
        .map_err(|e| io::Error::other(format!("mount virtiofs {tag} on {MOUNT_POINT}: {e}")))?;
    let binfmt = Path::new(BINFMT_DIR);
    if !binfmt.join("register").exists() {
        nix::mount::mount(
            Some("binfmt_misc"),
            BINFMT_DIR,
            Some("binfmt_misc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("mount binfmt_misc on {BINFMT_DIR}: {e}")))?;
    }
    register(binfmt, &Path::new(MOUNT_POINT).join("rosetta"))
}

/// Registers `interpreter` in the binfmt_misc directory `binfmt`, unless an
/// entry of that name is there already.
pub fn register(binfmt: &Path, interpreter: &Path) -> io::Result<()> {
    if binfmt.join(ENTRY).exists() {
        return Ok(());
    }
    if !interpreter.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no translator at {}", interpreter.display())));
    }
    // One write(2): binfmt_misc parses each write as a whole registration.
    std::fs::OpenOptions::new()
        .write(true)
        .open(binfmt.join("register"))
        .and_then(|mut file| io::Write::write_all(&mut file, registration(interpreter).as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("registering {} with binfmt_misc: {e}", interpreter.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_is_apples() {
        assert_eq!(
            registration(Path::new("/run/rosetta/rosetta")),
            r":rosetta:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/run/rosetta/rosetta:CF"
        );
    }

    /// The magic, unescaped and masked, matches the header of an x86_64
    /// executable and of a PIE, and not an arm64 one.
    #[test]
    fn the_magic_matches_x86_64_programs_only() {
        let text = registration(Path::new("/i"));
        let fields: Vec<&str> = text.split(':').collect();
        let unescape =
            |s: &str| -> Vec<u8> { s.split(r"\x").skip(1).map(|h| u8::from_str_radix(&h[..2], 16).unwrap()).collect() };
        let magic: Vec<u8> = [&b"\x7fELF"[..], &unescape(&fields[4][4..])].concat();
        let mask = unescape(fields[5]);
        assert_eq!((magic.len(), mask.len()), (20, 20));
        let header = |e_type: u8, machine: u8| -> Vec<u8> {
            let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            h.extend([e_type, 0, machine, 0]);
            h
        };
        // As binfmt_misc compares: only the bits the mask keeps.
        let matches = |h: &[u8]| h.iter().zip(&mask).zip(&magic).all(|((b, m), want)| (b ^ want) & m == 0);
        assert!(matches(&header(2, 0x3e)), "ET_EXEC x86_64");
        assert!(matches(&header(3, 0x3e)), "ET_DYN x86_64 (PIE)");
        assert!(!matches(&header(2, 0xb7)), "arm64");
        assert!(!matches(&header(1, 0x3e)), "a relocatable object");
    }

    #[test]
    fn registers_once_in_a_binfmt_directory() {
        let dir = tempfile::tempdir().unwrap();
        let share = tempfile::tempdir().unwrap();
        let interpreter = share.path().join("rosetta");
        std::fs::write(dir.path().join("register"), "").unwrap();
        let err = register(dir.path(), &interpreter).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        std::fs::write(&interpreter, "").unwrap();
        register(dir.path(), &interpreter).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("register")).unwrap(), registration(&interpreter));
        // Registered already (the entry exists): nothing is written again.
        std::fs::write(dir.path().join("register"), "").unwrap();
        std::fs::write(dir.path().join(ENTRY), "enabled\n").unwrap();
        register(dir.path(), &interpreter).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("register")).unwrap(), "");
    }
}
