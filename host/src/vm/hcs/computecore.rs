//! computecore.dll, the Host Compute Service's API, as far as Berth drives
//! it: every call takes an operation, and its result (a JSON document or an
//! HRESULT with one) is collected with HcsWaitForOperationResult. The calls
//! block; the backend runs them on blocking threads.

use std::time::Duration;

use windows_sys::core::{HRESULT, PWSTR};
use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::System::HostComputeSystem::{
    HcsCloseComputeSystem, HcsCloseOperation, HcsCreateComputeSystem, HcsCreateOperation, HcsEnumerateComputeSystems,
    HcsGetComputeSystemProperties, HcsGrantVmAccess, HcsModifyComputeSystem, HcsOpenComputeSystem,
    HcsShutDownComputeSystem, HcsStartComputeSystem, HcsTerminateComputeSystem, HcsWaitForComputeSystemExit,
    HcsWaitForOperationResult, HCS_OPERATION, HCS_SYSTEM,
};

use super::errors::HcsError;

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

/// Takes a string HCS allocated (LocalAlloc) and frees it.
///
/// # Safety
/// `text` is null or a NUL-terminated UTF-16 string from computecore that
/// nothing else frees.
unsafe fn take_string(text: PWSTR) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract: NUL-terminated, ours to free.
    unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let string = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        string
    }
}

/// One HCS operation: made, used by one call, waited for, closed.
struct Operation(HCS_OPERATION);

impl Operation {
    fn new() -> Result<Operation, HcsError> {
        // SAFETY: no context and no callback: the operation is waited for.
        let operation = unsafe { HcsCreateOperation(std::ptr::null(), None) };
        if operation.is_null() {
            return Err(HcsError::call(
                "HcsCreateOperation",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(Operation(operation))
    }

    /// Starts a call with this operation (`start` returns the call's
    /// HRESULT), then waits for its result document.
    fn run(
        self,
        call: &'static str,
        timeout: Duration,
        start: impl FnOnce(HCS_OPERATION) -> HRESULT,
    ) -> Result<String, HcsError> {
        let started = start(self.0);
        if started < 0 {
            return Err(HcsError::call(call, started));
        }
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: the operation is open; the call writes one string pointer.
        let done =
            unsafe { HcsWaitForOperationResult(self.0, timeout.as_millis().min(u32::MAX as u128) as u32, &mut result) };
        // SAFETY: the result document is HCS's allocation, freed once here.
        let document = unsafe { take_string(result) };
        if done < 0 {
            return Err(HcsError::with_document(call, done, document));
        }
        Ok(document)
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        // SAFETY: the operation was created by HcsCreateOperation, closed once.
        unsafe { HcsCloseOperation(self.0) };
    }
}

/// How long HCS may take for a create, start or stop.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// An open compute system; closing the last handle ends a VM created with
/// ShouldTerminateOnLastHandleClosed.
pub struct ComputeSystem(HCS_SYSTEM);

// SAFETY: an HCS_SYSTEM handle may be used from any thread (HCS documents
// no thread affinity; hcsshim calls it from goroutines on any thread).
unsafe impl Send for ComputeSystem {}
// SAFETY: as above; every call takes the handle by value.
unsafe impl Sync for ComputeSystem {}

impl ComputeSystem {
    /// Creates the compute system `id` from `document` (doc.rs, as JSON).
    pub fn create(id: &str, document: &str) -> Result<ComputeSystem, HcsError> {
        let (id, document) = (wide(id), wide(document));
        let mut system: HCS_SYSTEM = std::ptr::null_mut();
        Operation::new()?.run("HcsCreateComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: both strings are NUL-terminated and outlive the call; no
            // security descriptor (the document's own apply); one handle written.
            unsafe { HcsCreateComputeSystem(id.as_ptr(), document.as_ptr(), operation, std::ptr::null(), &mut system) }
        })?;
        Ok(ComputeSystem(system))
    }

    /// Opens an existing compute system (a VM a crashed daemon left).
    pub fn open(id: &str) -> Result<ComputeSystem, HcsError> {
        use windows_sys::Win32::Foundation::GENERIC_ALL;
        let id = wide(id);
        let mut system: HCS_SYSTEM = std::ptr::null_mut();
        // SAFETY: `id` is NUL-terminated; one handle written.
        let opened = unsafe { HcsOpenComputeSystem(id.as_ptr(), GENERIC_ALL, &mut system) };
        if opened < 0 {
            return Err(HcsError::call("HcsOpenComputeSystem", opened));
        }
        Ok(ComputeSystem(system))
    }

    pub fn start(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsStartComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: an open system and operation; no options.
            unsafe { HcsStartComputeSystem(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    /// Asks the guest to shut down (the Hyper-V shutdown integration
    /// service, hv_utils in the guest).
    pub fn shut_down(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsShutDownComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start().
            unsafe { HcsShutDownComputeSystem(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    pub fn terminate(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsTerminateComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start().
            unsafe { HcsTerminateComputeSystem(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    /// The properties document (doc::Properties reads the RuntimeId).
    pub fn properties(&self) -> Result<String, HcsError> {
        Operation::new()?.run("HcsGetComputeSystemProperties", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start(); a null query asks for the basic properties.
            unsafe { HcsGetComputeSystemProperties(self.0, operation, std::ptr::null()) }
        })
    }

    /// A modify request (doc::add_plan9_share), as JSON.
    pub fn modify(&self, request: &str) -> Result<(), HcsError> {
        let request = wide(request);
        Operation::new()?.run("HcsModifyComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start(); the request is NUL-terminated and outlives the call.
            unsafe { HcsModifyComputeSystem(self.0, operation, request.as_ptr(), std::ptr::null_mut()) }
        })?;
        Ok(())
    }

    /// Blocks until the system exits (or `timeout`); the exit document.
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<String, HcsError> {
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: an open system; one string pointer written.
        let done = unsafe {
            HcsWaitForComputeSystemExit(self.0, timeout.as_millis().min(u32::MAX as u128) as u32, &mut result)
        };
        // SAFETY: HCS's allocation, freed once.
        let document = unsafe { take_string(result) };
        if done < 0 {
            return Err(HcsError::with_document("HcsWaitForComputeSystemExit", done, document));
        }
        Ok(document)
    }
}

impl Drop for ComputeSystem {
    fn drop(&mut self) {
        // SAFETY: the handle came from create/open and is closed once.
        unsafe { HcsCloseComputeSystem(self.0) };
    }
}

/// Lets the VM's worker process open `path` (kernel, initramfs, VHDX): it
/// runs as the VM's own account, not as the user.
pub fn grant_vm_access(vm_id: &str, path: &str) -> Result<(), HcsError> {
    let (vm_id, path) = (wide(vm_id), wide(path));
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let granted = unsafe { HcsGrantVmAccess(vm_id.as_ptr(), path.as_ptr()) };
    if granted < 0 {
        return Err(HcsError::call("HcsGrantVmAccess", granted));
    }
    Ok(())
}

/// The compute systems matching `query` (JSON, e.g. `{"Owners":["berth"]}`),
/// as HCS's JSON array. Needs administrator rights.
pub fn enumerate(query: &str) -> Result<String, HcsError> {
    let query = wide(query);
    Operation::new()?.run("HcsEnumerateComputeSystems", CALL_TIMEOUT, |operation| {
        // SAFETY: the query is NUL-terminated and outlives the call.
        unsafe { HcsEnumerateComputeSystems(query.as_ptr(), operation) }
    })
}
