//! What private_fs.rs means by "private" and "ours" on Windows.
//!
//! Berth's state lives under %LOCALAPPDATA%, whose ACL admits only the
//! user, SYSTEM and Administrators, and what Berth creates there inherits
//! it: nothing has to be taken away from others. Checking the owner SID of
//! a BERTH_HOME set elsewhere is not written yet (it needs
//! GetSecurityInfo); links are refused as on Unix.

use std::fs::{Metadata, OpenOptions};
use std::io;
use std::path::Path;

/// A directory that inherits its parent's ACL.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir)
}

/// See the module's comment: the inherited ACL is private already.
pub fn others_may_access(_meta: &Metadata) -> bool {
    false
}

/// Never called: [`others_may_access`] is false.
pub fn make_private(_path: &Path, _meta: &Metadata) -> io::Result<()> {
    Ok(())
}

/// See the module's comment.
pub fn owner_mismatch(_meta: &Metadata) -> Option<String> {
    None
}

/// As [`no_follow`]; the ACL is inherited (see the module's comment).
pub fn no_follow_private(options: &mut OpenOptions) {
    no_follow(options);
}

/// Opens a link itself rather than its target (FILE_FLAG_OPEN_REPARSE_POINT),
/// so private_fs.rs sees the link in the opened file's metadata and refuses it.
pub fn no_follow(options: &mut OpenOptions) {
    use std::os::windows::fs::OpenOptionsExt;
    options.custom_flags(windows_sys::Win32::Storage::FileSystem::FILE_FLAG_OPEN_REPARSE_POINT);
}

/// Windows opens the link instead of failing (see [`no_follow`]).
pub fn is_link_refusal(_err: &io::Error) -> bool {
    false
}
