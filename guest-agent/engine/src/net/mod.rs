//! Container networks in the VM, as dockerd makes them: IPAM from
//! dockerd's default pools, bridges and veth pairs over netlink, one
//! nftables table for NAT and filtering, and the records that let
//! networks and endpoints survive a restart.

pub mod attach;
pub mod etc;
pub mod ipam;
pub mod link;
pub mod links;
pub mod netns;
pub mod network;
pub mod nft;
pub mod store;
