//! The executor process as the monitor's [`Host`]: its system calls.

use crate::sys;
use plex86_monitor::frame::UserDesc;
use plex86_monitor::monitor::Host;
use plex86_monitor::shadow::MirrorOps;

/// The process's own mirror mappings, LDT, clock and timer.
#[derive(Debug)]
pub struct SysHost;

impl MirrorOps for SysHost {
    #[inline]
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32> {
        sys::mirror_map(below_4g(lin)?, phys, prot)
    }
    #[inline]
    fn unmap(&mut self, lin: u64, pages: u32) -> Result<(), i32> {
        sys::mirror_unmap(u64::from(below_4g(lin)?), u64::from(pages) * 4096)
    }
    #[inline]
    fn unmap_all(&mut self) -> Result<(), i32> {
        sys::mirror_unmap(sys::MIRROR_START, sys::MIRROR_END - sys::MIRROR_START)
    }
    #[inline]
    fn protect(&mut self, lin: u64, prot: i32) -> Result<(), i32> {
        sys::mirror_protect(below_4g(lin)?, prot)
    }
}

/// This executor's mirror region ends at 4 GiB (its own code and data lie above): a page
/// beyond it is refused, and the guest's access is then emulated.
#[inline]
fn below_4g(lin: u64) -> Result<u32, i32> {
    u32::try_from(lin).map_err(|_| libc::EINVAL)
}

impl Host for SysHost {
    const MIRROR_START: u64 = sys::MIRROR_START;
    #[inline]
    fn write_ldt(&mut self, d: &UserDesc) -> Result<(), i32> {
        sys::write_ldt(d)
    }
    #[inline]
    fn clock_ns(&self, clock: i32) -> u64 {
        sys::clock_ns(clock)
    }
    #[inline]
    fn timer_pending(&self, timer: i32) -> bool {
        sys::timer_pending(timer)
    }
}
