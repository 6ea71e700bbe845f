//! The control region (fd 4) as mapped in the executor.

use plex86_protocol::view::ExecSide;
use std::ptr::NonNull;

/// The control region: the library part read-only, the executor part read/write.
#[derive(Debug)]
pub struct Control {
    lib: NonNull<u8>,
    exec: NonNull<u8>,
}

impl Control {
    /// Maps the control memfd (fd 4). The library part is mapped PROT_READ.
    pub fn map() -> Result<Control, i32> {
        use plex86_protocol::{CONTROL_FD, EXEC_AREA_OFFSET, REGION_SIZE};
        // SAFETY: fresh mappings at kernel-chosen addresses.
        let lib = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                EXEC_AREA_OFFSET,
                libc::PROT_READ,
                libc::MAP_SHARED,
                CONTROL_FD,
                0,
            )
        };
        // SAFETY: as above.
        let exec = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE - EXEC_AREA_OFFSET,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                CONTROL_FD,
                EXEC_AREA_OFFSET as libc::off_t,
            )
        };
        if lib == libc::MAP_FAILED || exec == libc::MAP_FAILED {
            return Err(libc::EBADF);
        }
        match (NonNull::new(lib.cast()), NonNull::new(exec.cast())) {
            (Some(lib), Some(exec)) => Ok(Control { lib, exec }),
            _ => Err(libc::EBADF),
        }
    }

    /// The executor's typed view of the region.
    pub fn view(&self) -> ExecSide<'_> {
        // SAFETY: `map` mapped the library part (readable) and the executor part (read/write)
        // in full, page aligned; they stay mapped for the life of the process (never unmapped),
        // so for as long as `&self`.
        unsafe { ExecSide::new(self.lib, self.exec) }
    }
}
