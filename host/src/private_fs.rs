//! Berth's state is private to the user who runs it: the data disk holds
//! every volume and image, the logs show what containers print, and the
//! sockets in `run/` drive the engine. So BERTH_HOME and the directories in
//! it are 0700, the files Berth creates there 0600, and none of them is
//! used when it is a symbolic link or belongs to someone else: a BERTH_HOME
//! pre-created under /tmp by another user (or a link planted in its place)
//! would otherwise hand that user the sockets, the disk and the config.
//!
//! What "private" and "ours" mean is the OS's (platform::private_files);
//! the refusals and their wording are the same everywhere.

use std::fs::{File, Metadata, OpenOptions};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::platform::private_files as os;

/// Creates `dir` (private to the user) if it is missing, refuses it when it
/// is a link or not ours, and takes away the access of others if it had any.
/// `what` names it in errors ("BERTH_HOME", "the run directory").
pub fn ensure_dir(dir: &Path, what: &str) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match os::create_private_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("creating {what} {}", dir.display())),
    }
    let meta = check_dir(dir, what)?.expect("just created");
    if os::others_may_access(&meta) {
        os::make_private(dir, &meta).with_context(|| format!("making {what} {} private", dir.display()))?;
    }
    Ok(())
}

/// The checks of [`ensure_dir`] without creating or changing anything, for
/// the commands that only read (status, logs, stop, shell). None when the
/// directory does not exist.
pub fn check_dir(dir: &Path, what: &str) -> Result<Option<Metadata>> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("examining {what} {}", dir.display())),
    };
    if meta.file_type().is_symlink() {
        bail!("{}", symlink_refused(dir, what));
    }
    if !meta.is_dir() {
        bail!("{what} {} is not a directory", dir.display());
    }
    check_owner(dir, what, &meta)?;
    Ok(Some(meta))
}

/// Takes away the access of others to the files an older Berth left wider
/// (a 0644 disk image or log); links and other users' files are skipped,
/// they are refused when opened. Call it only on paths inside a directory
/// [`ensure_dir`] has made private, so nothing can swap them meanwhile.
pub fn tighten_existing(paths: impl IntoIterator<Item = std::path::PathBuf>) -> Result<()> {
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_file() && os::owner_mismatch(&meta).is_none() && os::others_may_access(&meta) {
            os::make_private(&path, &meta).with_context(|| format!("making {} private", path.display()))?;
        }
    }
    Ok(())
}

/// Opens (creating it private) a file Berth writes: a log or the data disk.
/// A link in its place is refused, and a file left wider by an older Berth
/// is made private.
pub fn open_for_writing(path: &Path, append: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    os::no_follow_private(&mut options);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(false);
    }
    let file = options.open(path).map_err(|err| refused_or(err, path, "the file"))?;
    let meta = opened_metadata(&file, path, "the file")?;
    if os::others_may_access(&meta) {
        os::make_private(path, &meta).with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(file)
}

/// Opens a file Berth only reads (config.toml), refusing a link or a file
/// of another user; None when it does not exist.
pub fn open_for_reading(path: &Path, what: &str) -> Result<Option<File>> {
    let mut options = OpenOptions::new();
    options.read(true);
    os::no_follow(&mut options);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(refused_or(err, path, what)),
    };
    opened_metadata(&file, path, what)?;
    Ok(Some(file))
}

/// The checks on an opened file: where the OS opens the link itself rather
/// than refusing it (Windows), the link is refused here.
fn opened_metadata(file: &File, path: &Path, what: &str) -> Result<Metadata> {
    let meta = file.metadata().with_context(|| format!("examining {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!("{}", symlink_refused(path, what));
    }
    check_owner(path, what, &meta)?;
    Ok(meta)
}

/// A refused link (ELOOP from O_NOFOLLOW) says what that means.
fn refused_or(err: std::io::Error, path: &Path, what: &str) -> anyhow::Error {
    if os::is_link_refusal(&err) {
        anyhow::anyhow!("{}", symlink_refused(path, what))
    } else {
        anyhow::Error::new(err).context(format!("opening {}", path.display()))
    }
}

fn symlink_refused(path: &Path, what: &str) -> String {
    let target = std::fs::read_link(path).map(|t| format!(" (to {})", t.display())).unwrap_or_default();
    format!(
        "{what} {}{target} is a symbolic link; Berth does not follow links in its state, because whoever \
         can change the link can redirect its sockets and files: use the real path instead (set BERTH_HOME \
         to it, or replace the link with the file or directory itself)",
        path.display()
    )
}

fn check_owner(path: &Path, what: &str, meta: &Metadata) -> Result<()> {
    if let Some(owners) = os::owner_mismatch(meta) {
        bail!(
            "{what} {} belongs to {owners}: its owner could read or redirect this \
             Berth; remove it, or set BERTH_HOME to a directory of your own",
            path.display(),
        );
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn make_dir(path: &Path, mode: u32) {
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The tests run as root (as tests/cli does); chown makes "another user".
    fn give_away(path: &Path) {
        std::os::unix::fs::lchown(path, Some(65534), Some(65534)).expect("chown needs root");
    }

    #[test]
    fn dirs_are_created_private_and_existing_ones_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/home");
        ensure_dir(&fresh, "BERTH_HOME").unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let wide = tmp.path().join("wide");
        make_dir(&wide, 0o755);
        ensure_dir(&wide, "BERTH_HOME").unwrap();
        assert_eq!(mode(&wide), 0o700);
    }

    #[test]
    fn a_symlinked_dir_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        make_dir(&target, 0o755);
        let link = tmp.path().join("home");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", ensure_dir(&link, "BERTH_HOME").unwrap_err());
        assert!(err.contains("BERTH_HOME") && err.contains("is a symbolic link"), "{err}");
        assert!(err.contains(&link.display().to_string()), "{err}");
        assert_eq!(mode(&target), 0o755, "the link's target is not chmodded");
        assert!(check_dir(&link, "BERTH_HOME").is_err());
    }

    #[test]
    fn a_dir_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("home");
        make_dir(&theirs, 0o777);
        give_away(&theirs);
        let err = format!("{:#}", ensure_dir(&theirs, "BERTH_HOME").unwrap_err());
        assert!(err.contains("belongs to uid 65534"), "{err}");
        assert_eq!(mode(&theirs), 0o777, "another user's directory is not chmodded");
        assert!(check_dir(&theirs, "BERTH_HOME").is_err());
        assert!(check_dir(&tmp.path().join("missing"), "BERTH_HOME").unwrap().is_none());
    }

    #[test]
    fn files_left_wide_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let (disk, log) = (tmp.path().join("disk.raw"), tmp.path().join("console.log"));
        for file in [&disk, &log] {
            std::fs::write(file, "x").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        give_away(&log);
        tighten_existing([disk.clone(), log.clone(), tmp.path().join("missing")]).unwrap();
        assert_eq!(mode(&disk), 0o600);
        assert_eq!(mode(&log), 0o644, "another user's file is refused when opened, not chmodded");
    }

    #[test]
    fn files_are_private_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("daemon.log");
        drop(open_for_writing(&log, true).unwrap());
        assert_eq!(mode(&log), 0o600);
        // A log from an older Berth, 0644.
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_for_writing(&log, false).unwrap());
        assert_eq!(mode(&log), 0o600);

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "x").unwrap();
        let link = tmp.path().join("disk.raw");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = format!("{:#}", open_for_writing(&link, false).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = format!("{:#}", open_for_reading(&link, "the config file").unwrap_err());
        assert!(err.contains("the config file") && err.contains("is a symbolic link"), "{err}");

        give_away(&elsewhere);
        let err = format!("{:#}", open_for_reading(&elsewhere, "the config file").unwrap_err());
        assert!(err.contains("belongs to uid 65534"), "{err}");
        assert!(open_for_reading(&tmp.path().join("none"), "the config file").unwrap().is_none());
    }
}
