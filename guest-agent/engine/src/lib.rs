//! The container engine that runs inside berth-agent.
//!
//! Built up piece by piece; today: unpacking image layers into snapshot
//! directories (`layer`), the image store with `docker load` import
//! (`store`, `reference`), and the per-container OCI runtime spec with
//! Docker's default isolation (`spec`).

pub mod layer;
pub mod reference;
pub mod spec;
pub mod store;
