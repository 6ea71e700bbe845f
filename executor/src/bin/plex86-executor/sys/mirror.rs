//! The guest mirror region `[0x1000, 4 GiB)` (the only MAP_FIXED user) and the executor's own
//! mapping of guest RAM above 4 GiB.

use super::syscall6;
use guest_paging::PhysMemory;
use plex86_monitor::monitor::GuestRam;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
/// Lowest guest page that can be mirrored (mmap_min_addr).
pub const MIRROR_START: u64 = 0x1000;
/// End of the guest mirror region.
pub const MIRROR_END: u64 = 1 << 32;

static RESERVED: AtomicBool = AtomicBool::new(false);

fn check_mirror_range(addr: u64, len: u64) {
    assert!(
        RESERVED.load(Ordering::Relaxed),
        "mirror region not reserved"
    );
    assert!(
        addr >= MIRROR_START && addr % 4096 == 0 && len % 4096 == 0 && addr + len <= MIRROR_END
    );
}

/// Reserves `[0x1000, 4 GiB)` with one PROT_NONE mapping (MAP_FIXED_NOREPLACE). Fails if
/// anything is mapped there. After this, nothing of the executor can be placed below 4 GiB.
pub fn reserve_mirror_region() -> Result<(), i32> {
    let len = MIRROR_END - MIRROR_START;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory in use can
    // be affected; the range is checked to be free by the kernel.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            [
                MIRROR_START as usize,
                len as usize,
                libc::PROT_NONE as usize,
                (libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r < 0 {
        return Err(-r as i32);
    }
    if r as u64 != MIRROR_START {
        return Err(libc::EEXIST);
    }
    RESERVED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Maps the guest-physical page `phys` of the RAM memfd at linear `page` with `prot`, with its
/// page-table entry populated: the access that needed the fill follows at once, and a second
/// (minor) host fault for it would cost more than populating here, unseen by the fill's timing.
pub fn mirror_map(page: u32, phys: u64, prot: i32) -> Result<(), i32> {
    check_mirror_range(u64::from(page), 4096);
    // SAFETY: the target lies inside the reserved mirror region (checked), which holds only
    // guest mirrors: no Rust object lives there, so replacing the page is sound.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            [
                page as usize,
                4096,
                prot as usize,
                (libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE) as usize,
                plex86_protocol::RAM_FD as usize,
                phys as usize,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// Returns `[addr, addr+len)` to the PROT_NONE reservation.
pub fn mirror_unmap(addr: u64, len: u64) -> Result<(), i32> {
    check_mirror_range(addr, len);
    // SAFETY: as `mirror_map`: the range holds only guest mirrors.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            [
                addr as usize,
                len as usize,
                libc::PROT_NONE as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED)
                    as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// Changes the protection of one mirrored page.
pub fn mirror_protect(page: u32, prot: i32) -> Result<(), i32> {
    check_mirror_range(u64::from(page), 4096);
    // SAFETY: as `mirror_map`: the page holds only a guest mirror.
    let r = unsafe {
        syscall6(
            libc::SYS_mprotect,
            [page as usize, 4096, prot as usize, 0, 0, 0],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Guest RAM above 4 GiB.

/// The executor's own mapping of all of guest RAM (for page walks, A/D updates and reading
/// instruction bytes).
#[derive(Debug)]
pub struct RamMapping {
    base: *mut u8,
    size: u64,
}

// SAFETY: RamMapping is only used by the executor's single thread; the pointer refers to a
// shared file mapping that lives for the whole process.
unsafe impl Send for RamMapping {}

impl RamMapping {
    /// Maps `size` bytes of the RAM memfd read/write at a kernel-chosen (high) address.
    pub fn new(size: u64) -> Result<RamMapping, i32> {
        // SAFETY: a fresh mapping at a kernel-chosen address affects no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                plex86_protocol::RAM_FD,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        if (p as u64) < MIRROR_END {
            return Err(libc::EFAULT);
        }
        Ok(RamMapping {
            base: p.cast(),
            size,
        })
    }

    fn ptr(&self, pa: u64, len: u64, align: u64) -> Option<*mut u8> {
        if pa % align != 0 || pa.checked_add(len)? > self.size {
            return None;
        }
        // SAFETY: `pa + len <= size` (checked), so the result is inside the mapping.
        Some(unsafe { self.base.add(pa as usize) })
    }

    /// Copies guest-physical bytes into `buf`; `false` if out of range.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(p) = self.ptr(pa, buf.len() as u64, 1) else {
            return false;
        };
        // SAFETY: the source range is inside the mapping (checked); the memory may change
        // concurrently (guest code, Bochs), which a byte copy tolerates.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

impl GuestRam for RamMapping {
    #[inline]
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        RamMapping::read(self, pa, buf)
    }
}

impl PhysMemory for RamMapping {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let p = self.ptr(pa, 4, 4)?;
        // SAFETY: aligned and inside the mapping (checked); atomic because others write it.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::Acquire))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let p = self.ptr(pa, 8, 8)?;
        // SAFETY: as read_u32.
        Some(unsafe { AtomicU64::from_ptr(p.cast()) }.load(Ordering::Acquire))
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let p = self.ptr(pa, 4, 4)?;
        // SAFETY: as read_u32; `lock cmpxchg` like the hardware's A/D update.
        let a = unsafe { AtomicU32::from_ptr(p.cast()) };
        Some(
            a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        )
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let p = self.ptr(pa, 8, 8)?;
        // SAFETY: as read_u32.
        let a = unsafe { AtomicU64::from_ptr(p.cast()) };
        Some(
            a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        )
    }
}
