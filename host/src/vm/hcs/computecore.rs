//! computecore.dll, the Host Compute Service's API, as far as Berth drives
//! it: every call takes an operation, and its result (a JSON document or an
//! HRESULT with one) is collected with HcsWaitForOperationResult. The calls
//! block; the backend runs them on blocking threads. The DLL is loaded at
//! the first call (platform/windows_dll.rs: Windows without the Virtual
//! Machine Platform has none, and berth.exe must start there).

use std::ffi::c_void;
use std::sync::OnceLock;
use std::time::Duration;

use windows_sys::core::{HRESULT, PCWSTR, PWSTR};
use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
use windows_sys::Win32::Security::SECURITY_DESCRIPTOR;
use windows_sys::Win32::System::HostComputeSystem::{HCS_OPERATION, HCS_OPERATION_COMPLETION, HCS_SYSTEM};

use super::errors::HcsError;
use crate::platform::windows_dll::SystemDll;

/// The computecore.dll functions Berth calls, with windows-sys's
/// signatures for them (Win32::System::HostComputeSystem).
macro_rules! computecore_api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        #[allow(non_snake_case)]
        struct Api {
            $($name: unsafe extern "system" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            fn load() -> std::io::Result<Api> {
                let dll = SystemDll::load("computecore.dll")?;
                Ok(Api {
                    // SAFETY: each field's type is the export's signature as
                    // windows-sys declares it.
                    $($name: unsafe { dll.function(&std::ffi::CString::new(stringify!($name)).expect("no NUL"))? },)*
                })
            }
        }
    };
}

computecore_api! {
    HcsCreateOperation: fn(*const c_void, HCS_OPERATION_COMPLETION) -> HCS_OPERATION;
    HcsCloseOperation: fn(HCS_OPERATION);
    HcsWaitForOperationResult: fn(HCS_OPERATION, u32, *mut PWSTR) -> HRESULT;
    HcsCreateComputeSystem: fn(PCWSTR, PCWSTR, HCS_OPERATION, *const SECURITY_DESCRIPTOR, *mut HCS_SYSTEM) -> HRESULT;
    HcsOpenComputeSystem: fn(PCWSTR, u32, *mut HCS_SYSTEM) -> HRESULT;
    HcsCloseComputeSystem: fn(HCS_SYSTEM);
    HcsStartComputeSystem: fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsShutDownComputeSystem: fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsTerminateComputeSystem: fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsGetComputeSystemProperties: fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR) -> HRESULT;
    HcsModifyComputeSystem: fn(HCS_SYSTEM, HCS_OPERATION, PCWSTR, HANDLE) -> HRESULT;
    HcsWaitForComputeSystemExit: fn(HCS_SYSTEM, u32, *mut PWSTR) -> HRESULT;
    HcsGrantVmAccess: fn(PCWSTR, PCWSTR) -> HRESULT;
    HcsEnumerateComputeSystems: fn(PCWSTR, HCS_OPERATION) -> HRESULT;
}

/// The API, loaded once; a load failure is kept and returned to every
/// caller (as the HRESULT of the Win32 error, which errors.rs explains).
fn api() -> Result<&'static Api, HcsError> {
    static API: OnceLock<Result<Api, i32>> = OnceLock::new();
    match API.get_or_init(|| Api::load().map_err(|e| e.raw_os_error().unwrap_or(0))) {
        Ok(api) => Ok(api),
        Err(code) => Err(HcsError::call("loading computecore.dll", hresult_from_win32(*code))),
    }
}

/// HRESULT_FROM_WIN32 (winerror.h).
fn hresult_from_win32(code: i32) -> i32 {
    if code <= 0 {
        code
    } else {
        ((code as u32 & 0xFFFF) | 0x8007_0000) as i32
    }
}

pub(super) fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

/// Copies a string a Windows API allocated, then hands the pointer to
/// `free`, that API's own allocator (HCS and HCN use different ones).
///
/// # Safety
/// `text` is null or a NUL-terminated UTF-16 string that nothing else frees.
pub(super) unsafe fn take_wide(text: PWSTR, free: impl FnOnce(PWSTR)) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract: NUL-terminated, so every unit read is in it.
    let string = unsafe {
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
    };
    free(text);
    string
}

/// Takes a string HCS allocated (LocalAlloc) and frees it.
///
/// # Safety
/// `text` is null or a NUL-terminated UTF-16 string from computecore that
/// nothing else frees.
unsafe fn take_string(text: PWSTR) -> String {
    // SAFETY: the caller's contract; computecore allocates with LocalAlloc.
    unsafe {
        take_wide(text, |p| {
            LocalFree(p.cast());
        })
    }
}

/// One HCS operation: made, used by one call, waited for, closed.
struct Operation(HCS_OPERATION, &'static Api);

impl Operation {
    fn new() -> Result<Operation, HcsError> {
        let api = api()?;
        // SAFETY: no context and no callback: the operation is waited for.
        let operation = unsafe { (api.HcsCreateOperation)(std::ptr::null(), None) };
        if operation.is_null() {
            return Err(HcsError::call(
                "HcsCreateOperation",
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(Operation(operation, api))
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
        let done = unsafe {
            (self.1.HcsWaitForOperationResult)(self.0, timeout.as_millis().min(u32::MAX as u128) as u32, &mut result)
        };
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
        unsafe { (self.1.HcsCloseOperation)(self.0) };
    }
}

/// How long HCS may take for a create, start or stop.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// An open compute system; closing the last handle ends a VM created with
/// ShouldTerminateOnLastHandleClosed.
pub struct ComputeSystem(HCS_SYSTEM, &'static Api);

// SAFETY: an HCS_SYSTEM handle may be used from any thread (HCS documents
// no thread affinity; hcsshim calls it from goroutines on any thread).
unsafe impl Send for ComputeSystem {}
// SAFETY: as above; every call takes the handle by value.
unsafe impl Sync for ComputeSystem {}

impl ComputeSystem {
    /// Creates the compute system `id` from `document` (doc.rs, as JSON).
    pub fn create(id: &str, document: &str) -> Result<ComputeSystem, HcsError> {
        let api = api()?;
        let (id, document) = (wide(id), wide(document));
        let mut system: HCS_SYSTEM = std::ptr::null_mut();
        Operation::new()?.run("HcsCreateComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: both strings are NUL-terminated and outlive the call; no
            // security descriptor (the document's own apply); one handle written.
            unsafe {
                (api.HcsCreateComputeSystem)(id.as_ptr(), document.as_ptr(), operation, std::ptr::null(), &mut system)
            }
        })?;
        Ok(ComputeSystem(system, api))
    }

    /// Opens an existing compute system (a VM a crashed daemon left).
    pub fn open(id: &str) -> Result<ComputeSystem, HcsError> {
        use windows_sys::Win32::Foundation::GENERIC_ALL;
        let api = api()?;
        let id = wide(id);
        let mut system: HCS_SYSTEM = std::ptr::null_mut();
        // SAFETY: `id` is NUL-terminated; one handle written.
        let opened = unsafe { (api.HcsOpenComputeSystem)(id.as_ptr(), GENERIC_ALL, &mut system) };
        if opened < 0 {
            return Err(HcsError::call("HcsOpenComputeSystem", opened));
        }
        Ok(ComputeSystem(system, api))
    }

    pub fn start(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsStartComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: an open system and operation; no options.
            unsafe { (self.1.HcsStartComputeSystem)(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    /// Asks the guest to shut down (the Hyper-V shutdown integration
    /// service, hv_utils in the guest).
    pub fn shut_down(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsShutDownComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start().
            unsafe { (self.1.HcsShutDownComputeSystem)(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    pub fn terminate(&self) -> Result<(), HcsError> {
        Operation::new()?.run("HcsTerminateComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start().
            unsafe { (self.1.HcsTerminateComputeSystem)(self.0, operation, std::ptr::null()) }
        })?;
        Ok(())
    }

    /// The properties document (doc::Properties reads the RuntimeId).
    pub fn properties(&self) -> Result<String, HcsError> {
        Operation::new()?.run("HcsGetComputeSystemProperties", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start(); a null query asks for the basic properties.
            unsafe { (self.1.HcsGetComputeSystemProperties)(self.0, operation, std::ptr::null()) }
        })
    }

    /// A modify request (doc::add_plan9_share), as JSON.
    pub fn modify(&self, request: &str) -> Result<(), HcsError> {
        let request = wide(request);
        Operation::new()?.run("HcsModifyComputeSystem", CALL_TIMEOUT, |operation| {
            // SAFETY: as in start(); the request is NUL-terminated and outlives the call.
            unsafe { (self.1.HcsModifyComputeSystem)(self.0, operation, request.as_ptr(), std::ptr::null_mut()) }
        })?;
        Ok(())
    }

    /// Blocks until the system exits (or `timeout`); the exit document.
    pub fn wait_for_exit(&self, timeout: Duration) -> Result<String, HcsError> {
        let mut result: PWSTR = std::ptr::null_mut();
        // SAFETY: an open system; one string pointer written.
        let done = unsafe {
            (self.1.HcsWaitForComputeSystemExit)(self.0, timeout.as_millis().min(u32::MAX as u128) as u32, &mut result)
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
        unsafe { (self.1.HcsCloseComputeSystem)(self.0) };
    }
}

/// Lets the VM's worker process open `path` (kernel, initramfs, VHDX): it
/// runs as the VM's own account, not as the user.
pub fn grant_vm_access(vm_id: &str, path: &str) -> Result<(), HcsError> {
    let api = api()?;
    let (vm_id, path) = (wide(vm_id), wide(path));
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let granted = unsafe { (api.HcsGrantVmAccess)(vm_id.as_ptr(), path.as_ptr()) };
    if granted < 0 {
        return Err(HcsError::call("HcsGrantVmAccess", granted));
    }
    Ok(())
}

/// The compute systems matching `query` (JSON, e.g. `{"Owners":["berth"]}`),
/// as HCS's JSON array. Needs administrator rights.
pub fn enumerate(query: &str) -> Result<String, HcsError> {
    let api = api()?;
    let query = wide(query);
    Operation::new()?.run("HcsEnumerateComputeSystems", CALL_TIMEOUT, |operation| {
        // SAFETY: the query is NUL-terminated and outlives the call.
        unsafe { (api.HcsEnumerateComputeSystems)(query.as_ptr(), operation) }
    })
}
