//! Guest RAM as the product's page-table walkers read it, read-only (no A/D updates): for the
//! page-table builders' own tests.

use guest_paging::PhysMemory;
use host_driver::GuestRam;

pub(crate) struct ReadOnlyRam<'a>(pub &'a GuestRam);

impl PhysMemory for ReadOnlyRam<'_> {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        Some(self.0.read_u32(pa))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        Some(self.0.read_u64(pa))
    }
    fn cmpxchg_u32(&self, _: u64, _: u32, _: u32) -> Option<bool> {
        None
    }
    fn cmpxchg_u64(&self, _: u64, _: u64, _: u64) -> Option<bool> {
        None
    }
}
