//! The control region (fd 4) as mapped in the executor.

use std::sync::atomic::AtomicU32;
/// The control region: the library part read-only, the executor part read/write.
#[derive(Debug)]
pub struct Control {
    lib: *const u8,
    exec: *mut u8,
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
        Ok(Control {
            lib: lib.cast(),
            exec: exec.cast(),
        })
    }

    /// Copies `len` bytes at `off` of the library part into `dst`.
    pub fn read_lib(&self, off: usize, dst: &mut [u8]) {
        assert!(off + dst.len() <= plex86_protocol::EXEC_AREA_OFFSET);
        // SAFETY: inside the read-only mapping (checked); a byte copy tolerates concurrent
        // writes by the library (which it does not make while a request is pending).
        unsafe { std::ptr::copy_nonoverlapping(self.lib.add(off), dst.as_mut_ptr(), dst.len()) };
    }

    /// Copies `src` into the executor part at `off`.
    pub fn write_exec(&self, off: usize, src: &[u8]) {
        assert!(
            off + src.len() <= plex86_protocol::REGION_SIZE - plex86_protocol::EXEC_AREA_OFFSET
        );
        // SAFETY: inside the writable mapping (checked).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.exec.add(off), src.len()) };
    }

    /// An atomic u32 of the library part (the request sequence word).
    pub fn lib_word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= plex86_protocol::EXEC_AREA_OFFSET);
        // SAFETY: aligned, inside the mapping for the life of the process; only loads are made
        // (the mapping is read-only).
        unsafe { AtomicU32::from_ptr(self.lib.add(off) as *mut u32) }
    }

    /// An atomic u32 of the executor part.
    pub fn exec_word(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0
                && off + 4 <= plex86_protocol::REGION_SIZE - plex86_protocol::EXEC_AREA_OFFSET
        );
        // SAFETY: aligned, inside the writable mapping for the life of the process.
        unsafe { AtomicU32::from_ptr(self.exec.add(off).cast()) }
    }
}

/// Bytes of a protocol value (for copying into the control region).
pub fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the protocol types are repr(C) plain data with explicit padding fields; reading
    // their bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Reads a protocol value out of the library part.
pub fn read_lib_value<T: Copy>(c: &Control, off: usize) -> T {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the slice covers exactly the (zero-initialised) bytes of `v`.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>())
    };
    c.read_lib(off, buf);
    // SAFETY: only used for protocol types (integers and arrays of integers), for which any
    // byte pattern is valid.
    unsafe { v.assume_init() }
}
