//! `docker cp` and `docker export` in the agent: each operation runs
//! `berth-agent archive OP PLAN` (engine archive.rs), a helper that enters
//! the container's root first, with the tar streamed through its stdio.
//! Reads (`docker cp` out, `docker export`) take no lock: a running
//! container's files are read in its mount namespace, and otherwise the
//! helper mounts a read-only view of the layers in a mount namespace of
//! its own, so a long export holds up no `docker stop`, and one that a
//! `docker rm` overtakes ends with an error. `docker cp` into a stopped
//! container mounts its overlay under the operation lock, so a start
//! cannot race it. For a stopped container the helper binds its volumes
//! and binds over the root, so `docker cp` sees them before it ever ran.

use std::process::{Command, Stdio};
use std::sync::Arc;

use berth_engine::archive::ArchivePlan;
use berth_engine::rootfs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::AgentError;

use crate::containers::{Containers, Entry};
use crate::reaper::Reaper;

/// The end of a helper: its exit code and what it said on stderr.
struct HelperExit {
    code: i32,
    stderr: String,
}

impl HelperExit {
    fn into_status(self, path: &str, container: &str) -> Result<(), AgentError> {
        match self.code {
            0 => Ok(()),
            2 => Err(AgentError::not_found(format!("Could not find the file {path} in container {container}"))),
            _ => Err(AgentError::invalid(self.stderr.trim().to_string())),
        }
    }
}

/// Runs the archive helper for `op` on the container's `path`; `input`
/// feeds its stdin, `output` receives its stdout in chunks.
pub async fn run(
    containers: &Arc<Containers>,
    id: &str,
    op: &str,
    path: &str,
    input: Option<mpsc::Receiver<Vec<u8>>>,
    output: Option<mpsc::Sender<Vec<u8>>>,
) -> Result<(), AgentError> {
    let entry = containers.lookup(id).await?;
    let path = if path.is_empty() { "/" } else { path };
    if op == "put" {
        return put(containers, &entry, path, input).await?.into_status(path, id);
    }
    let record = entry.snapshot();
    // `docker export` is of the root filesystem alone, as Docker's is; a
    // running container's files otherwise as it sees them.
    let running = record.state.status.is_running() && op != "export";
    let mounts = if running || op == "export" { Vec::new() } else { own_mounts(containers, &record)? };
    let layer = entry.dir.layer();
    let plan = ArchivePlan {
        pid: running.then_some(record.state.pid),
        rootfs: (!running).then(|| layer.merged.clone()),
        path: path.to_string(),
        mounts,
        view_layers: if running {
            Vec::new()
        } else {
            // A container that never ran has no writable layer yet.
            record.layers.iter().cloned().chain(Some(layer.upper.clone()).filter(|upper| upper.is_dir())).collect()
        },
    };
    // No operation lock: the helper reads a view of its own, so a long
    // `docker cp` out or `docker export` holds up no stop, start or remove.
    let exit = run_helper(&containers.reaper, op, &plan, None, output).await?;
    if entry.removed() || entry.state().status == berth_engine::container::Status::Removing {
        // Removed while it was read: what was sent may miss files.
        return Err(AgentError::conflict(format!("container {id} was removed while it was being read")));
    }
    exit.into_status(path, id)
}

/// `docker cp` into a container: through its one writable overlay, under
/// its operation lock (a start must not mount a second overlay on the same
/// writable layer while the copy writes), durable before it answers.
async fn put(
    containers: &Arc<Containers>,
    entry: &Arc<Entry>,
    path: &str,
    input: Option<mpsc::Receiver<Vec<u8>>>,
) -> Result<HelperExit, AgentError> {
    let _op = entry.op.lock().await;
    let record = entry.snapshot();
    let layer = entry.dir.layer();
    let running = record.state.status.is_running();
    if !running {
        let (layers, layer2) = (record.layers.clone(), layer.clone());
        tokio::task::spawn_blocking(move || {
            let _ = rootfs::unmount_overlay(&layer2);
            rootfs::mount_overlay(&layers, &layer2)
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(|e| AgentError::internal(e.to_string()))?;
    }
    let mounts = if running { Vec::new() } else { own_mounts(containers, &record)? };
    let plan = ArchivePlan {
        pid: running.then_some(record.state.pid),
        rootfs: (!running).then(|| layer.merged.clone()),
        path: path.to_string(),
        mounts,
        view_layers: Vec::new(),
    };
    let mut result = run_helper(&containers.reaper, "put", &plan, input, None).await;
    if result.as_ref().is_ok_and(|exit| exit.code == 0) {
        // A 200 for `docker cp` into a container means the files are on disk.
        let dir = entry.dir.clone();
        let synced = tokio::task::spawn_blocking(move || berth_engine::durable::sync_filesystem(dir.path()))
            .await
            .map_err(std::io::Error::other)
            .and_then(|synced| synced);
        if let Err(err) = synced {
            result = Err(AgentError::internal(format!("syncing what was copied in: {err}")));
        }
    }
    if !running && !entry.state().status.is_running() {
        let _ = tokio::task::spawn_blocking(move || rootfs::unmount_overlay(&layer)).await;
    }
    result
}

/// A container's binds and volumes, for the helper to mount over its root
/// when it is not running (the running one has them in its namespace).
fn own_mounts(
    containers: &Containers,
    record: &berth_engine::container::Container,
) -> Result<Vec<berth_engine::spec::Bind>, AgentError> {
    let volumes = berth_engine::bundle::volume_binds(record, containers.volumes.root())
        .map_err(|e| AgentError::internal(e.to_string()))?;
    Ok(record.host_binds().into_iter().chain(volumes).collect())
}

/// Starts `berth-agent archive OP PLAN` and wires its stdio to `input`
/// and `output`.
async fn run_helper(
    reaper: &Reaper,
    op: &str,
    plan: &ArchivePlan,
    input: Option<mpsc::Receiver<Vec<u8>>>,
    output: Option<mpsc::Sender<Vec<u8>>>,
) -> Result<HelperExit, AgentError> {
    let plan_json = serde_json::to_string(plan).map_err(|e| AgentError::internal(e.to_string()))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(["archive", op, &plan_json])
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(if output.is_some() { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped());
    let (mut child, exited) =
        reaper.spawn(&mut cmd).map_err(|e| AgentError::internal(format!("starting the archive helper: {e}")))?;
    let stdin = child.stdin.take().map(tokio::process::ChildStdin::from_std).transpose();
    let stdout = child.stdout.take().map(tokio::process::ChildStdout::from_std).transpose();
    let stderr = child.stderr.take().map(tokio::process::ChildStderr::from_std).transpose();
    let (stdin, stdout, stderr) = match (stdin, stdout, stderr) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return Err(AgentError::internal("wiring the archive helper's stdio")),
    };
    let feed = async move {
        if let (Some(mut stdin), Some(mut input)) = (stdin, input) {
            while let Some(chunk) = input.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
    };
    let drain = async move {
        if let (Some(mut stdout), Some(output)) = (stdout, output) {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if output.send(buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    };
    let errors = async move {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text).await;
        }
        text
    };
    let ((), (), stderr) = tokio::join!(feed, drain, errors);
    let exit = exited.await.map_err(|_| AgentError::internal("the archive helper vanished"))?;
    Ok(HelperExit { code: exit.code, stderr })
}
