//! The stub process as the monitor's [`Host`]: mirror changes and LDT writes become mapper
//! ops, queued until the library publishes them (in batches of at most [`MAX_OPS`], see
//! `batch.rs`). The monitor's own clock reads are not used: the stub times its runs and its
//! signal handling itself (`signal.rs`).

use plex86_monitor::frame::UserDesc;
use plex86_monitor::monitor::Host;
use plex86_monitor::shadow::MirrorOps;
use plex86_protocol::stub::{
    reserved_block, MapOp, MAX_OPS, OP_LDT, OP_MMAP, OP_MPROTECT, OP_MUNMAP, USER_END,
};
use plex86_protocol::RAM_FD;

/// Lowest mirrored page (vm.mmap_min_addr on these hosts).
const MIRROR_START: u64 = 0x1000;

/// The ops not yet handed to the mapper, in order.
#[derive(Debug)]
pub(crate) struct StubHost {
    /// The queue. It may grow beyond one batch (a flush of many scattered pages, many
    /// commands before a run): the library then hands it over batch by batch, in order.
    pub(crate) ops: Vec<MapOp>,
    /// S's 4 GiB block: never mirrored (the mapper's filter would kill the stub).
    reserved: std::ops::Range<u64>,
}

impl StubHost {
    pub(crate) fn new(stub_base: u64) -> Self {
        StubHost {
            ops: Vec::with_capacity(MAX_OPS),
            reserved: reserved_block(stub_base),
        }
    }

    /// `EINVAL` (the access is then emulated) for a range in S's block or outside user space.
    fn mirrorable(&self, lin: u64, len: u64) -> Result<(), i32> {
        let end = lin.checked_add(len).ok_or(libc::EINVAL)?;
        let clear = end <= self.reserved.start || lin >= self.reserved.end;
        if clear && lin >= MIRROR_START && end <= USER_END {
            Ok(())
        } else {
            Err(libc::EINVAL)
        }
    }

    fn push(&mut self, op: MapOp) -> Result<(), i32> {
        self.ops.push(op);
        Ok(())
    }
}

impl MirrorOps for StubHost {
    fn map(&mut self, lin: u64, phys: u64, prot: i32) -> Result<(), i32> {
        self.mirrorable(lin, 4096)?;
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
        self.mirrorable(lin, u64::from(pages) * 4096)?;
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
        // All of user space but S's block, in two ops.
        for (start, end) in [
            (MIRROR_START, self.reserved.start),
            (self.reserved.end, USER_END),
        ] {
            self.push(MapOp {
                kind: OP_MUNMAP,
                addr: start,
                len: end - start,
                ..MapOp::default()
            })?;
        }
        Ok(())
    }
    fn protect(&mut self, lin: u64, prot: i32) -> Result<(), i32> {
        self.mirrorable(lin, 4096)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use plex86_protocol::stub::DEFAULT_BASE;

    #[test]
    fn nothing_is_mirrored_in_s_block_and_a_flush_spares_it() {
        let mut h = StubHost::new(DEFAULT_BASE);
        let block = reserved_block(DEFAULT_BASE);
        for lin in [block.start, DEFAULT_BASE, block.end - 4096, USER_END, 0] {
            assert_eq!(h.map(lin, 0, 1), Err(libc::EINVAL), "{lin:#x}");
            assert_eq!(h.protect(lin, 1), Err(libc::EINVAL), "{lin:#x}");
        }
        assert_eq!(h.unmap(block.start - 4096, 2), Err(libc::EINVAL));
        assert!(h.ops.is_empty());
        for lin in [0x1000, block.start - 4096, block.end, USER_END - 4096] {
            assert_eq!(h.map(lin, 0x5000, 1), Ok(()), "{lin:#x}");
        }
        h.unmap_all().unwrap();
        let spans: Vec<_> = h
            .ops
            .iter()
            .map(|o| (o.kind, o.addr, o.addr + o.len))
            .collect();
        assert_eq!(
            spans,
            [
                (OP_MUNMAP, 0x1000, block.start),
                (OP_MUNMAP, block.end, USER_END)
            ]
        );
    }
}
