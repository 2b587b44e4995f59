//! A real registry (Debian's docker-registry) on a free local port, for
//! pull tests; shared by the test binaries of the workspace (each uses
//! part of it).
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// A real registry (Debian's docker-registry) on a free loopback port,
/// filled with skopeo. Killed on drop.
pub struct LocalRegistry {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package, installed by packaging/setup.sh)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        LocalRegistry { child, port, dir }
    }

    /// A registry serving `library/tiny:1`, the test busybox image.
    pub fn with_busybox() -> LocalRegistry {
        let registry = LocalRegistry::start();
        let archive = registry.dir.path().join("busybox.tar");
        let made = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/images/busybox-archive.py"))
            .arg(&archive)
            .status()
            .unwrap();
        assert!(made.success());
        registry.push(&archive, "library/tiny:1");
        registry
    }

    /// Pushes a docker-archive (what `docker save` writes) as `name`.
    pub fn push(&self, archive: &std::path::Path, name: &str) {
        let pushed = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{}/{name}", self.port))
            .output()
            .expect("skopeo (Debian package, installed by packaging/setup.sh)");
        assert!(pushed.status.success(), "skopeo: {}", String::from_utf8_lossy(&pushed.stderr));
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
