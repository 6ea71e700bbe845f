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
    fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32> {
        sys::mirror_map(lin, phys, prot)
    }
    #[inline]
    fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32> {
        sys::mirror_unmap(u64::from(lin), u64::from(pages) * 4096)
    }
    #[inline]
    fn unmap_all(&mut self) -> Result<(), i32> {
        sys::mirror_unmap(sys::MIRROR_START, sys::MIRROR_END - sys::MIRROR_START)
    }
    #[inline]
    fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32> {
        sys::mirror_protect(lin, prot)
    }
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
