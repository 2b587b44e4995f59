//! HCS failures as the user reads them: the HRESULTs a Berth start meets
//! on a machine that is not set up say what to do, the rest name the call,
//! the code and HCS's own message. Plain code, tested on every host.

use std::fmt;

/// The HRESULTs with advice (winerror.h; windows-sys names them HCS_E_*).
const HCS_E_HYPERV_NOT_INSTALLED: u32 = 0x8037_0102;
const HCS_E_SERVICE_NOT_AVAILABLE: u32 = 0x8037_0114;
const HCS_E_ACCESS_DENIED: u32 = 0x8037_011B;
const E_ACCESSDENIED: u32 = 0x8007_0005;
const HCS_E_SYSTEM_ALREADY_EXISTS: u32 = 0x8037_010F;
const HCS_E_INVALID_JSON: u32 = 0x8037_010D;
const HCS_E_OPERATION_TIMEOUT: u32 = 0x8037_0118;
/// HRESULT_FROM_WIN32(ERROR_TIMEOUT).
const WAIT_TIMEOUT: u32 = 0x8007_05B4;
/// HRESULT_FROM_WIN32(ERROR_MOD_NOT_FOUND): computecore.dll is not there.
const HCS_DLL_MISSING: u32 = 0x8007_007E;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcsError {
    pub call: &'static str,
    pub hresult: u32,
    /// HCS's error document (JSON with `Error` and `ErrorMessage`), if any.
    pub document: String,
}

impl HcsError {
    pub fn call(call: &'static str, hresult: i32) -> HcsError {
        HcsError { call, hresult: hresult as u32, document: String::new() }
    }

    pub fn with_document(call: &'static str, hresult: i32, document: String) -> HcsError {
        HcsError { call, hresult: hresult as u32, document }
    }

    /// A wait that ran out (HcsWaitForComputeSystemExit's and
    /// HcsWaitForOperationResult's answer when the timeout passed).
    pub fn is_timeout(&self) -> bool {
        matches!(self.hresult, HCS_E_OPERATION_TIMEOUT | WAIT_TIMEOUT)
    }

    fn advice(&self) -> Option<&'static str> {
        Some(match self.hresult {
            HCS_E_HYPERV_NOT_INSTALLED => {
                "Hyper-V is not available: enable \"Virtual Machine Platform\" (and \"Hyper-V\" on Pro/Enterprise) \
                 in Windows Features, turn on virtualization in the firmware, and restart; or use the WSL 2 \
                 backend (Berth's default on Windows)"
            }
            HCS_DLL_MISSING => {
                "this Windows has no Host Compute Service (computecore.dll): it needs Windows 10 1809 or later \
                 with \"Virtual Machine Platform\" or \"Hyper-V\" enabled in Windows Features; or use the WSL 2 \
                 backend (Berth's default on Windows)"
            }
            HCS_E_SERVICE_NOT_AVAILABLE => {
                "the Host Compute Service (vmcompute) is not running: start it, or restart Windows"
            }
            HCS_E_ACCESS_DENIED | E_ACCESSDENIED => {
                "creating a VM through HCS needs administrator rights: run `berth start` from an elevated \
                 terminal, or use the WSL 2 backend (Berth's default on Windows), which needs none"
            }
            HCS_E_SYSTEM_ALREADY_EXISTS => {
                "a Berth VM of this home is still registered with HCS: `berth stop`, then start again"
            }
            HCS_E_INVALID_JSON => "HCS refused Berth's VM document (a Windows build older than 1809?)",
            HCS_E_OPERATION_TIMEOUT => "HCS did not answer in time",
            _ => return None,
        })
    }

    /// HCS's own message from its error document.
    fn message(&self) -> Option<String> {
        let document: serde_json::Value = serde_json::from_str(&self.document).ok()?;
        document.get("ErrorMessage").and_then(|m| m.as_str()).filter(|m| !m.is_empty()).map(str::to_string)
    }
}

impl fmt::Display for HcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed (HRESULT 0x{:08X})", self.call, self.hresult)?;
        if let Some(message) = self.message() {
            write!(f, ": {message}")?;
        }
        if let Some(advice) = self.advice() {
            write!(f, "; {advice}")?;
        }
        Ok(())
    }
}

impl std::error::Error for HcsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_failures_say_what_to_do() {
        let missing = HcsError::call("HcsCreateComputeSystem", 0x8037_0102_u32 as i32);
        let text = missing.to_string();
        assert!(
            text.starts_with("HcsCreateComputeSystem failed (HRESULT 0x80370102); Hyper-V is not available"),
            "{text}"
        );
        assert!(text.contains("Virtual Machine Platform"), "{text}");
        let denied = HcsError::call("HcsCreateComputeSystem", 0x8007_0005_u32 as i32).to_string();
        assert!(denied.contains("administrator rights") && denied.contains("WSL 2 backend"), "{denied}");
        // What computecore.rs reports when the DLL is not installed.
        let no_dll = HcsError::call("loading computecore.dll", 0x8007_007E_u32 as i32).to_string();
        assert!(no_dll.contains("no Host Compute Service") && no_dll.contains("Virtual Machine Platform"), "{no_dll}");
    }

    #[test]
    fn waits_that_run_out_are_told_apart() {
        assert!(HcsError::call("HcsWaitForComputeSystemExit", 0x8037_0118_u32 as i32).is_timeout());
        assert!(HcsError::call("HcsWaitForComputeSystemExit", 0x8007_05B4_u32 as i32).is_timeout());
        assert!(!HcsError::call("HcsWaitForComputeSystemExit", 0x8007_0005_u32 as i32).is_timeout());
    }

    #[test]
    fn hcs_messages_are_passed_on() {
        let document = r#"{"Error":-2147024809,"ErrorMessage":"The parameter is incorrect.","ErrorEvents":[]}"#;
        let error = HcsError::with_document("HcsStartComputeSystem", 0x8007_0057_u32 as i32, document.into());
        assert_eq!(error.to_string(), "HcsStartComputeSystem failed (HRESULT 0x80070057): The parameter is incorrect.");
        let bare = HcsError::with_document("HcsStartComputeSystem", 0x8007_0057_u32 as i32, "not json".into());
        assert_eq!(bare.to_string(), "HcsStartComputeSystem failed (HRESULT 0x80070057)");
    }
}
