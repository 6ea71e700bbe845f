//! The queue of MMU commands for the next entry, built from Bochs's notifications.
//!
//! The native mirror behaves like a TLB. Between runs Bochs reports TLB flushes, INVLPGs and
//! the physical pages it holds decoded code for; they are queued here and sent with the next
//! run. Every command only removes mirror entries or marks physical pages, so they commute and
//! the queue can keep them in a canonical order with duplicates removed:
//!
//! 1. `FlushAll` (supersedes everything below it but the write protections), else
//!    `FlushNonGlobal` (supersedes nothing: an INVLPG may target a global page);
//! 2. `InvalidatePage`, one per page (beyond [`MAX_INVALIDATIONS`] they become a `FlushAll`);
//! 3. `WriteProtectPhysPage`, one per page (never dropped: they keep Bochs's decoded code
//!    coherent).
//!
//! INVLPG addresses are 64-bit (ABI 6: long mode), and so is `InvalidatePage` (protocol 6):
//! every one is forwarded (the stub executor mirrors 64-bit guests' pages anywhere in user
//! space; today's executor finds nothing to drop above 4 GiB).

use host_driver::MmuCommand;

/// More distinct INVLPGs than this between two runs are sent as one `FlushAll`: about where
/// the invalidations cost as much as a flush-all and the refills after it (docs/ARCHITECTURE.md,
/// "Costs behind the constants").
pub const MAX_INVALIDATIONS: usize = 128;

/// Pending MMU commands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmuQueue {
    flush_all: bool,
    flush_non_global: bool,
    /// Linear pages to invalidate (64-bit in long mode).
    pages: Vec<u64>,
    protect: Vec<u64>,
}

impl MmuQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A TLB flush: everything (`include_global`) or every non-global entry.
    pub fn flush(&mut self, include_global: bool) {
        if include_global {
            self.flush_all = true;
            self.flush_non_global = false;
            self.pages.clear();
        } else if !self.flush_all {
            self.flush_non_global = true;
        }
    }

    /// INVLPG of the page holding `linear`.
    pub fn invalidate(&mut self, linear: u64) {
        if self.flush_all {
            return;
        }
        let page = linear & !0xfff;
        if self.pages.contains(&page) {
            return;
        }
        if self.pages.len() >= MAX_INVALIDATIONS {
            self.flush(true);
            return;
        }
        self.pages.push(page);
    }

    /// Write-protect a guest-physical page (page aligned by the caller).
    pub fn protect(&mut self, phys_page: u64) {
        if !self.protect.contains(&phys_page) {
            self.protect.push(phys_page);
        }
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        !self.flush_all
            && !self.flush_non_global
            && self.pages.is_empty()
            && self.protect.is_empty()
    }

    /// Whether a flush (of any kind) is pending.
    pub fn has_flush(&self) -> bool {
        self.flush_all || self.flush_non_global
    }

    /// Appends the commands, in canonical order, to `out` (the queue is unchanged: clear it
    /// once the executor has accepted them).
    pub fn commands(&self, out: &mut Vec<MmuCommand>) {
        if self.flush_all {
            out.push(MmuCommand::FlushAll);
        } else {
            if self.flush_non_global {
                out.push(MmuCommand::FlushNonGlobal);
            }
            out.extend(self.pages.iter().map(|&p| MmuCommand::InvalidatePage(p)));
        }
        out.extend(
            self.protect
                .iter()
                .map(|&p| MmuCommand::WriteProtectPhysPage(p)),
        );
    }

    /// Empties the queue.
    pub fn clear(&mut self) {
        self.flush_all = false;
        self.flush_non_global = false;
        self.pages.clear();
        self.protect.clear();
    }

    /// Forgets pending flushes and invalidations (a fresh executor has an empty mirror) but
    /// keeps the write protections.
    pub fn drop_flushes(&mut self) {
        self.flush_all = false;
        self.flush_non_global = false;
        self.pages.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MmuCommand::*;

    fn cmds(q: &MmuQueue) -> Vec<MmuCommand> {
        let mut v = Vec::new();
        q.commands(&mut v);
        v
    }

    #[test]
    fn empty() {
        let q = MmuQueue::new();
        assert!(q.is_empty());
        assert!(cmds(&q).is_empty());
    }

    #[test]
    fn flush_all_supersedes_invalidations_but_not_protections() {
        let mut q = MmuQueue::new();
        q.invalidate(0x1234);
        q.protect(0x5000);
        q.flush(false);
        q.flush(true);
        q.invalidate(0x8000);
        q.flush(false);
        assert_eq!(cmds(&q), vec![FlushAll, WriteProtectPhysPage(0x5000)]);
        assert!(q.has_flush());
    }

    #[test]
    fn non_global_flush_keeps_invalidations_deduplicated() {
        let mut q = MmuQueue::new();
        q.invalidate(0x1234);
        q.invalidate(0x1ff0); // same page
        q.flush(false);
        q.invalidate(0x2000);
        q.protect(0x7000);
        q.protect(0x7000);
        assert_eq!(
            cmds(&q),
            vec![
                FlushNonGlobal,
                InvalidatePage(0x1000),
                InvalidatePage(0x2000),
                WriteProtectPhysPage(0x7000)
            ]
        );
        q.clear();
        assert!(q.is_empty());
    }

    #[test]
    fn too_many_invalidations_become_a_flush_all() {
        let mut q = MmuQueue::new();
        for i in 0..MAX_INVALIDATIONS as u64 {
            q.invalidate(i << 12);
        }
        assert_eq!(cmds(&q).len(), MAX_INVALIDATIONS);
        q.invalidate(0xffff_f000);
        assert_eq!(cmds(&q), vec![FlushAll]);
    }

    #[test]
    fn invalidations_of_64_bit_addresses_are_forwarded_whole() {
        let mut q = MmuQueue::new();
        for a in [0x1_0000_0000u64, 0x7fff_ffff_f123, 0xffff_8000_0000_1000] {
            q.invalidate(a);
        }
        assert_eq!(
            cmds(&q),
            vec![
                InvalidatePage(0x1_0000_0000),
                InvalidatePage(0x7fff_ffff_f000),
                InvalidatePage(0xffff_8000_0000_1000)
            ]
        );
    }

    #[test]
    fn drop_flushes_keeps_protections() {
        let mut q = MmuQueue::new();
        q.flush(true);
        q.protect(0x3000);
        q.drop_flushes();
        assert_eq!(cmds(&q), vec![WriteProtectPhysPage(0x3000)]);
    }
}
