//! Network namespaces for the DNS tests (they run as root).

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use super::embedded::in_netns;

/// A network namespace of this host (made by a `unshare -n` child),
/// with its loopback up: what a container's namespace is.
pub struct TestNetns {
    pub holder: std::process::Child,
    pub file: Arc<File>,
}

impl TestNetns {
    pub async fn new() -> TestNetns {
        assert!(nix::unistd::geteuid().is_root(), "this test makes network namespaces and nft rules: run it as root");
        let mut holder = std::process::Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let path = format!("/proc/{}/ns/net", holder.id());
        // unshare has made the namespace once the link differs from ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&path).map(|l| l == own).unwrap_or(true) {
            assert!(std::time::Instant::now() < deadline, "unshare -n did not start");
            if let Ok(Some(status)) = holder.try_wait() {
                panic!("unshare -n failed: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let file = Arc::new(File::open(&path).unwrap());
        in_netns(&file, || crate::netif::set_up("lo")).await.unwrap();
        TestNetns { holder, file }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl TestNetns {
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }
}
