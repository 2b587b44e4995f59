//! A local agent (`berth-agent --unix`) in a temporary directory, for
//! tests that drive it over gRPC as the host does.

#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_agent_proto::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

pub struct LocalAgent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub client: AgentClient<Channel>,
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_containers_under(self.dir.path());
    }
}

impl LocalAgent {
    /// Kills the agent with SIGKILL (containers and their shims live on)
    /// and starts a new one on the same data directory.
    pub async fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, client) = spawn_on(self.dir.path()).await;
        self.child = child;
        self.client = client;
    }
}

/// Shims (and so their containers) that a test left running, and the
/// overlays they mounted: nothing may outlive the test.
pub fn kill_containers_under(dir: &std::path::Path) {
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"shim"[..]) && args.get(2).is_some_and(|a| a.starts_with(&needle)) {
            // Its children first: the container's PID 1 takes its namespace down.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    for line in mounts.lines() {
        if let Some(target) = line.split_whitespace().nth(1).filter(|t| t.starts_with(&prefix)) {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub async fn start_agent() -> LocalAgent {
    let dir = tempfile::tempdir().unwrap();
    let (child, client) = spawn_on(dir.path()).await;
    LocalAgent { child, dir, client }
}

async fn spawn_on(dir: &std::path::Path) -> (Child, AgentClient<Channel>) {
    let socket = dir.join("agent.sock");
    let _ = std::fs::remove_file(&socket);
    let key = berth_agent_proto::AgentKey::from_bytes([42; 32]);
    let child = Command::new(env!("CARGO_BIN_EXE_berth-agent"))
        .env(berth_agent_proto::agent_key::AGENT_KEY_ENV, key.to_hex())
        .arg("--unix")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "agent did not create its socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = socket.clone();
    let channel = Endpoint::from_static("http://local-agent")
        .connect_with_connector(tower::service_fn(move |_| {
            let (path, key) = (path.clone(), key.clone());
            async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = tokio::net::UnixStream::connect(path).await?;
                stream.write_all(key.as_bytes()).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    (child, AgentClient::new(channel))
}
