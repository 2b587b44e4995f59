//! The container engine that runs inside berth-agent.
//!
//! Built up piece by piece; today: unpacking image layers into snapshot
//! directories (`layer`), the image store with `docker load` import
//! (`store`, `reference`), the per-container OCI runtime spec with
//! Docker's default isolation (`spec`), and the container's overlay root
//! filesystem and user resolution (`rootfs`).

pub mod layer;
pub mod reference;
pub mod rootfs;
pub mod spec;
pub mod store;

/// Helpers shared by the tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
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
}
