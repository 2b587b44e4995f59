//! The container engine that runs inside berth-agent.
//!
//! Built up piece by piece; today: unpacking image layers into snapshot
//! directories (`layer`), the step every image pull, load and container
//! rootfs depends on.

pub mod layer;
