//! `berth-agent --service`: the agent under another init (as in WSL 2),
//! here in a mount namespace whose /sys/fs/cgroup is an empty tmpfs, as an
//! init that set up no cgroup v2 leaves it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// (mount point, filesystem type) of each line of a mountinfo, in order.
fn mounts(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            Some((mount.split_whitespace().nth(4)?.to_string(), fs.split_whitespace().next()?.to_string()))
        })
        .collect()
}

#[test]
fn as_a_service_it_mounts_only_the_cgroup2_its_init_did_not_and_keeps_state_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, data) = (dir.path().join("agent.sock"), dir.path().join("state/data"));
    let key = berth_agent_proto::AgentKey::from_bytes([7; 32]);
    let mut agent = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /sys/fs/cgroup && exec \"$0\" --service --unix \"$1\" --data-dir \"$2\"")
        .arg(env!("CARGO_BIN_EXE_berth-agent"))
        .args([&socket, &data])
        .env(berth_agent_proto::agent_key::AGENT_KEY_ENV, key.to_hex())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
        assert!(Instant::now() < deadline, "the agent did not serve");
        std::thread::sleep(Duration::from_millis(10));
    }
    let theirs = mounts(&std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.id())).unwrap());
    let ours = mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let _ = agent.kill();
    let _ = agent.wait();

    // What the namespace began with, the script's tmpfs, then the agent's one mount.
    let added = &theirs[ours.len().min(theirs.len())..];
    let cgroup = ("/sys/fs/cgroup".to_string(), "tmpfs".to_string());
    let unified = ("/sys/fs/cgroup/unified".to_string(), "cgroup2".to_string());
    assert_eq!(added, [cgroup, unified], "the agent mounted more than the cgroup2 hierarchy: {theirs:#?}");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the engine's state directory");
}
