//! The whole host <-> guest contract, generated from `agent.proto`.
//!
//! Both `berth` (client) and `berth-agent` (server) depend on this crate, so
//! the two can never disagree about a message shape; what they can disagree
//! about is the protocol version, which `Ping` checks at connect time.

tonic::include_proto!("berth.agent.v1");

pub mod agent_key;
pub mod boot;
pub mod build;
pub mod docker_json;
pub mod host_services;
pub mod panics;
pub mod ports;
pub mod reference;
pub mod time;

/// The protobuf runtime the generated types use (for encoding outside gRPC).
pub use prost;

/// The protocol version this build speaks (see `ProtocolVersion` in agent.proto).
pub const PROTOCOL_VERSION: u32 = ProtocolVersion::Current as u32;

/// The vsock port the agent listens on inside the VM.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The host port the agent dials to announce that it serves (see agent.proto).
pub const AGENT_READY_VSOCK_PORT: u32 = 1025;

pub use agent_key::AgentKey;

/// The most a ReadyAnnouncement may take on the wire.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;
