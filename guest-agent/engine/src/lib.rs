//! The container engine that runs inside berth-agent.
//!
//! Built up piece by piece; today: unpacking image layers into snapshot
//! directories (`layer`), and the image store with `docker load` import
//! (`store`, `reference`).

pub mod layer;
pub mod reference;
pub mod store;
