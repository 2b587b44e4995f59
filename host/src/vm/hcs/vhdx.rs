//! The HCS backend's data disk: a dynamically expanding VHDX beside the
//! other backends' raw image (HCS attaches virtual disks, not raw files),
//! made and grown with virtdisk.dll, which every Windows has. Like the raw
//! image (vm/disk.rs) it starts empty: the agent formats it (ext4) on
//! first boot and grows the filesystem to the disk at each boot. What to
//! do is plain data ([`plan`]); the calls are Windows'.

use std::path::{Path, PathBuf};

/// What a start does with the data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskStep {
    /// No disk yet: a new one of `size` bytes (virtual; it takes only what is written).
    Create {
        size: u64,
    },
    /// `[vm] disk-gib` was raised: the disk grows to `size` (never shrinks:
    /// the filesystem on it may fill the old size).
    Grow {
        size: u64,
    },
    Keep,
}

/// The step for a disk of virtual size `have` (None: there is none) and
/// `[vm] disk-gib = disk_gib`.
pub fn plan(have: Option<u64>, disk_gib: u64) -> DiskStep {
    let want = disk_gib << 30;
    match have {
        None => DiskStep::Create { size: want },
        Some(have) if have < want => DiskStep::Grow { size: want },
        Some(_) => DiskStep::Keep,
    }
}

/// The VHDX of a home whose raw image would be `raw_image` (`disk.raw`
/// becomes `disk.vhdx`, in the same private directory).
pub fn path_for(raw_image: &Path) -> PathBuf {
    crate::vm::disk::image_for(raw_image, Some(crate::vm::Hypervisor::Hcs))
}

#[cfg(windows)]
pub mod windows_calls {
    use std::path::Path;

    use anyhow::{Context, Result};
    use windows_sys::Win32::Foundation::{CloseHandle, ERROR_SUCCESS, HANDLE, WIN32_ERROR};
    use windows_sys::Win32::Storage::Vhd::{
        CreateVirtualDisk, GetVirtualDiskInformation, OpenVirtualDisk, ResizeVirtualDisk,
        CREATE_VIRTUAL_DISK_FLAG_NONE, CREATE_VIRTUAL_DISK_PARAMETERS, CREATE_VIRTUAL_DISK_VERSION_2,
        GET_VIRTUAL_DISK_INFO, GET_VIRTUAL_DISK_INFO_SIZE, OPEN_VIRTUAL_DISK_FLAG_NONE, OPEN_VIRTUAL_DISK_PARAMETERS,
        OPEN_VIRTUAL_DISK_VERSION_2, RESIZE_VIRTUAL_DISK_FLAG_NONE, RESIZE_VIRTUAL_DISK_PARAMETERS,
        RESIZE_VIRTUAL_DISK_VERSION_1, VIRTUAL_DISK_ACCESS_NONE, VIRTUAL_STORAGE_TYPE,
        VIRTUAL_STORAGE_TYPE_DEVICE_VHDX, VIRTUAL_STORAGE_TYPE_VENDOR_MICROSOFT,
    };

    use super::{plan, DiskStep};

    fn vhdx_type() -> VIRTUAL_STORAGE_TYPE {
        VIRTUAL_STORAGE_TYPE {
            DeviceId: VIRTUAL_STORAGE_TYPE_DEVICE_VHDX,
            VendorId: VIRTUAL_STORAGE_TYPE_VENDOR_MICROSOFT,
        }
    }

    fn wide(path: &Path) -> Vec<u16> {
        use std::os::windows::ffi::OsStrExt;
        path.as_os_str().encode_wide().chain([0]).collect()
    }

    fn check(call: &str, path: &Path, code: WIN32_ERROR) -> Result<()> {
        if code == ERROR_SUCCESS {
            return Ok(());
        }
        Err(std::io::Error::from_raw_os_error(code as i32)).with_context(|| format!("{call} {}", path.display()))
    }

    /// An open virtual disk handle, closed when dropped.
    struct Disk(HANDLE);

    impl Drop for Disk {
        fn drop(&mut self) {
            // SAFETY: the handle came from Create/OpenVirtualDisk and is closed once.
            unsafe { CloseHandle(self.0) };
        }
    }

    fn open(path: &Path) -> Result<Disk> {
        let name = wide(path);
        // Version 2 with no access mask: what resizing needs, and enough to
        // read the size.
        let parameters = OPEN_VIRTUAL_DISK_PARAMETERS { Version: OPEN_VIRTUAL_DISK_VERSION_2, ..Default::default() };
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the storage type, name and parameters outlive the call; one handle written.
        let code = unsafe {
            OpenVirtualDisk(
                &vhdx_type(),
                name.as_ptr(),
                VIRTUAL_DISK_ACCESS_NONE,
                OPEN_VIRTUAL_DISK_FLAG_NONE,
                &parameters,
                &mut handle,
            )
        };
        check("opening", path, code)?;
        Ok(Disk(handle))
    }

    fn virtual_size(disk: &Disk, path: &Path) -> Result<u64> {
        let mut info = GET_VIRTUAL_DISK_INFO { Version: GET_VIRTUAL_DISK_INFO_SIZE, ..Default::default() };
        let mut size = std::mem::size_of::<GET_VIRTUAL_DISK_INFO>() as u32;
        // SAFETY: `info` is a GET_VIRTUAL_DISK_INFO of `size` bytes; no size-used output.
        let code = unsafe { GetVirtualDiskInformation(disk.0, &mut size, &mut info, std::ptr::null_mut()) };
        check("reading the size of", path, code)?;
        // SAFETY: asked for GET_VIRTUAL_DISK_INFO_SIZE, so Size is the member written.
        Ok(unsafe { info.Anonymous.Size.VirtualSize })
    }

    fn create(path: &Path, size: u64) -> Result<()> {
        let name = wide(path);
        let mut parameters =
            CREATE_VIRTUAL_DISK_PARAMETERS { Version: CREATE_VIRTUAL_DISK_VERSION_2, ..Default::default() };
        // Block and sector sizes left at 0: VHDX's defaults (32 MiB, 512 B).
        parameters.Anonymous.Version2.MaximumSize = size;
        let mut handle: HANDLE = std::ptr::null_mut();
        // SAFETY: the storage type, name and parameters outlive the call; no
        // security descriptor (the file inherits the private home's ACL), no
        // overlapped I/O (the call completes before returning); one handle written.
        let code = unsafe {
            CreateVirtualDisk(
                &vhdx_type(),
                name.as_ptr(),
                VIRTUAL_DISK_ACCESS_NONE,
                std::ptr::null_mut(),
                CREATE_VIRTUAL_DISK_FLAG_NONE,
                0,
                &parameters,
                std::ptr::null(),
                &mut handle,
            )
        };
        check("creating", path, code)?;
        drop(Disk(handle));
        Ok(())
    }

    fn grow(disk: &Disk, path: &Path, size: u64) -> Result<()> {
        let mut parameters =
            RESIZE_VIRTUAL_DISK_PARAMETERS { Version: RESIZE_VIRTUAL_DISK_VERSION_1, ..Default::default() };
        parameters.Anonymous.Version1.NewSize = size;
        // SAFETY: an open disk; the parameters outlive the call; synchronous.
        let code = unsafe { ResizeVirtualDisk(disk.0, RESIZE_VIRTUAL_DISK_FLAG_NONE, &parameters, std::ptr::null()) };
        check("growing", path, code)
    }

    /// Makes the VHDX at `path` exist with at least `disk_gib` GiB.
    pub fn prepare(path: &Path, disk_gib: u64) -> Result<()> {
        let disk = if path.exists() { Some(open(path)?) } else { None };
        let have = disk.as_ref().map(|d| virtual_size(d, path)).transpose()?;
        match (plan(have, disk_gib), disk) {
            (DiskStep::Create { size }, _) => create(path, size),
            (DiskStep::Grow { size }, Some(disk)) => {
                tracing::info!(have, size, "growing the data disk; the guest grows its filesystem at boot");
                grow(&disk, path, size)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_is_made_once_and_only_ever_grows() {
        assert_eq!(plan(None, 64), DiskStep::Create { size: 64 << 30 });
        assert_eq!(plan(Some(32 << 30), 64), DiskStep::Grow { size: 64 << 30 });
        assert_eq!(plan(Some(64 << 30), 64), DiskStep::Keep);
        assert_eq!(plan(Some(128 << 30), 64), DiskStep::Keep, "a smaller disk-gib never shrinks the disk");
    }

    #[test]
    fn the_vhdx_sits_beside_the_raw_image() {
        assert_eq!(
            path_for(Path::new(r"C:\Users\me\AppData\Local\Berth\disk.raw")),
            PathBuf::from(r"C:\Users\me\AppData\Local\Berth\disk.vhdx")
        );
    }
}
