//! The Hyper-V backend through the Host Compute Service (HCS): Berth's own
//! kernel and initramfs in a VM that `computecore.dll` creates from a JSON
//! document, the agent reached over Hyper-V sockets by the VM's RuntimeId.
//!
//! As with the VZ backend, what the VM is made of is plain data tested on
//! every host (doc.rs: the document, the kernel command line, the Plan 9
//! shares, HCS's and HCN's answers; errors.rs: HRESULTs as advice; vhdx.rs:
//! the data disk's steps; hcn.rs: the NAT network's settings); only the
//! calls are Windows' (computecore.rs, hcn.rs, vhdx.rs, com_pipes.rs: the
//! COM ports' pipe servers). Not wired into `host_backend` yet.

pub mod doc;
pub mod errors;
pub mod hcn;
pub mod vhdx;

#[cfg(windows)]
pub mod com_pipes;
#[cfg(windows)]
pub mod computecore;

/// Why an HCS start is refused before any call: HCS lets only
/// administrators create VMs, and the daemon, not a service, makes the
/// calls (an elevated daemon, as the README's Windows section says).
pub const NOT_ELEVATED: &str = "the Hyper-V backend creates its VM through the Host Compute Service, which only \
     administrators may use: run `berth start` from an elevated terminal (\"Run as administrator\"; the daemon it \
     starts keeps that token), or use the WSL 2 backend, which needs no administrator rights";

/// The elevation check, with its answer as the user reads it.
pub fn require_elevation(elevated: std::io::Result<bool>) -> anyhow::Result<()> {
    match elevated {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!(NOT_ELEVATED),
        Err(err) => anyhow::bail!("could not tell whether Berth runs as administrator ({err}); {NOT_ELEVATED}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_daemon_that_is_not_elevated_is_told_what_to_do() {
        assert!(super::require_elevation(Ok(true)).is_ok());
        let refused = super::require_elevation(Ok(false)).unwrap_err().to_string();
        assert!(refused.contains("Run as administrator") && refused.contains("WSL 2 backend"), "{refused}");
        let unknown = super::require_elevation(Err(std::io::Error::other("no token"))).unwrap_err().to_string();
        assert!(unknown.starts_with("could not tell whether Berth runs as administrator (no token); "), "{unknown}");
    }
}
