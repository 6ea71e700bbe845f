//! The stub process as the monitor's [`Host`]: mirror changes and LDT writes become mapper
//! ops, queued until the library publishes the batch; time is the library's own clock.

use plex86_monitor::frame::UserDesc;
use plex86_monitor::monitor::Host;
use plex86_monitor::shadow::MirrorOps;
use plex86_protocol::stub::{MapOp, MAX_OPS, OP_LDT, OP_MMAP, OP_MPROTECT, OP_MUNMAP};
use plex86_protocol::RAM_FD;
use std::time::Instant;

/// Lowest mirrored page (vm.mmap_min_addr on these hosts).
const MIRROR_START: u64 = 0x1000;
/// End of the mirror region for 32-bit guests.
const MIRROR_END: u64 = 1 << 32;

/// The ops of the batch being built, and the clock.
#[derive(Debug)]
pub(crate) struct StubHost {
    /// The batch being built.
    pub(crate) ops: Vec<MapOp>,
    epoch: Instant,
}

impl StubHost {
    pub(crate) fn new() -> Self {
        StubHost {
            ops: Vec::with_capacity(MAX_OPS),
            epoch: Instant::now(),
        }
    }

    fn push(&mut self, op: MapOp) -> Result<(), i32> {
        if self.ops.len() >= MAX_OPS {
            // The batch is full: the monitor flushes all and starts over, as on ENOMEM.
            return Err(libc::ENOMEM);
        }
        self.ops.push(op);
        Ok(())
    }
}

impl MirrorOps for StubHost {
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32> {
        // Consecutive pages of consecutive RAM with one protection: one mmap (fill-ahead).
        if let Some(last) = self.ops.last_mut() {
            if last.kind == OP_MMAP
                && last.prot == prot as u32
                && last.addr + last.len == lin
                && last.offset + last.len == phys
            {
                last.len += 4096;
                return Ok(());
            }
        }
        self.push(MapOp {
            kind: OP_MMAP,
            addr: lin,
            len: 4096,
            prot: prot as u32,
            flags: (libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE) as u32,
            fd: RAM_FD,
            offset: phys,
            ..MapOp::default()
        })
    }
    fn unmap(&mut self, lin: u64, pages: u32) -> Result<(), i32> {
        self.push(MapOp {
            kind: OP_MUNMAP,
            addr: lin,
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
    fn protect(&mut self, lin: u64, prot: i32) -> Result<(), i32> {
        self.push(MapOp {
            kind: OP_MPROTECT,
            addr: lin,
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
    fn clock_ns(&self, _clock: i32) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn timer_pending(&self, _timer: i32) -> bool {
        false
    }
}
