//! Layers built by hand, benign and malicious. These need root (mknod,
//! chown, trusted.* xattrs), as the agent has.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use super::*;

/// A tar builder that writes raw names, so tests can produce what no
/// well-behaved tool would (`..`, absolute paths).
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer { builder: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header
    }

    fn finish(mut self, mut header: tar::Header, data: &[u8]) -> Layer {
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn dir(self, name: &str) -> Layer {
        let h = Layer::header(tar::EntryType::Directory, name, 0o755);
        self.finish(h, b"")
    }

    fn file(self, name: &str, data: &[u8]) -> Layer {
        let h = Layer::header(tar::EntryType::Regular, name, 0o644);
        self.finish(h, data)
    }

    fn link(self, kind: tar::EntryType, name: &str, target: &str) -> Layer {
        let mut h = Layer::header(kind, name, 0o777);
        let bytes = target.as_bytes();
        h.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
        self.finish(h, b"")
    }

    fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<UnpackStats, LayerError>) {
    assert!(nix::unistd::geteuid().is_root(), "layer tests need root, as the agent has");
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_layer(bytes, &dir.path().join("layer"), None);
    (dir, result)
}

/// Everything under `dir`, as relative paths.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn unpacks_files_links_devices_and_metadata() {
    let mut layer = Layer::new().dir("etc/").file("etc/hostname", b"box\n").link(
        tar::EntryType::Symlink,
        "etc/abs",
        "/etc/hostname",
    );
    layer = layer.link(tar::EntryType::Link, "etc/hard", "etc/hostname");
    let mut suid = Layer::header(tar::EntryType::Regular, "bin/su", 0o4755);
    suid.set_uid(0);
    layer = layer.finish(suid, b"#!/bin/sh\n");
    let mut owned = Layer::header(tar::EntryType::Regular, "home/user/file", 0o600);
    owned.set_uid(1000);
    owned.set_gid(1001);
    layer = layer.finish(owned, b"mine");
    let mut null = Layer::header(tar::EntryType::Char, "dev/null", 0o666);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    layer = layer.finish(null, b"");
    layer = layer.finish(Layer::header(tar::EntryType::Fifo, "run/pipe", 0o600), b"");
    let (dir, result) = unpack(&layer.bytes());
    let stats = result.unwrap();
    let root = dir.path().join("layer");

    assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"box\n");
    assert_eq!(std::fs::read_link(root.join("etc/abs")).unwrap(), Path::new("/etc/hostname"));
    let a = std::fs::metadata(root.join("etc/hostname")).unwrap();
    let b = std::fs::metadata(root.join("etc/hard")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hardlink shares the inode");
    assert_eq!(std::fs::metadata(root.join("bin/su")).unwrap().permissions().mode() & 0o7777, 0o4755);
    let owned = std::fs::metadata(root.join("home/user/file")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o777), (1000, 1001, 0o600));
    let null = std::fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(std::fs::metadata(root.join("run/pipe")).unwrap().file_type().is_fifo());
    assert_eq!(
        std::fs::metadata(root.join("etc")).unwrap().mtime(),
        1_600_000_000,
        "directory mtimes survive their children"
    );
    assert_eq!(stats.entries, 8);
    assert!(stats.diff_id.starts_with("sha256:") && stats.diff_id.len() == 71);
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    let layer =
        Layer::new().dir("etc/").file("etc/.wh.passwd", b"").dir("var/cache/").file("var/cache/.wh..wh..opq", b"");
    let (dir, result) = unpack(&layer.bytes());
    result.unwrap();
    let root = dir.path().join("layer");
    let whiteout = std::fs::symlink_metadata(root.join("etc/passwd")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!root.join("etc/.wh.passwd").exists());
    let mut value = [0u8; 4];
    let path = std::ffi::CString::new(root.join("var/cache").as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new("trusted.overlay.opaque").unwrap();
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    assert_eq!(&value[..n.max(0) as usize], b"y");
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
}

#[test]
fn gzip_layers_and_digest_checks() {
    let tar = Layer::new().file("a", b"hello").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let (dir, result) = unpack(&gz);
    let stats = result.unwrap();
    assert_eq!(std::fs::read(dir.path().join("layer/a")).unwrap(), b"hello");
    // The diff ID is the digest of the uncompressed stream.
    assert_eq!(stats.diff_id, format!("sha256:{}", hex(&Sha256::digest(&tar))));

    // A wrong digest keeps nothing.
    let dest = dir.path().join("other");
    let err = unpack_layer(gz.as_slice(), &dest, Some("sha256:0000")).unwrap_err();
    assert!(matches!(err, LayerError::DigestMismatch { .. }), "{err}");
    assert!(!dest.exists());
    assert_eq!(listing(dir.path()), vec!["layer", "layer.tar-split.gz", "layer/a"], "no temporary left behind");

    let err = unpack_layer(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0][..], &dir.path().join("z"), None).unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
}

/// Each malicious layer must fail, leave nothing at the destination, and
/// write nothing outside it.
#[test]
fn malicious_layers_write_nothing_outside() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot path", Layer::new().file("../escaped", b"x").bytes()),
        ("dot-dot inside a path", Layer::new().dir("a/").file("a/../../escaped", b"x").bytes()),
        (
            "absolute symlink as a parent",
            Layer::new().link(tar::EntryType::Symlink, "evil", "OUTSIDE").file("evil/escaped", b"x").bytes(),
        ),
        (
            "relative escaping symlink as a parent",
            Layer::new().link(tar::EntryType::Symlink, "evil", "../..").file("evil/escaped", b"x").bytes(),
        ),
        (
            "symlink parent in a deeper path",
            Layer::new()
                .dir("d/")
                .link(tar::EntryType::Symlink, "d/evil", "OUTSIDE")
                .file("d/evil/sub/escaped", b"x")
                .bytes(),
        ),
        ("hardlink out of the layer", Layer::new().link(tar::EntryType::Link, "stolen", "../outside-file").bytes()),
        (
            "hardlink through a symlink",
            Layer::new()
                .link(tar::EntryType::Symlink, "evil", "OUTSIDE")
                .link(tar::EntryType::Link, "stolen", "evil/outside-file")
                .bytes(),
        ),
        (
            "hardlink to a file not in the layer",
            Layer::new().link(tar::EntryType::Link, "stolen", "/etc/passwd").bytes(),
        ),
        (
            "whiteout through a symlink",
            Layer::new().link(tar::EntryType::Symlink, "evil", "OUTSIDE").file("evil/.wh.outside-file", b"").bytes(),
        ),
        (
            "opaque marker through a symlink",
            Layer::new().link(tar::EntryType::Symlink, "evil", "OUTSIDE").file("evil/.wh..wh..opq", b"").bytes(),
        ),
        // The 512-byte tarball that once removed images/layers/sha256.
        ("whiteout of `..`", Layer::new().file(".wh...", b"").bytes()),
        ("whiteout of `..` deeper", Layer::new().dir("d/").file("d/.wh...", b"").bytes()),
        ("whiteout of an empty name", Layer::new().file(".wh.", b"").bytes()),
        ("whiteout of an empty name deeper", Layer::new().dir("d/").file("d/x", b"x").file("d/.wh.", b"").bytes()),
        ("whiteout of `.`", Layer::new().dir("d/").file("d/.wh..", b"").bytes()),
        ("whiteout name as a directory", Layer::new().file(".wh./x", b"x").bytes()),
        ("whiteout name as a deeper directory", Layer::new().file("d/.wh.gone/x", b"x").bytes()),
        (
            "symlink to / then a file through it",
            Layer::new().link(tar::EntryType::Symlink, "a", "/").file("a/OUTSIDE/outside-file", b"owned").bytes(),
        ),
        (
            "symlink to / then a whiteout through it",
            Layer::new().link(tar::EntryType::Symlink, "a", "/").file("a/OUTSIDE/.wh.outside-file", b"").bytes(),
        ),
        (
            "hardlink to an absolute outside path",
            Layer::new().link(tar::EntryType::Link, "stolen", "OUTSIDE/outside-file").bytes(),
        ),
    ];
    for (what, bytes) in cases {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("outside-file"), b"precious").unwrap();
        let sandbox = base.path().join("store");
        // Another layer beside the one unpacked, as in the image store.
        std::fs::create_dir_all(sandbox.join("neighbour")).unwrap();
        std::fs::write(sandbox.join("neighbour/file"), b"kept").unwrap();
        // Symlink targets in the cases name the outside dir absolutely.
        let bytes = replace_all(&bytes, b"OUTSIDE", outside.as_os_str().as_bytes());
        let result = unpack_layer(bytes.as_slice(), &sandbox.join("layer"), None);
        assert!(result.is_err(), "{what}: a malicious layer was accepted");
        assert_eq!(listing(&outside), vec!["outside-file"], "{what}: something was written outside");
        assert_eq!(std::fs::read(outside.join("outside-file")).unwrap(), b"precious", "{what}");
        assert_eq!(listing(&sandbox), vec!["neighbour", "neighbour/file"], "{what}: leftovers or losses");
        assert_eq!(std::fs::read(sandbox.join("neighbour/file")).unwrap(), b"kept", "{what}");
        let everything = listing(base.path());
        assert_eq!(
            everything,
            ["outside", "outside/outside-file", "store", "store/neighbour", "store/neighbour/file"],
            "{what}"
        );
    }
}

/// Replaces `from` with `to` in a tar stream and fixes the header checksums.
fn replace_all(tar: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = tar.to_vec();
    for block in out.chunks_mut(512) {
        if let Some(pos) = block.windows(from.len()).position(|w| w == from) {
            let mut patched = block[..pos].to_vec();
            patched.extend_from_slice(to);
            patched.extend_from_slice(&block[pos + from.len()..]);
            patched.truncate(512);
            block.copy_from_slice(&patched);
            let header = unsafe_header(block);
            header.set_cksum();
        }
    }
    out
}

fn unsafe_header(block: &mut [u8]) -> &mut tar::Header {
    // SAFETY: tar::Header is a repr(C) 512-byte block of bytes; `block` is
    // exactly 512 bytes and u8-aligned, as is Header.
    unsafe { &mut *(block.as_mut_ptr() as *mut tar::Header) }
}

#[test]
fn stale_temporaries_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}abc-1"))).unwrap();
    std::fs::create_dir(dir.path().join("kept")).unwrap();
    assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
    assert_eq!(listing(dir.path()), vec!["kept"]);
}

/// The replayed stream of `bytes` after unpacking, and its digest check.
fn replayed(bytes: &[u8]) -> Vec<u8> {
    let (dir, result) = unpack(bytes);
    let stats = result.unwrap();
    let root = dir.path().join("layer");
    assert!(!root.join(".tar-split.gz").exists() && tarsplit::split_path(&root).is_file());
    let mut out = Vec::new();
    let written = tarsplit::write_tar(&root, &mut out).unwrap();
    assert_eq!(written, out.len() as u64);
    assert_eq!(format!("sha256:{}", hex(&Sha256::digest(&out))), stats.diff_id);
    out
}

fn gnu_header() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header
}

#[test]
fn the_exact_stream_is_rebuilt_from_the_unpacked_layer() {
    // Long names (GNU records), PAX xattrs, a hardlink, a device, a file
    // larger than the recorder's chunk, and tar's trailing zero blocks.
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("deep/{}/file", "d".repeat(150));
    let mut header = gnu_header();
    header.set_mode(0o644);
    header.set_size(5);
    builder.append_data(&mut header, &long, &b"long\n"[..]).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut header = gnu_header();
    header.set_mode(0o600);
    header.set_size(big.len() as u64);
    builder.append_data(&mut header, "big.bin", big.as_slice()).unwrap();
    builder.append_pax_extensions([("SCHILY.xattr.user.note", &b"kept"[..])]).unwrap();
    let mut header = gnu_header();
    header.set_mode(0o644);
    header.set_size(3);
    builder.append_data(&mut header, "with-xattr", &b"xa\n"[..]).unwrap();
    let mut header = gnu_header();
    header.set_entry_type(tar::EntryType::Link);
    header.set_size(0);
    builder.append_link(&mut header, "hard", "big.bin").unwrap();
    let mut bytes = builder.into_inner().unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    assert_eq!(replayed(&bytes), bytes);

    // The same stream gzip-compressed: the diff ID and replay are of the
    // uncompressed stream.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    assert_eq!(replayed(&gz.finish().unwrap()), bytes);
}

#[test]
fn files_replaced_later_in_the_same_layer_are_replayed_as_they_were() {
    let bytes = Layer::new()
        .dir("d/")
        .file("d/a", b"first a\n")
        .file("d/inner", b"inner\n")
        .file("d/a", b"second a\n")
        .file("x", b"x before a whiteout\n")
        .file(".wh.x", b"")
        .link(tar::EntryType::Symlink, "d", "/elsewhere")
        .bytes();
    assert_eq!(replayed(&bytes), bytes);
}

#[test]
fn absolute_and_dotted_paths_land_inside_the_layer() {
    let layer = Layer::new().file("/etc/motd", b"abs").file("./rel/./file", b"rel").bytes();
    let (dir, result) = unpack(&layer);
    result.unwrap();
    let root = dir.path().join("layer");
    assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"abs");
    assert_eq!(std::fs::read(root.join("rel/file")).unwrap(), b"rel");
}

#[test]
fn aufs_metadata_is_skipped_and_still_replayed() {
    let bytes = Layer::new()
        .dir(".wh..wh.plnk/")
        .file(".wh..wh.plnk/123.456", b"aufs link")
        .file(".wh..wh.aufs", b"")
        .file("kept", b"k")
        .bytes();
    assert_eq!(replayed(&bytes), bytes);
    let (dir, result) = unpack(&bytes);
    result.unwrap();
    assert_eq!(listing(&dir.path().join("layer")), vec!["kept"]);
}

/// A layer cut short names the cause, whatever the entry type it cuts.
#[test]
fn truncated_layers_say_so() {
    let bytes = Layer::new().file("a", &[7u8; 4096]).file("b", b"b").bytes();
    for cut in [100, 512 + 1000, 512 + 4096 + 300] {
        let (_dir, result) = unpack(&bytes[..cut]);
        let err = result.unwrap_err();
        assert!(err.to_string().contains("unexpected EOF"), "cut at {cut}: {err}");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    let gz = gz.finish().unwrap();
    let (_dir, result) = unpack(&gz[..gz.len() / 2]);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("unexpected EOF"), "{err}");
}

/// A full disk is reported as one, not as a failure to unpack.
#[test]
fn a_full_disk_is_named() {
    assert!(nix::unistd::geteuid().is_root(), "layer tests need root, as the agent has");
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    nix::mount::mount(Some("tmpfs"), &small, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=64k")).unwrap();
    let bytes = Layer::new().file("big", &vec![1u8; 1 << 20]).bytes();
    let result = unpack_layer(bytes.as_slice(), &small.join("layer"), None);
    let left = listing(&small);
    nix::mount::umount2(&small, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}
