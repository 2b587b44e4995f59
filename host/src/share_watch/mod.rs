//! Host edits of bind-mounted directories, raised as inotify events in
//! containers (issue 12).
//!
//! virtio-fs has no notification channel in our guest kernel, so the daemon
//! watches the host side itself: a recursive `notify` watcher (inotify,
//! FSEvents, ReadDirectoryChangesW) on the bind sources of running
//! containers, not on whole shares (a home directory has far more
//! directories than inotify watches are worth). What it reports is
//! translated (translate.rs) and streamed to the agent over one ShareChanged
//! call, which raises each change on the guest's inodes
//! (guest-agent/src/share_changes.rs, kernel-config/berth-virtiofs.patch).
//! The changes containers make come back through the host's watcher too;
//! the guest kernel drops those echoes.
//!
//! The guest may cache a share for a day (`--cache=always`, vm/share_cache.rs),
//! which is right only for what this watcher covers. So the Docker API
//! watches a container's bind sources before it starts ([`ShareWatch::cover`])
//! and has the agent refresh a tree that was not watched until then (it may
//! have changed unseen); a tree this task begins to watch by itself (a
//! container the agent restarted) and every tree after the watcher lost
//! events are sent as `stale_trees`.

mod translate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::{EventsRequest, ListContainersRequest, ShareChanges};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

use crate::ports::AbortOnDrop;
pub use translate::ShareRoot;
use translate::Translator;

/// How long a moved-away path waits for the other half of its rename
/// (inotify queues both halves together; this only bounds a lone one).
const RENAME_PAIRING: Duration = Duration::from_millis(20);
/// How soon a lost connection to the agent is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a tree stays watched after the last container binding it
/// stopped. A tree watched again after a lapse is refreshed in the guest
/// (which drops every unused cached name of the VM), so back-to-back
/// containers on one tree (`docker run` in a loop, a compose restart) keep
/// it watched and their cache warm.
const LINGER: Duration = Duration::from_secs(10);

/// What the watcher task hears: the host's events, and trees whose guest
/// cache may predate their watch.
enum Report {
    Host(notify::Result<notify::Event>),
    Stale(Vec<PathBuf>),
}

/// The watch, for the Docker API; it ends when the task's handle is dropped.
#[derive(Clone)]
pub struct ShareWatch {
    watched: Watched,
    shares: Vec<ShareRoot>,
}

impl ShareWatch {
    /// Watches the bind sources of `container` (its inspect JSON) before
    /// it starts, and returns, as guest paths, those that were not watched
    /// until now: the guest's cache of them may be older than the watch.
    pub async fn cover(&self, container: &Value) -> Vec<String> {
        let sources = bind_sources(std::slice::from_ref(container), &self.shares);
        if sources.is_empty() {
            return Vec::new();
        }
        let (_, new) = self.watched.update(Update::Cover(sources)).await;
        let translator = Translator::new(self.shares.clone(), false);
        new.iter().filter_map(|p| translator.guest_path(p)).collect()
    }
}

/// Starts watching; the watch ends when the handle is dropped. None: the
/// host has no file watcher (the shares then keep the short cache).
pub fn spawn(agent: AgentClient<Channel>, shares: Vec<ShareRoot>) -> Option<(ShareWatch, AbortOnDrop)> {
    let (report_tx, reports) = mpsc::unbounded_channel();
    let host_tx = report_tx.clone();
    let watcher = match notify::recommended_watcher(move |event| {
        let _ = host_tx.send(Report::Host(event));
    }) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(%err, "no host file watcher: containers will not see host edits of bind mounts");
            return None;
        }
    };
    let watched = Watched { watcher: Arc::new(Mutex::new(watcher)), paths: Arc::default(), reports: report_tx };
    let watch = ShareWatch { watched: watched.clone(), shares: shares.clone() };
    Some((watch, AbortOnDrop(tokio::spawn(run(agent, shares, watched, reports)))))
}

async fn run(
    agent: AgentClient<Channel>,
    shares: Vec<ShareRoot>,
    watched: Watched,
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    let _binds = AbortOnDrop(tokio::spawn(follow_binds(agent.clone(), watched.clone(), shares.clone())));
    // inotify reports closes after writing; FSEvents and Windows do not.
    let mut translator = Translator::new(shares, cfg!(target_os = "linux"));
    loop {
        let (tx, rx) = mpsc::channel(64);
        let mut client = agent.clone();
        let call = tokio::spawn(async move { client.share_changed(ReceiverStream::new(rx)).await.map(|_| ()) });
        match forward(&mut reports, &mut translator, &watched, tx, call).await {
            Some(status) if matches!(status.code(), Code::FailedPrecondition | Code::Unimplemented) => {
                tracing::warn!(error = status.message(), "containers will not see host edits of bind mounts");
                return;
            }
            Some(status) => tracing::debug!(error = status.message(), "share changes: the agent went away"),
            None => return,
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Sends what the watcher reports until the call ends (its error), or the
/// watcher does (None).
async fn forward(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    translator: &mut Translator,
    watched: &Watched,
    tx: mpsc::Sender<ShareChanges>,
    mut call: tokio::task::JoinHandle<Result<(), tonic::Status>>,
) -> Option<tonic::Status> {
    loop {
        let mut changes = Vec::new();
        let first = tokio::select! {
            ended = &mut call => {
                return Some(match ended {
                    Ok(Ok(())) => tonic::Status::unavailable("the agent ended the stream"),
                    Ok(Err(status)) => status,
                    Err(err) => tonic::Status::internal(err.to_string()),
                });
            }
            report = reports.recv() => report?,
            _ = tokio::time::sleep(RENAME_PAIRING), if translator.has_pending() => {
                let flushed = translator.flush();
                let _ = tx.send(ShareChanges { changes: flushed, stale_trees: Vec::new() }).await;
                continue;
            }
        };
        // One batch: what the watcher has read so far.
        let mut stale = BTreeSet::new();
        let mut next = Some(first);
        while let Some(report) = next {
            match report {
                // The kernel's queue overflowed: what was lost is unknown.
                Report::Host(Ok(event)) if event.need_rescan() => {
                    tracing::warn!("the host file watcher lost events: refreshing the guest's view of every tree");
                    stale.extend(watched.trees());
                }
                Report::Host(Ok(event)) => changes.extend(translator.push(&event, std::time::Instant::now())),
                Report::Host(Err(err)) => tracing::warn!(%err, "host file watcher"),
                Report::Stale(trees) => stale.extend(trees),
            }
            next = reports.try_recv().ok();
        }
        let stale_trees: Vec<String> = stale.iter().filter_map(|p| translator.guest_path(p)).collect();
        if !changes.is_empty() || !stale_trees.is_empty() {
            // A closed stream means the call ended; the select above says why.
            let _ = tx.send(ShareChanges { changes, stale_trees }).await;
        }
    }
}

/// The watcher and the trees it watches.
#[derive(Clone)]
struct Watched {
    watcher: Arc<Mutex<RecommendedWatcher>>,
    paths: Arc<Mutex<Lingering>>,
    /// To the watcher task: trees [`Update::Running`] began to watch.
    reports: mpsc::UnboundedSender<Report>,
}

/// What the watched trees become.
enum Update {
    /// The bind sources of the running containers.
    Running(BTreeSet<PathBuf>),
    /// Those of a container about to start, kept until it runs.
    Cover(BTreeSet<PathBuf>),
}

impl Watched {
    /// Applies `update`; adding a tree walks it, so off the runtime.
    /// Returns when a lingering tree is due to go, and the trees watched
    /// from now on that were not before (for [`Update::Running`], also
    /// reported stale to the watcher task: their containers run already).
    async fn update(&self, update: Update) -> (Option<Instant>, BTreeSet<PathBuf>) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut paths = this.paths.lock().unwrap_or_else(|e| e.into_inner());
            let mut watcher = this.watcher.lock().unwrap_or_else(|e| e.into_inner());
            let before = paths.watched();
            let now = Instant::now();
            let (due, running) = match update {
                Update::Running(wanted) => (paths.update(&wanted, now), true),
                Update::Cover(starting) => (paths.cover(&starting, now), false),
            };
            let after = paths.watched();
            for gone in before.difference(&after) {
                let _ = watcher.unwatch(gone);
            }
            let new: BTreeSet<PathBuf> = after.difference(&before).cloned().collect();
            for path in &new {
                match watcher.watch(path, RecursiveMode::Recursive) {
                    Ok(()) => tracing::debug!(path = %path.display(), "watching for host edits"),
                    Err(err) => tracing::warn!(path = %path.display(), %err,
                        "cannot watch for host edits: containers may see this tree as it was"),
                }
            }
            if running && !new.is_empty() {
                let _ = this.reports.send(Report::Stale(new.iter().cloned().collect()));
            }
            (due, new)
        })
        .await
        .unwrap_or_default()
    }

    fn trees(&self) -> BTreeSet<PathBuf> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).watched()
    }
}

/// The trees to watch: those wanted, and those no longer wanted for less
/// than [`LINGER`] (kept with when they stopped being wanted).
#[derive(Default)]
struct Lingering {
    wanted: BTreeSet<PathBuf>,
    unwanted_since: BTreeMap<PathBuf, Instant>,
}

impl Lingering {
    /// The trees to watch, without those inside another (a recursive watch
    /// has them; watching both, unwatching the inner one would take its
    /// directories from the outer watch too).
    fn watched(&self) -> BTreeSet<PathBuf> {
        let all: BTreeSet<&PathBuf> = self.wanted.iter().chain(self.unwanted_since.keys()).collect();
        all.iter()
            .filter(|p| !all.iter().any(|other| other != *p && p.starts_with(other)))
            .map(|p| (*p).clone())
            .collect()
    }

    /// Takes what is wanted at `now`; returns when the next lingering tree
    /// is due to go.
    fn update(&mut self, wanted: &BTreeSet<PathBuf>, now: Instant) -> Option<Instant> {
        for dropped in self.wanted.difference(wanted) {
            self.unwanted_since.insert(dropped.clone(), now);
        }
        self.unwanted_since.retain(|path, since| !wanted.contains(path) && now.duration_since(*since) < LINGER);
        self.wanted = wanted.clone();
        self.unwanted_since.values().map(|since| *since + LINGER).min()
    }

    /// Adds the trees of a container about to start, as if wanted until
    /// `now`: they stay for [`LINGER`], by when the container runs (and
    /// wants them) or has failed to start. A tree inside a watched one is
    /// covered already. Returns when the next lingering tree is due to go.
    fn cover(&mut self, starting: &BTreeSet<PathBuf>, now: Instant) -> Option<Instant> {
        let watched = self.watched();
        for tree in starting {
            match watched.iter().find(|w| tree.starts_with(w)) {
                // A lingering tree that holds it lingers from now on.
                Some(outer) => {
                    if let Some(since) = self.unwanted_since.get_mut(outer) {
                        *since = now;
                    }
                }
                None => {
                    self.unwanted_since.insert(tree.clone(), now);
                }
            }
        }
        self.unwanted_since.values().map(|since| *since + LINGER).min()
    }
}

/// Keeps the watched trees those bind-mounted into running containers.
async fn follow_binds(mut agent: AgentClient<Channel>, watched: Watched, shares: Vec<ShareRoot>) {
    loop {
        let request = EventsRequest {
            since_ns: 0,
            until_ns: 0,
            filters_json: r#"{"type":["container"],"event":["start","die"]}"#.into(),
        };
        // Subscribed before the list is read: a start in between is not missed.
        if let Ok(events) = agent.events(request).await {
            let mut events = events.into_inner();
            loop {
                let list = ListContainersRequest { all: false, ..Default::default() };
                let mut due = None;
                if let Ok(reply) = agent.list_containers(list).await {
                    let running: Value = serde_json::from_slice(&reply.into_inner().json).unwrap_or_default();
                    let running = running.as_array().map(Vec::as_slice).unwrap_or_default();
                    (due, _) = watched.update(Update::Running(bind_sources(running, &shares))).await;
                }
                // The next start or die, or a lingering tree's time to go.
                let event = async {
                    match due {
                        Some(at) => tokio::select! {
                            event = events.message() => Some(event),
                            () = tokio::time::sleep_until(at.into()) => None,
                        },
                        None => Some(events.message().await),
                    }
                };
                if let Some(event) = event.await {
                    if !matches!(event, Ok(Some(_))) {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The host directories bind-mounted into the listed containers that lie in
/// a share, without those inside another (a recursive watch has them).
fn bind_sources(containers: &[Value], shares: &[ShareRoot]) -> BTreeSet<PathBuf> {
    let mut sources: BTreeSet<PathBuf> = containers
        .iter()
        .flat_map(|c| c["Mounts"].as_array().into_iter().flatten())
        .filter(|m| m["Type"] == "bind")
        .filter_map(|m| host_path(Path::new(m["Source"].as_str()?), shares))
        .collect();
    let all = sources.clone();
    sources.retain(|p| !all.iter().any(|other| other != p && p.starts_with(other)));
    sources
}

/// Where a guest path inside a share is on the host.
fn host_path(guest: &Path, shares: &[ShareRoot]) -> Option<PathBuf> {
    shares.iter().find_map(|s| guest.strip_prefix(&s.guest_path).ok().map(|rest| s.host_path.join(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tree_stays_watched_for_a_while_after_its_last_container() {
        let mut lingering = Lingering::default();
        let t0 = Instant::now();
        let project: BTreeSet<PathBuf> = [PathBuf::from("/home/me/p")].into();
        assert_eq!(lingering.update(&project, t0), None);
        // Its container ran for minutes, then died: still watched, until LINGER.
        let died = t0 + Duration::from_secs(600);
        assert_eq!(lingering.update(&BTreeSet::new(), died), Some(died + LINGER));
        assert_eq!(lingering.watched(), project);
        // Another container starts in time: wanted again, nothing is due.
        assert_eq!(lingering.update(&project, died + Duration::from_secs(1)), None);
        let died_again = died + Duration::from_secs(2);
        assert_eq!(lingering.update(&BTreeSet::new(), died_again), Some(died_again + LINGER));
        assert_eq!(lingering.update(&BTreeSet::new(), died_again + LINGER), None);
        assert!(lingering.watched().is_empty());
    }

    #[test]
    fn a_starting_containers_trees_are_watched_before_it_runs() {
        let mut lingering = Lingering::default();
        let t0 = Instant::now();
        let paths = |list: &[&str]| -> BTreeSet<PathBuf> { list.iter().map(PathBuf::from).collect() };
        // Covered before the start: watched, and kept until its container runs.
        assert_eq!(lingering.cover(&paths(&["/home/me/p"]), t0), Some(t0 + LINGER));
        assert_eq!(lingering.watched(), paths(&["/home/me/p"]));
        assert_eq!(lingering.update(&paths(&["/home/me/p"]), t0 + Duration::from_secs(1)), None);
        // A tree inside a watched one needs no watch of its own.
        lingering.cover(&paths(&["/home/me/p/src"]), t0 + Duration::from_secs(2));
        assert_eq!(lingering.watched(), paths(&["/home/me/p"]));
        // One holding a watched tree replaces it (one recursive watch).
        lingering.cover(&paths(&["/home/me"]), t0 + Duration::from_secs(3));
        assert_eq!(lingering.watched(), paths(&["/home/me"]));
        // A start that never ran: the cover lingers out.
        let later = t0 + Duration::from_secs(3) + LINGER;
        assert_eq!(lingering.update(&paths(&["/home/me/p"]), later), None);
        assert_eq!(lingering.watched(), paths(&["/home/me/p"]));
    }

    #[test]
    fn the_bind_sources_in_shares_are_watched_once() {
        let shares = vec![
            ShareRoot { host_path: "/home/me".into(), guest_path: "/home/me".into() },
            ShareRoot { host_path: "/tmp".into(), guest_path: "/tmp".into() },
        ];
        let running = json!([
            {"Mounts": [
                {"Type": "bind", "Source": "/home/me/proj"},
                {"Type": "volume", "Source": "/var/lib/berth/volumes/v/_data"},
                {"Type": "bind", "Source": "/home/me/proj/src"},
            ]},
            {"Mounts": [{"Type": "bind", "Source": "/tmp/x"}, {"Type": "bind", "Source": "/etc/hosts"}]},
            {"Mounts": [{"Type": "bind", "Source": "/home/me/proj"}]},
            {"Mounts": null},
        ]);
        let got: Vec<PathBuf> = bind_sources(running.as_array().unwrap(), &shares).into_iter().collect();
        assert_eq!(got, vec![PathBuf::from("/home/me/proj"), PathBuf::from("/tmp/x")]);
    }
}
