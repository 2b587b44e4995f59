//! What private_fs.rs means by "private" and "ours" on Linux and macOS:
//! mode 0700/0600 and our effective uid.

use std::fs::{Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` with mode 0700 from its first moment.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(dir)
}

/// Whether group or others have any access.
pub fn others_may_access(meta: &Metadata) -> bool {
    meta.mode() & 0o077 != 0
}

/// chmod 700 (a directory) or 600 (a file).
pub fn make_private(path: &Path, meta: &Metadata) -> io::Result<()> {
    let mode = if meta.is_dir() { PRIVATE_DIR } else { PRIVATE_FILE };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Who owns it, when that is not us: "uid 65534, not to you (uid 1000)".
pub fn owner_mismatch(meta: &Metadata) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    (meta.uid() != me).then(|| format!("uid {}, not to you (uid {me})", meta.uid()))
}

/// A file created 0600, never through a link (O_NOFOLLOW).
pub fn no_follow_private(options: &mut OpenOptions) {
    options.mode(PRIVATE_FILE);
    no_follow(options);
}

/// Never through a link: opening one fails with ELOOP.
pub fn no_follow(options: &mut OpenOptions) {
    options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
}

/// O_NOFOLLOW answers ELOOP for a link.
pub fn is_link_refusal(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ELOOP)
}
