//! 9P shares on QEMU: the host end of `[vm] share-transport = "9p"`.
//!
//! The guest dials the host (CID 2) on share `i`'s port `FIRST_VSOCK_PORT +
//! i`; vhost-device-vsock turns that into a connection to the unix socket
//! `<agent.vsock>_<port>`, where this listens. Each connection gets a file
//! server of its own, started with the connection as its stdin and stdout
//! and confined to that one share (plan9_sandbox.rs). It is the same wire
//! the Hyper-V backends give the guest (Plan 9 shares over hvsock), so the
//! guest's side is proven here.
//!
//! The server is Debian's diod (9P2000.L, serves one connection on given
//! descriptors with `--rfdno/--wfdno`, in Debian since 2011), rather than a
//! Rust crate: the Rust 9P servers on crates.io are examples or unmaintained
//! (rs9p's unpfs, last released 2021) or tied to their VMM (crosvm's p9),
//! and every one of them resolves paths as diod does, so the sandbox would
//! be needed all the same.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::plan9_sandbox::Sandbox;
use super::Share;

/// Share `i` is served on the host's vsock port `FIRST_VSOCK_PORT + i`
/// (past the agent's own ports, 1024-1030).
pub const FIRST_VSOCK_PORT: u32 = 1040;

/// The listeners of a VM's 9P shares; dropping it stops them and the
/// servers of their connections (which are killed with their task).
pub struct Plan9Server {
    tasks: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
    /// The empty directories the sandboxes' roots are mounted on.
    roots: Vec<PathBuf>,
}

/// What serving one share needs.
struct ShareServer {
    share: Share,
    diod: PathBuf,
    sandbox: Arc<Sandbox>,
    log: PathBuf,
}

impl Plan9Server {
    /// Listens for the guest's connections to each share's port on the
    /// hybrid vsock whose host socket is `agent_socket`.
    pub fn start(shares: &[Share], agent_socket: &Path, diod: &Path, run_dir: &Path, log: &Path) -> Result<Self> {
        let mut server = Plan9Server { tasks: Vec::new(), sockets: Vec::new(), roots: Vec::new() };
        for (i, share) in shares.iter().enumerate() {
            let port = FIRST_VSOCK_PORT + i as u32;
            let root = run_dir.join(format!("9p-root-{}", share.tag));
            let sandbox = Sandbox::prepare(&share.host_path, diod, &root)
                .with_context(|| format!("preparing the 9p server of {}", share.host_path.display()))?;
            let socket = PathBuf::from(format!("{}_{port}", agent_socket.display()));
            let listener = crate::platform::bind_private_socket(&socket)
                .with_context(|| format!("listening on {}", socket.display()))?;
            server.sockets.push(socket);
            let serving = Arc::new(ShareServer {
                share: share.clone(),
                diod: diod.to_path_buf(),
                sandbox: Arc::new(sandbox),
                log: log.to_path_buf(),
            });
            server.roots.push(root);
            server.tasks.push(tokio::spawn(async move {
                // Aborting the listener's task drops the connections' tasks,
                // and with them their servers (kill_on_drop).
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let serving = serving.clone();
                            connections.spawn(async move {
                                if let Err(err) = serving.serve(stream).await {
                                    let err = format!("{err:#}");
                                    tracing::warn!(share = %serving.share.tag, err, "9p connection failed");
                                }
                            });
                            while connections.try_join_next().is_some() {}
                        }
                        Err(err) => {
                            tracing::warn!(%err, "accepting a 9p connection failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            }));
        }
        Ok(server)
    }
}

impl ShareServer {
    /// Runs a file server for this connection until the guest hangs up.
    async fn serve(&self, stream: tokio::net::UnixStream) -> Result<()> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        let fd = std::os::fd::OwnedFd::from(stream);
        let mut cmd = Command::new(&self.diod);
        cmd.args(diod_args(&self.share.host_path));
        cmd.stdin(Stdio::from(fd.try_clone()?)).stdout(Stdio::from(fd));
        cmd.stderr(crate::private_fs::open_for_writing(&self.log, true)?).kill_on_drop(true);
        let sandbox = self.sandbox.clone();
        // SAFETY: Sandbox::enter makes only syscalls on strings prepared
        // before the fork, as a pre_exec hook must.
        unsafe { cmd.pre_exec(move || sandbox.enter()) };
        let mut child = crate::platform::spawn_owned(&mut cmd).context("starting diod")?;
        let status = child.wait().await?;
        tracing::debug!(share = %self.share.tag, %status, "9p connection closed");
        Ok(())
    }
}

/// diod serving one connection on stdin/stdout, exporting only the share.
/// No authentication (the port is the VM's only) and no user database
/// (the guest's ids are numbers); `--rfdno/--wfdno` spelt out in full, as
/// `-w` is also diod's thread-count option.
pub(super) fn diod_args(share: &Path) -> Vec<String> {
    ["--foreground", "--rfdno", "0", "--wfdno", "1", "--no-auth", "--no-userdb", "--logdest", "stderr"]
        .into_iter()
        .map(String::from)
        .chain(["--export".into(), share.display().to_string()])
        .collect()
}

/// Debian's diod: beside the assets (the helpers' place), on PATH, or
/// where the package puts it (/usr/sbin, which a user's PATH may lack).
pub fn locate_diod() -> Result<PathBuf> {
    let hint = "install Debian's diod (`packaging/setup.sh` does)";
    match crate::paths::Assets::locate()?.helper("diod", hint) {
        Ok(found) => Ok(found),
        Err(_) if Path::new("/usr/sbin/diod").is_file() => Ok("/usr/sbin/diod".into()),
        Err(err) => Err(err),
    }
}

impl Drop for Plan9Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
        for root in &self.roots {
            let _ = std::fs::remove_dir(root);
        }
    }
}

#[cfg(test)]
mod tests;
