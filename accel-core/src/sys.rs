//! Operating-system and CPU wrappers: the library's only `unsafe` besides the C ABI
//! (`ffi.rs`, `ffi/config.rs`). Each function here is safe to call; each block states why it
//! is sound.

use crate::decode::GuestMemory;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Duplicates Bochs's RAM fd (close-on-exec). The library owns and closes the duplicate; the
/// original stays Bochs's. An fd that is not open gives `EBADF`.
pub fn dup_fd(raw: i32) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd table; an invalid `raw` gives EBADF.
    let fd = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fcntl: it is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Allocates the first `len` bytes of `fd` (fallocate mode 0: the file's size is unchanged
/// when it is already that large). Interrupted calls are repeated; what was allocated stays.
pub fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: fallocate only changes the file behind `fd`, which the caller owns or borrows;
        // no memory of this process is touched.
        if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A read-only mapping of guest RAM, for decoding instructions behind exits.
///
/// Guest memory is shared with Bochs and the executor, so it is never turned into a Rust
/// reference: every access is a volatile byte copy with a bounds check.
#[derive(Debug)]
pub struct RamView {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; all access is by copying.
unsafe impl Send for RamView {}
// SAFETY: as above; reads through `&self` never create references into the mapping.
unsafe impl Sync for RamView {}

impl RamView {
    /// Maps the first `len` bytes of `fd` read-only (the caller has checked that the file is
    /// at least that large: the executor spawn does).
    pub fn map(fd: BorrowedFd<'_>, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh shared read-only mapping chosen by the kernel (no MAP_FIXED): it
        // cannot overlap anything of this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(RamView { base, len })
    }
}

impl GuestMemory for RamView {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(pa) else {
            return false;
        };
        let Some(end) = start.checked_add(buf.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `start + i < end <= len`: inside the mapping, which lives as long as
            // `self`; a volatile read of a byte that another process may write.
            *b = unsafe { self.base.as_ptr().add(start + i).read_volatile() };
        }
        true
    }
}

impl Drop for RamView {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`, which nothing references.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The host's XCR0 (`None` when the OS has not enabled XSAVE).
pub fn host_xcr0() -> Option<u64> {
    if crate::cpuid::host_cpuid(1, 0)[2] & (1 << 27) == 0 {
        return None;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: CPUID.1:ECX.OSXSAVE is set, so XGETBV with ECX = 0 is defined and reads XCR0;
    // it touches no memory.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    Some(u64::from(hi) << 32 | u64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn bad_fds_give_ebadf() {
        assert_eq!(dup_fd(-1).unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(
            dup_fd(1_000_000).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }

    #[test]
    fn ram_view_reads_and_bounds() {
        let ram = host_driver::GuestRam::new(8192).unwrap();
        ram.write(4090, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let dup = dup_fd(ram.fd().as_raw_fd()).unwrap();
        assert_ne!(dup.as_raw_fd(), ram.fd().as_raw_fd());
        let view = RamView::map(dup.as_fd(), 8192).unwrap();
        let mut b = [0u8; 8];
        assert!(view.read(4090, &mut b));
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!view.read(8190, &mut b));
        assert!(!view.read(u64::MAX, &mut b));
        assert!(view.read(8184, &mut b));
        // Later writes are visible (shared mapping).
        ram.write(0, &[9]);
        let mut one = [0u8];
        assert!(view.read(0, &mut one));
        assert_eq!(one, [9]);
    }

    #[test]
    fn host_xcr0_has_x87_and_sse() {
        let x = host_xcr0().expect("XSAVE enabled on x86-64 Linux hosts");
        assert_eq!(x & 3, 3);
    }
}
