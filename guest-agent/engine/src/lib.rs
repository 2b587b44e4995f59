//! The container engine that runs inside berth-agent.
//!
//! Built up piece by piece; today: unpacking image layers into snapshot
//! directories (`layer`), the image store with `docker load` import
//! (`store`; references are normalised as the contract crate says), the per-container OCI runtime spec with
//! Docker's default isolation (`spec`), and the container's overlay root
//! filesystem and user resolution (`rootfs`).

pub mod archive;
pub mod build;
pub mod bundle;
pub mod cgroup;
pub mod container;
pub mod container_dir;
pub mod devices;
pub mod dns;
pub mod durable;
pub mod health;
pub mod image_config;
pub mod layer;
pub mod limits;
pub mod logfile;
pub mod net;
pub mod netif;
pub mod registry;
pub use berth_agent_proto::{docker_json, panics, reference};
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
pub mod service_addr;
pub mod shim;
pub mod spec;
pub mod store;
pub mod tarsplit;
pub mod volume;

/// Builders for test archives, shared by this crate's tests and by the
/// agent's and the end-to-end tests (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use sha2::{Digest, Sha256};

    /// A tar stream of regular files, owned by root, mode 0644.
    pub fn tar<N: AsRef<str>, D: AsRef<[u8]>>(files: &[(N, D)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let data = data.as_ref();
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_600_000_000);
            builder.append_data(&mut header, name.as_ref(), data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// `sha256:<hex>` of some bytes.
    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// An image config whose diff IDs are those of `layers`.
    pub fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05.678901Z",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "test"}]
        }))
        .unwrap()
    }

    /// A docker-archive as `docker save` writes it, and the image's ID.
    pub fn docker_archive(layers: &[Vec<u8>], tags: &[&str]) -> (Vec<u8>, String) {
        let config = config_for(&layers.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let id = digest(&config);
        let config_name = format!("{}.json", &id[7..]);
        let layer_names: Vec<String> = (0..layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": tags, "Layers": layer_names
        }]))
        .unwrap();
        let mut members = vec![(config_name, config)];
        members.extend(layer_names.into_iter().zip(layers.iter().cloned()));
        members.push(("manifest.json".into(), manifest));
        (tar(&members), id)
    }

    /// The applets the busybox test image links (as a distribution's
    /// busybox package would).
    pub const BUSYBOX_APPLETS: &[&str] = &[
        "sh", "echo", "cat", "sleep", "ls", "id", "hostname", "true", "false", "env", "pwd", "ps", "wc", "head", "seq",
        "tty", "stat", "mount", "grep", "kill", "touch", "mkdir", "rm", "unshare", "stty", "printf", "yes", "dd",
        "top", "tail", "sync", "test", "trap", "whoami", "readlink",
    ];

    /// A one-layer image of the host's static busybox (Debian's
    /// busybox-static), with users root, nobody and app (1000).
    pub fn busybox_layer() -> Vec<u8> {
        let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (Debian package busybox-static)");
        let mut builder = tar::Builder::new(Vec::new());
        let dir = |name: &str, builder: &mut tar::Builder<Vec<u8>>, mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            header.set_mtime(1_600_000_000);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, name, std::io::empty()).unwrap();
        };
        for (name, mode) in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home/app", 0o755)] {
            dir(name, &mut builder, mode);
        }
        let mut file = |name: &str, data: &[u8], mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_mtime(1_600_000_000);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_data(&mut header, name, data).unwrap();
        };
        file("bin/busybox", &busybox, 0o755);
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n", 0o644);
        file("etc/group", b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\n", 0o644);
        for applet in BUSYBOX_APPLETS {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            header.set_mtime(1_600_000_000);
            header.set_uid(0);
            header.set_gid(0);
            builder.append_link(&mut header, format!("bin/{applet}"), "busybox").unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// `docker save` of the busybox test image.
    pub fn busybox_archive(tags: &[&str]) -> (Vec<u8>, String) {
        docker_archive(&[busybox_layer()], tags)
    }
}
