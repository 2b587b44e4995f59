//! What a host watcher's events (the `notify` crate: inotify, FSEvents,
//! ReadDirectoryChangesW) become in the guest: [`ShareChange`]s at guest
//! paths, in the order they happened, with the inotify kinds a local edit
//! raises.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent_proto::share_change::Kind;
use berth_agent_proto::ShareChange;
use notify::event::{AccessKind, AccessMode, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

/// A share as the watcher needs it: where it is on the host and in the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRoot {
    pub host_path: PathBuf,
    pub guest_path: PathBuf,
}

/// Turns host events into guest changes. One per watcher: a rename's halves
/// are paired across events.
pub struct Translator {
    shares: Vec<ShareRoot>,
    /// Whether the backend reports closes after writing (inotify). Where it
    /// does not (FSEvents, Windows), each data change is a modify and a
    /// close-write: watchers that wait for the close (most do) still act.
    reports_close: bool,
    /// A moved-away path whose other half may still come (inotify reports a
    /// rename as From, To, then Both, all with one cookie).
    pending_from: Option<(usize, PathBuf)>,
    /// The last change given out and when, so a path's second report of
    /// one edit (a directory's own DELETE_SELF beside its parent's DELETE)
    /// is not raised twice.
    last: Option<(ShareChange, Instant)>,
    /// When the event being translated was reported.
    now: Instant,
}

/// Identical changes back to back within this are one edit reported twice
/// (or writes in a burst, which inotify itself merges when queued together).
const REPEAT: Duration = Duration::from_millis(100);

impl Translator {
    pub fn new(shares: Vec<ShareRoot>, reports_close: bool) -> Translator {
        Translator { shares, reports_close, pending_from: None, last: None, now: Instant::now() }
    }

    /// The guest path of a host path inside a share (None: outside them all).
    pub fn guest_path(&self, host: &Path) -> Option<String> {
        self.shares.iter().find_map(|share| {
            let rest = host.strip_prefix(&share.host_path).ok()?;
            // Guest paths are Linux paths whatever the host's separator.
            let mut guest = share.guest_path.to_str()?.trim_end_matches('/').to_string();
            for part in rest.components() {
                guest.push('/');
                guest.push_str(part.as_os_str().to_str()?);
            }
            Some(if guest.is_empty() { "/".into() } else { guest })
        })
    }

    /// The changes one event, reported at `now`, makes, after any it completes.
    pub fn push(&mut self, event: &Event, now: Instant) -> Vec<ShareChange> {
        self.now = now;
        let mut out = Vec::new();
        let tracker = event.attrs.tracker();
        if let Some((cookie, from)) = self.pending_from.take() {
            let completes =
                matches!(event.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)))
                    && tracker == Some(cookie);
            if completes {
                // `To` comes first; `Both` carries both paths and says it all.
                if matches!(event.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To))) {
                    self.pending_from = Some((cookie, from));
                    return out;
                }
            } else {
                // Moved out of every watched tree: gone, as far as the guest knows.
                self.emit(&mut out, Kind::Delete, &from, None);
            }
        }
        let first = event.paths.first();
        match (&event.kind, first) {
            (_, None) => {}
            (EventKind::Create(_), Some(path)) => self.emit(&mut out, Kind::Create, path, None),
            (EventKind::Remove(what), Some(path)) => {
                let is_dir = matches!(what, RemoveKind::Folder);
                self.emit_change(&mut out, Kind::Delete, path, None, is_dir)
            }
            (EventKind::Modify(ModifyKind::Name(mode)), Some(path)) => match mode {
                RenameMode::Both => match event.paths.get(1) {
                    Some(to) => self.emit(&mut out, Kind::Rename, path, Some(to)),
                    None => self.emit(&mut out, Kind::Create, path, None),
                },
                // A watched root moving itself (MOVE_SELF) has no cookie;
                // its parent, if watched, reports the rename.
                RenameMode::From => {
                    if let Some(cookie) = tracker {
                        self.pending_from = Some((cookie, path.clone()));
                    }
                }
                // Moved in from outside the watched trees.
                RenameMode::To => self.emit(&mut out, Kind::Create, path, None),
                // FSEvents and Windows say only that the name changed.
                RenameMode::Any | RenameMode::Other => {
                    let kind = if path.symlink_metadata().is_ok() { Kind::Create } else { Kind::Delete };
                    self.emit(&mut out, kind, path, None)
                }
            },
            (EventKind::Modify(ModifyKind::Metadata(_)), _) => {}
            (EventKind::Modify(_), Some(path)) => {
                self.emit(&mut out, Kind::Modify, path, None);
                if !self.reports_close {
                    self.emit(&mut out, Kind::CloseWrite, path, None);
                }
            }
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), Some(path)) => {
                self.emit(&mut out, Kind::CloseWrite, path, None)
            }
            _ => {}
        }
        out
    }

    /// What a rename half still pending turns out to be once no other half came.
    pub fn flush(&mut self) -> Vec<ShareChange> {
        let mut out = Vec::new();
        if let Some((_, from)) = self.pending_from.take() {
            self.emit(&mut out, Kind::Delete, &from, None);
        }
        out
    }

    pub fn has_pending(&self) -> bool {
        self.pending_from.is_some()
    }

    fn emit(&mut self, out: &mut Vec<ShareChange>, kind: Kind, path: &Path, to: Option<&PathBuf>) {
        self.emit_change(out, kind, path, to, false)
    }

    /// `is_dir`: a directory was deleted (a rename away or out of the shares
    /// cannot say, and the guest then knows only what it cached).
    fn emit_change(&mut self, out: &mut Vec<ShareChange>, kind: Kind, path: &Path, to: Option<&PathBuf>, is_dir: bool) {
        let Some(guest) = self.guest_path(path) else { return };
        let to_path = match to {
            Some(to) => match self.guest_path(to) {
                Some(to) => to,
                // Renamed out of the shares: deleted, for the guest.
                None => return self.emit(out, Kind::Delete, path, None),
            },
            None => String::new(),
        };
        let change = ShareChange { kind: kind as i32, path: guest, to_path, is_dir };
        if let Some((last, at)) = &self.last {
            if *last == change && self.now.saturating_duration_since(*at) < REPEAT {
                return;
            }
        }
        self.last = Some((change.clone(), self.now));
        out.push(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    impl Translator {
        fn push_now(&mut self, event: &Event) -> Vec<ShareChange> {
            let now = self.now;
            self.push(event, now)
        }
    }

    fn translator(reports_close: bool) -> Translator {
        let shares = vec![ShareRoot { host_path: "/home/me".into(), guest_path: "/home/me".into() }];
        Translator::new(shares, reports_close)
    }

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths.iter().fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    fn change(kind: Kind, path: &str, to_path: &str) -> ShareChange {
        ShareChange { kind: kind as i32, path: path.into(), to_path: to_path.into(), is_dir: false }
    }

    fn dir_deleted(path: &str) -> ShareChange {
        ShareChange { is_dir: true, ..change(Kind::Delete, path, "") }
    }

    /// inotify's view of `echo x > f; mkdir d; rm f; rmdir d` under a share.
    #[test]
    fn each_inotify_kind_becomes_its_change() {
        let mut t = translator(true);
        let mut got = Vec::new();
        for e in [
            event(EventKind::Create(CreateKind::File), &["/home/me/p/f"]),
            event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/home/me/p/f"]),
            event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/home/me/p/f"]),
            event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/home/me/p/f"]),
            event(EventKind::Access(AccessKind::Close(AccessMode::Read)), &["/home/me/p/f"]),
            event(EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)), &["/home/me/p/f"]),
            event(EventKind::Create(CreateKind::Folder), &["/home/me/p/d"]),
            event(EventKind::Remove(RemoveKind::File), &["/home/me/p/f"]),
            // A directory's removal: its own watch's DELETE_SELF, then its parent's DELETE.
            event(EventKind::Remove(RemoveKind::Folder), &["/home/me/p/d"]),
            event(EventKind::Remove(RemoveKind::Folder), &["/home/me/p/d"]),
        ] {
            got.extend(t.push_now(&e));
        }
        assert_eq!(
            got,
            vec![
                change(Kind::Create, "/home/me/p/f", ""),
                change(Kind::Modify, "/home/me/p/f", ""),
                change(Kind::CloseWrite, "/home/me/p/f", ""),
                change(Kind::Create, "/home/me/p/d", ""),
                change(Kind::Delete, "/home/me/p/f", ""),
                dir_deleted("/home/me/p/d"),
            ]
        );
    }

    #[test]
    fn an_inotify_rename_is_one_change_with_both_names() {
        let mut t = translator(true);
        let from = event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/home/me/a"]).set_tracker(7);
        let to = event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/home/me/b"]).set_tracker(7);
        let both =
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/home/me/a", "/home/me/b"]).set_tracker(7);
        assert!(t.push_now(&from).is_empty());
        assert!(t.push_now(&to).is_empty());
        assert_eq!(t.push_now(&both), vec![change(Kind::Rename, "/home/me/a", "/home/me/b")]);
        assert!(!t.has_pending());
    }

    #[test]
    fn the_same_edit_again_later_is_raised_again() {
        let mut t = translator(true);
        let modify = event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/home/me/f"]);
        let start = Instant::now();
        assert_eq!(t.push(&modify, start).len(), 1);
        assert!(t.push(&modify, start + Duration::from_millis(5)).is_empty(), "back to back: one edit");
        assert_eq!(t.push(&modify, start + REPEAT * 2).len(), 1);
    }

    #[test]
    fn moves_across_the_edge_of_the_shares_are_a_delete_or_a_create() {
        let mut t = translator(true);
        // Moved out: the From is never answered; the next event (or the idle flush) says deleted.
        let out = event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/home/me/a"]).set_tracker(1);
        assert!(t.push_now(&out).is_empty());
        let next = event(EventKind::Create(CreateKind::File), &["/home/me/c"]);
        assert_eq!(
            t.push_now(&next),
            vec![change(Kind::Delete, "/home/me/a", ""), change(Kind::Create, "/home/me/c", "")]
        );
        assert!(t.push_now(&out).is_empty());
        assert_eq!(t.flush(), vec![change(Kind::Delete, "/home/me/a", "")]);
        // Moved in from elsewhere: a To without its From.
        let moved_in = event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/home/me/in"]).set_tracker(2);
        assert_eq!(t.push_now(&moved_in), vec![change(Kind::Create, "/home/me/in", "")]);
        // Renamed to a path outside the shares.
        let both = event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &["/home/me/x", "/etc/x"]);
        assert_eq!(t.push_now(&both), vec![change(Kind::Delete, "/home/me/x", "")]);
    }

    #[test]
    fn paths_outside_the_shares_are_not_sent() {
        let mut t = translator(true);
        assert!(t.push_now(&event(EventKind::Create(CreateKind::File), &["/home/meme/f"])).is_empty());
        assert!(t.push_now(&event(EventKind::Create(CreateKind::File), &["/etc/f"])).is_empty());
    }

    #[test]
    fn a_share_maps_to_its_guest_path() {
        let shares = vec![ShareRoot { host_path: "/Users/me".into(), guest_path: "/mnt/me".into() }];
        let mut t = Translator::new(shares, true);
        let got = t.push_now(&event(EventKind::Create(CreateKind::File), &["/Users/me/src/a.rs"]));
        assert_eq!(got, vec![change(Kind::Create, "/mnt/me/src/a.rs", "")]);
    }

    /// FSEvents reports no closes and renames as one name change per path.
    #[test]
    fn a_backend_without_closes_gets_them_after_each_write() {
        let mut t = translator(false);
        let got = t.push_now(&event(EventKind::Modify(ModifyKind::Any), &["/home/me/f"]));
        assert_eq!(got, vec![change(Kind::Modify, "/home/me/f", ""), change(Kind::CloseWrite, "/home/me/f", "")]);

        let dir = tempfile::tempdir().unwrap();
        let shares = vec![ShareRoot { host_path: dir.path().into(), guest_path: "/g".into() }];
        let mut t = Translator::new(shares, false);
        std::fs::write(dir.path().join("new"), "").unwrap();
        let renamed = |name: &str| {
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), &[dir.path().join(name).to_str().unwrap()])
        };
        assert_eq!(t.push_now(&renamed("old")), vec![change(Kind::Delete, "/g/old", "")]);
        assert_eq!(t.push_now(&renamed("new")), vec![change(Kind::Create, "/g/new", "")]);
    }
}
