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
/// stopped. The guest caches names and attributes for a second
/// (virtiofsd's `--cache=auto`), so a host delete right after one container
/// and before the next must still be raised: else the next container's write
/// lands in the deleted file, never to be seen on the host. Later edits find
/// the guest's cache expired.
const LINGER: Duration = Duration::from_secs(3);

/// Starts watching; the watch ends when the handle is dropped.
pub fn spawn(agent: AgentClient<Channel>, shares: Vec<ShareRoot>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(run(agent, shares)))
}

async fn run(agent: AgentClient<Channel>, shares: Vec<ShareRoot>) {
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let watcher = match notify::recommended_watcher(move |event| {
        let _ = event_tx.send(event);
    }) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(%err, "no host file watcher: containers will not see host edits of bind mounts");
            return;
        }
    };
    let watched = Watched { watcher: Arc::new(Mutex::new(watcher)), paths: Arc::default() };
    let _binds = AbortOnDrop(tokio::spawn(follow_binds(agent.clone(), watched, shares.clone())));
    // inotify reports closes after writing; FSEvents and Windows do not.
    let mut translator = Translator::new(shares, cfg!(target_os = "linux"));
    loop {
        let (tx, rx) = mpsc::channel(64);
        let mut client = agent.clone();
        let call = tokio::spawn(async move { client.share_changed(ReceiverStream::new(rx)).await.map(|_| ()) });
        match forward(&mut events, &mut translator, tx, call).await {
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
    events: &mut mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    translator: &mut Translator,
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
            event = events.recv() => event?,
            _ = tokio::time::sleep(RENAME_PAIRING), if translator.has_pending() => {
                let flushed = translator.flush();
                let _ = tx.send(ShareChanges { changes: flushed }).await;
                continue;
            }
        };
        // One batch: what the watcher has read so far.
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                Ok(event) => changes.extend(translator.push(&event, std::time::Instant::now())),
                Err(err) => tracing::warn!(%err, "host file watcher"),
            }
            next = events.try_recv().ok();
        }
        if !changes.is_empty() {
            // A closed stream means the call ended; the select above says why.
            let _ = tx.send(ShareChanges { changes }).await;
        }
    }
}

/// The watcher and the trees it watches.
#[derive(Clone)]
struct Watched {
    watcher: Arc<Mutex<RecommendedWatcher>>,
    paths: Arc<Mutex<Lingering>>,
}

impl Watched {
    /// Watches the trees `wanted` now and those wanted until less than
    /// [`LINGER`] ago; adding a tree walks it, so off the runtime. Returns
    /// when a lingering tree is due to go.
    async fn set(&self, wanted: BTreeSet<PathBuf>) -> Option<Instant> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut paths = this.paths.lock().unwrap_or_else(|e| e.into_inner());
            let mut watcher = this.watcher.lock().unwrap_or_else(|e| e.into_inner());
            let before = paths.watched();
            let due = paths.update(&wanted, Instant::now());
            let after = paths.watched();
            for gone in before.difference(&after) {
                let _ = watcher.unwatch(gone);
            }
            for new in after.difference(&before) {
                match watcher.watch(new, RecursiveMode::Recursive) {
                    Ok(()) => tracing::debug!(path = %new.display(), "watching for host edits"),
                    Err(err) => tracing::warn!(path = %new.display(), %err, "cannot watch for host edits"),
                }
            }
            due
        })
        .await
        .unwrap_or(None)
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
    fn watched(&self) -> BTreeSet<PathBuf> {
        self.wanted.iter().chain(self.unwanted_since.keys()).cloned().collect()
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
                    due = watched.set(bind_sources(&running, &shares)).await;
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
fn bind_sources(containers: &Value, shares: &[ShareRoot]) -> BTreeSet<PathBuf> {
    let mut sources: BTreeSet<PathBuf> = containers
        .as_array()
        .into_iter()
        .flatten()
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
        let got: Vec<PathBuf> = bind_sources(&running, &shares).into_iter().collect();
        assert_eq!(got, vec![PathBuf::from("/home/me/proj"), PathBuf::from("/tmp/x")]);
    }
}
