//! The Hyper-V backend through the Host Compute Service (HCS): Berth's own
//! kernel and initramfs in a VM that `computecore.dll` creates from a JSON
//! document, the agent reached over Hyper-V sockets by the VM's RuntimeId.
//!
//! As with the VZ backend, what the VM is made of is plain data tested on
//! every host (doc.rs: the document, the kernel command line, the Plan 9
//! requests, HCS's and HCN's answers; errors.rs: HRESULTs as advice); only
//! computecore.rs calls Windows. Not wired into `host_backend` yet: the
//! daemon still lacks the VHDX data disk, the HCN NAT endpoint and the COM
//! pipe servers this document refers to (see docs/WINDOWS.md).

pub mod doc;
pub mod errors;

#[cfg(windows)]
pub mod computecore;
