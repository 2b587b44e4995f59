//! System DLLs that only some Windows installations have, loaded when
//! first needed instead of imported: `computecore.dll` (HCS) and
//! `computenetwork.dll` (HCN) come with the Virtual Machine Platform or
//! Hyper-V. windows-sys imports what it declares (raw-dylib), and one
//! missing import keeps the loader from starting berth.exe at all, for
//! every command and the WSL backend too; loaded here, the HCS backend
//! alone fails, and says why.

use std::ffi::CStr;
use std::io;

use windows_sys::Win32::Foundation::HMODULE;
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryExW, LOAD_LIBRARY_SEARCH_SYSTEM32};

/// A DLL from System32, loaded for the rest of the process's life (its
/// functions are kept in statics; it is never unloaded).
pub struct SystemDll {
    module: HMODULE,
}

// SAFETY: a module handle is a process-wide value, usable from any thread.
unsafe impl Send for SystemDll {}
// SAFETY: as above; GetProcAddress may be called concurrently.
unsafe impl Sync for SystemDll {}

impl SystemDll {
    /// Loads `name` from System32 only (never from the current directory
    /// or PATH, where anyone could plant a DLL of that name).
    pub fn load(name: &str) -> io::Result<SystemDll> {
        let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
        // SAFETY: `wide` is NUL-terminated and outlives the call; no file handle.
        let module = unsafe { LoadLibraryExW(wide.as_ptr(), std::ptr::null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32) };
        if module.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(SystemDll { module })
    }

    /// The export `symbol` as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be an `unsafe extern "system" fn` type with the export's
    /// exact signature.
    pub unsafe fn function<F: Copy>(&self, symbol: &CStr) -> io::Result<F> {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>(), "F must be a function pointer") };
        // SAFETY: the module is loaded and never freed; the name is NUL-terminated.
        let address = unsafe { GetProcAddress(self.module, symbol.as_ptr().cast()) };
        match address {
            // SAFETY: the caller's contract: F is this export's function type,
            // and both are pointer-sized (checked above).
            Some(address) => Ok(unsafe { std::mem::transmute_copy::<_, F>(&address) }),
            None => Err(io::Error::last_os_error()),
        }
    }
}
