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
