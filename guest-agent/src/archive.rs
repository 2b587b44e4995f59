//! `docker cp` and `docker export` in the agent: each operation runs
//! `berth-agent archive OP PLAN` (engine archive.rs), a helper that enters
//! the container's root first, with the tar streamed through its stdio.
//! A stopped container's overlay is mounted for the operation and
//! unmounted after it (under the container's operation lock, so a start
//! cannot race it); the helper binds the container's volumes and binds
//! over it, so `docker cp` sees them before the container ever ran.

use std::process::{Command, Stdio};
use std::sync::Arc;

use berth_engine::archive::ArchivePlan;
use berth_engine::rootfs::{self, ContainerLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Status;

use crate::containers::Containers;

/// The end of a helper: its exit code and what it said on stderr.
struct HelperExit {
    code: i32,
    stderr: String,
}

impl HelperExit {
    fn into_status(self, path: &str, container: &str) -> Result<(), Status> {
        match self.code {
            0 => Ok(()),
            2 => Err(Status::not_found(format!("Could not find the file {path} in container {container}"))),
            _ => Err(Status::invalid_argument(self.stderr.trim().to_string())),
        }
    }
}

impl Containers {
    /// Runs the archive helper for `op` on the container's `path`; `input`
    /// feeds its stdin, `output` receives its stdout in chunks.
    pub async fn archive(
        self: &Arc<Self>,
        id: &str,
        op: &str,
        path: &str,
        input: Option<mpsc::Receiver<Vec<u8>>>,
        output: Option<mpsc::Sender<Result<Vec<u8>, Status>>>,
    ) -> Result<(), Status> {
        let entry = self.lookup(id).await?;
        let _op = entry.op.lock().await;
        let record = entry.snapshot();
        let layer = ContainerLayer::under(&entry.dir);
        let running = record.state.status.is_running() && op != "export";
        let mounted_here = if running {
            false
        } else {
            let (layers, layer2) = (record.layers.clone(), layer.clone());
            tokio::task::spawn_blocking(move || {
                let _ = rootfs::unmount_overlay(&layer2);
                rootfs::mount_overlay(&layers, &layer2)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
            true
        };
        // `docker export` is of the root filesystem alone, as Docker's is.
        let mounts = if running || op == "export" {
            Vec::new()
        } else {
            let volumes = crate::containers::volume_binds(&record, &self.volumes_root).map_err(Status::internal)?;
            record.host_binds().into_iter().chain(volumes).collect()
        };
        let plan = ArchivePlan {
            pid: running.then_some(record.state.pid),
            rootfs: (!running).then(|| layer.merged.clone()),
            path: if path.is_empty() { "/".into() } else { path.to_string() },
            mounts,
        };
        let mut result = self.run_archive_helper(op, &plan, input, output).await;
        if op == "put" && result.as_ref().is_ok_and(|exit| exit.code == 0) {
            // A 200 for `docker cp` into a container means the files are on disk.
            let dir = entry.dir.clone();
            let synced = tokio::task::spawn_blocking(move || berth_engine::durable::sync_filesystem(&dir))
                .await
                .map_err(std::io::Error::other)
                .and_then(|synced| synced);
            if let Err(err) = synced {
                result = Err(Status::internal(format!("syncing what was copied in: {err}")));
            }
        }
        if mounted_here && !entry.state().status.is_running() {
            let _ = tokio::task::spawn_blocking(move || rootfs::unmount_overlay(&layer)).await;
        }
        result?.into_status(path, id)
    }

    async fn run_archive_helper(
        &self,
        op: &str,
        plan: &ArchivePlan,
        input: Option<mpsc::Receiver<Vec<u8>>>,
        output: Option<mpsc::Sender<Result<Vec<u8>, Status>>>,
    ) -> Result<HelperExit, Status> {
        let plan_json = serde_json::to_string(plan).map_err(|e| Status::internal(e.to_string()))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args(["archive", op, &plan_json])
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(if output.is_some() { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped());
        let (mut child, exited) =
            self.reaper.spawn(&mut cmd).map_err(|e| Status::internal(format!("starting the archive helper: {e}")))?;
        let stdin = child.stdin.take().map(tokio::process::ChildStdin::from_std).transpose();
        let stdout = child.stdout.take().map(tokio::process::ChildStdout::from_std).transpose();
        let stderr = child.stderr.take().map(tokio::process::ChildStderr::from_std).transpose();
        let (stdin, stdout, stderr) = match (stdin, stdout, stderr) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return Err(Status::internal("wiring the archive helper's stdio")),
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
                            if output.send(Ok(buf[..n].to_vec())).await.is_err() {
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
        let exit = exited.await.map_err(|_| Status::internal("the archive helper vanished"))?;
        Ok(HelperExit { code: exit.code, stderr })
    }
}
