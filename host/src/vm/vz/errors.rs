//! What the user is told when Virtualization.framework refuses: its errors
//! arrive as (domain, code, description) and are turned into messages that
//! say what to do. Plain data, so the wording is tested on every host.

/// The oldest macOS the backend supports: shared directories and `stop`
/// arrived in 12, virtio console ports and Rosetta for Linux in 13.
pub const MIN_MACOS_MAJOR: u64 = 13;

/// VZErrorDomain's codes the messages distinguish (VZErrorCode).
const INVALID_CONFIGURATION: i64 = 2;
const INVALID_DISK_IMAGE: i64 = 5;
const LIMIT_EXCEEDED: i64 = 6;
const OUT_OF_DISK_SPACE: i64 = 8;
const NOT_SUPPORTED: i64 = 10;

/// A framework error as the helper saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameworkError {
    pub domain: String,
    pub code: i64,
    pub description: String,
}

/// Which step failed, for the message's first words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Validate,
    Start,
    Stop,
    Rosetta,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Validate => "the VM configuration is invalid",
            Step::Start => "the VM failed to start",
            Step::Stop => "the VM failed to stop",
            Step::Rosetta => "Rosetta could not be attached",
        }
    }
}

pub const SIGN_HINT: &str = "berth must be signed with the com.apple.security.virtualization entitlement: \
     run `packaging/macos/sign.sh $(command -v berth)` (Homebrew's formula does this on install)";

/// The message for `err` during `step`.
pub fn describe(step: Step, err: &FrameworkError) -> String {
    let base = format!("{}: {} ({} {})", step.doing(), err.description, err.domain, err.code);
    let hint = if err.description.to_ascii_lowercase().contains("entitlement") {
        Some(SIGN_HINT.to_string())
    } else if err.domain != "VZErrorDomain" {
        None
    } else {
        match err.code {
            INVALID_CONFIGURATION => {
                Some("a Berth bug or a damaged install: `berth logs` shows the plan's paths".into())
            }
            INVALID_DISK_IMAGE => {
                Some("the data disk is damaged or not a raw image; move it aside to start with an empty one".into())
            }
            LIMIT_EXCEEDED => Some("too many VMs run on this Mac (macOS allows two of some kinds); stop one".into()),
            OUT_OF_DISK_SPACE => Some("the disk holding Berth's home is full".into()),
            NOT_SUPPORTED => {
                Some(format!("this needs macOS {MIN_MACOS_MAJOR} or later on a Mac that supports virtualization"))
            }
            _ => None,
        }
    };
    match hint {
        Some(hint) => format!("{base}; {hint}"),
        None => base,
    }
}

/// Refuses what the framework cannot run before anything is built.
pub fn check_host(macos_major: u64, virtualization_supported: bool) -> Result<(), String> {
    if macos_major < MIN_MACOS_MAJOR {
        return Err(format!(
            "Berth's VM needs macOS {MIN_MACOS_MAJOR} (Ventura) or later; this Mac runs macOS {macos_major}"
        ));
    }
    if !virtualization_supported {
        return Err("this Mac does not support virtualization (inside a VM without nested virtualization?)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vz(code: i64, description: &str) -> FrameworkError {
        FrameworkError { domain: "VZErrorDomain".into(), code, description: description.into() }
    }

    #[test]
    fn a_missing_entitlement_says_how_to_sign() {
        let err = vz(2, "Invalid virtual machine configuration. The process doesn't have the \"com.apple.security.virtualization\" entitlement.");
        let msg = describe(Step::Validate, &err);
        assert!(msg.starts_with("the VM configuration is invalid: Invalid virtual machine configuration."), "{msg}");
        assert!(msg.contains("packaging/macos/sign.sh"), "{msg}");
        assert!(msg.contains("(VZErrorDomain 2)"), "{msg}");
    }

    #[test]
    fn codes_get_their_hints_and_others_pass_through() {
        assert!(describe(Step::Start, &vz(5, "bad disk")).contains("move it aside"));
        assert!(describe(Step::Start, &vz(6, "limit")).contains("too many VMs"));
        assert!(describe(Step::Start, &vz(8, "full")).contains("is full"));
        assert!(describe(Step::Validate, &vz(10, "nope")).contains("macOS 13 or later"));
        assert!(describe(Step::Stop, &vz(3, "state")).starts_with("the VM failed to stop: state (VZErrorDomain 3)"));
        let other = FrameworkError { domain: "NSPOSIXErrorDomain".into(), code: 2, description: "No such file".into() };
        assert_eq!(
            describe(Step::Rosetta, &other),
            "Rosetta could not be attached: No such file (NSPOSIXErrorDomain 2)"
        );
    }

    #[test]
    fn old_macos_and_hosts_without_virtualization_are_refused() {
        assert!(check_host(13, true).is_ok());
        assert!(check_host(15, true).is_ok());
        assert!(check_host(12, true).unwrap_err().contains("macOS 13 (Ventura) or later; this Mac runs macOS 12"));
        assert!(check_host(14, false).unwrap_err().contains("does not support virtualization"));
    }
}
