//! The stub process as the monitor's [`Host`]: mirror changes and LDT writes become mapper
//! ops, queued until the library publishes them (in batches of at most [`MAX_OPS`], see
//! `batch.rs`). The monitor's own clock reads are not used: the stub times its runs and its
//! signal handling itself (`signal.rs`).

use plex86_monitor::frame::UserDesc;
use plex86_monitor::monitor::Host;
use plex86_monitor::shadow::MirrorOps;
use plex86_protocol::stub::{MapOp, MAX_OPS, OP_LDT, OP_MMAP, OP_MPROTECT, OP_MUNMAP};
use plex86_protocol::RAM_FD;

/// Lowest mirrored page (vm.mmap_min_addr on these hosts).
const MIRROR_START: u64 = 0x1000;
/// End of the mirror region for 32-bit guests.
const MIRROR_END: u64 = 1 << 32;

/// The ops not yet handed to the mapper, in order.
#[derive(Debug)]
pub(crate) struct StubHost {
    /// The queue. It may grow beyond one batch (a flush of many scattered pages, many
    /// commands before a run): the library then hands it over batch by batch, in order.
    pub(crate) ops: Vec<MapOp>,
}

impl StubHost {
    pub(crate) fn new() -> Self {
        StubHost {
            ops: Vec::with_capacity(MAX_OPS),
        }
    }

    fn push(&mut self, op: MapOp) -> Result<(), i32> {
        self.ops.push(op);
        Ok(())
    }
}

impl MirrorOps for StubHost {
    fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32> {
        // Consecutive pages of consecutive RAM with one protection: one mmap (fill-ahead).
        if let Some(last) = self.ops.last_mut() {
            if last.kind == OP_MMAP
                && last.prot == prot as u32
                && last.addr + last.len == u64::from(lin)
                && last.offset + last.len == phys
            {
                last.len += 4096;
                return Ok(());
            }
        }
        self.push(MapOp {
            kind: OP_MMAP,
            addr: u64::from(lin),
            len: 4096,
            prot: prot as u32,
            flags: (libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE) as u32,
            fd: RAM_FD,
            offset: phys,
            ..MapOp::default()
        })
    }
    fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32> {
        self.push(MapOp {
            kind: OP_MUNMAP,
            addr: u64::from(lin),
            len: u64::from(pages) * 4096,
            ..MapOp::default()
        })
    }
    fn unmap_all(&mut self) -> Result<(), i32> {
        // Mirror changes queued before are undone by this anyway (LDT writes are not).
        self.ops.retain(|o| o.kind == OP_LDT);
        self.push(MapOp {
            kind: OP_MUNMAP,
            addr: MIRROR_START,
            len: MIRROR_END - MIRROR_START,
            ..MapOp::default()
        })
    }
    fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32> {
        self.push(MapOp {
            kind: OP_MPROTECT,
            addr: u64::from(lin),
            len: 4096,
            prot: prot as u32,
            ..MapOp::default()
        })
    }
}

impl Host for StubHost {
    const MIRROR_START: u64 = MIRROR_START;
    fn write_ldt(&mut self, d: &UserDesc) -> Result<(), i32> {
        self.push(MapOp {
            kind: OP_LDT,
            addr: u64::from(d.entry_number) | (u64::from(d.base_addr) << 32),
            len: u64::from(d.limit) | (u64::from(d.flags) << 32),
            ..MapOp::default()
        })
    }
    /// Constant: the monitor's fill timing (handler time) is the stub's, which the library
    /// adds from the stub's timestamps; the monitor adds only the calibrated fault round trip.
    fn clock_ns(&self, _clock: i32) -> u64 {
        0
    }
    /// The stub has no timer: the library signals the budget's end itself, and passes the
    /// monitor only the signal it sent in the current run (so none is ever pending).
    fn timer_pending(&self, _timer: i32) -> bool {
        false
    }
}
