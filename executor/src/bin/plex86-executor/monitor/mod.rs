//! The monitor: per-run state of the executor, the entry-frame builder, the LDT mirror, demand
//! paging and the signal-handler logic that turns host signals into guest exits.
//! Everything here runs without allocating (the signal handler included).
//!
//! * this file: the state, its construction, MMU commands and the helpers the others share;
//! * `entry.rs`: the LDT mirror and the entry frame;
//! * `signal.rs`: the signal handler's logic, by cause;
//! * `fill.rs`: demand paging (the mirror's fills).

mod entry;
mod fill;
mod signal;

use super::sys::{self, RamMapping};
use guest_paging::{self as paging, PagingRegs};
use plex86_executor::decode::IcebpRip;
use plex86_executor::frame::{EntryFrame, EntrySegs, FpxSwBytes, KStack, UserDesc};
use plex86_executor::shadow::{MirrorOps, Shadow};
use plex86_protocol::{self as protocol, GuestState, RawExit, RawReason, EXIT_HAS_ERROR_CODE};

/// The executor's mmap wrappers as [`MirrorOps`].
pub struct HostMirror;

impl MirrorOps for HostMirror {
    fn map(&mut self, lin: u32, phys: u64, prot: i32) -> Result<(), i32> {
        sys::mirror_map(lin, phys, prot)
    }
    fn unmap(&mut self, lin: u32, pages: u32) -> Result<(), i32> {
        sys::mirror_unmap(u64::from(lin), u64::from(pages) * 4096)
    }
    fn unmap_all(&mut self) -> Result<(), i32> {
        sys::mirror_unmap(sys::MIRROR_START, sys::MIRROR_END - sys::MIRROR_START)
    }
    fn protect(&mut self, lin: u32, prot: i32) -> Result<(), i32> {
        sys::mirror_protect(lin, prot)
    }
}

/// The executor's state.
pub struct Monitor {
    /// Guest RAM above 4 GiB.
    pub ram: RamMapping,
    ram_ok: Box<[u64]>,
    ram_pages: u64,
    /// The mirror record.
    pub shadow: Shadow,
    regs: PagingRegs,
    /// Native selectors installed for ES, CS, SS, DS, FS, GS.
    installed: [u16; 6],
    cs_base: u32,
    ldt: [Option<UserDesc>; 6],
    /// The request's state (entry).
    pub entry: GuestState,
    /// The exit being built.
    pub exit: RawExit,
    /// The state at the exit.
    pub exit_state: GuestState,
    /// The entry frame.
    pub frame: EntryFrame,
    /// Data segment selectors (DS, ES, FS, GS) and FS/GS bases for the entry trampoline.
    pub entry_data_segs: EntrySegs,
    sw: FpxSwBytes,
    altstack: KStack,
    /// Budget clock id and timer.
    pub clock: i32,
    /// Budget timer id.
    pub timer: i32,
    /// Start of the current run (clock ns).
    pub start_ns: u64,
    /// Budget of the current run.
    pub budget_ns: u64,
    /// Demand fills that end a run (`LibArea::max_fills`; 0 = no limit).
    pub max_fills: u32,
    /// Host cost of a mirror-region fault delivered to a handler and returned from, measured
    /// at start-up ([`sys::fault_round_trip_ns`]): the part of a fill the handler cannot time.
    pub fault_ns: u64,
    /// Where the host reports RIP for ICEBP, measured at start-up ([`sys::probe_icebp_rip`]).
    pub icebp_rip: IcebpRip,
    /// True while guest code runs.
    pub in_guest: bool,
    /// Set when the run ended in a guest escape.
    pub escaped: bool,
    /// The host CPU is AMD (SYSCALL rather than SYSENTER reaches the compat fast path).
    pub amd: bool,
    /// Address of the executor's vDSO (AT_SYSINFO_EHDR), which the compat fast-syscall
    /// return lands in.
    vdso: u64,
}

impl Monitor {
    /// Builds the monitor (setup time: allocates its tables).
    pub fn new(
        ram: RamMapping,
        ram_size: u64,
        ranges: &[protocol::RamRange],
        sw: FpxSwBytes,
        altstack: KStack,
        clock: i32,
        timer: i32,
    ) -> Box<Monitor> {
        let ram_pages = ram_size / 4096;
        let mut ram_ok = vec![0u64; (ram_pages as usize).div_ceil(64)].into_boxed_slice();
        for r in ranges {
            let end = r.end.min(ram_size);
            let mut p = r.start / 4096;
            while p < end / 4096 {
                ram_ok[(p / 64) as usize] |= 1 << (p % 64);
                p += 1;
            }
        }
        Box::new(Monitor {
            ram,
            ram_ok,
            ram_pages,
            shadow: Shadow::new(ram_pages as usize),
            regs: PagingRegs::default(),
            installed: [0; 6],
            cs_base: 0,
            ldt: [None; 6],
            entry: GuestState::default(),
            exit: RawExit::ZERO,
            exit_state: GuestState::default(),
            frame: EntryFrame::new(),
            entry_data_segs: EntrySegs::default(),
            sw,
            altstack,
            clock,
            timer,
            start_ns: 0,
            budget_ns: 0,
            max_fills: 0,
            fault_ns: 0,
            icebp_rip: IcebpRip::After,
            in_guest: false,
            escaped: false,
            amd: is_amd(),
            vdso: sys::vdso_base(),
        })
    }

    #[inline]
    fn is_ram(&self, ppn: u64) -> bool {
        ppn < self.ram_pages && self.ram_ok[(ppn / 64) as usize] & (1 << (ppn % 64)) != 0
    }

    /// Applies one MMU command.
    pub fn command(&mut self, kind: u32, addr: u64) -> Result<(), i32> {
        let ops = &mut HostMirror;
        match kind {
            protocol::cmd::FLUSH_ALL => self.shadow.flush_all(ops),
            protocol::cmd::FLUSH_NON_GLOBAL => self.shadow.flush_non_global(ops),
            protocol::cmd::INVALIDATE_PAGE => self
                .shadow
                .invalidate(ops, ((addr & 0xffff_ffff) >> 12) as u32),
            protocol::cmd::WRITE_PROTECT_PHYS => self.shadow.write_protect(ops, addr >> 12),
            _ => Err(libc::EINVAL),
        }
    }

    /// Reads up to 15 instruction bytes at linear `lin` through the guest's page tables
    /// (without setting A/D bits). Returns the number of bytes read.
    fn read_code(&self, lin: u32, buf: &mut [u8; 15]) -> usize {
        let ram_only = |pa: u64, b: &mut [u8]| self.is_ram(pa >> 12) && self.ram.read(pa, b);
        paging::read_linear(&self.ram, &self.regs, lin, buf, ram_only)
    }

    fn code_bytes_before(&self, eip: u32, n: u32) -> Option<[u8; 2]> {
        let mut b = [0u8; 15];
        let got = self.read_code(self.cs_base.wrapping_add(eip.wrapping_sub(n)), &mut b);
        (got >= 2).then_some([b[0], b[1]])
    }

    #[inline]
    fn set_exit(&mut self, reason: RawReason) {
        self.exit.reason = reason as u32;
    }

    fn other_exception(&mut self, vector: u32, err: Option<u32>) {
        self.set_exit(RawReason::OtherException);
        self.exit.vector = vector.min(31);
        if let Some(e) = err {
            self.exit.flags |= EXIT_HAS_ERROR_CODE;
            self.exit.error_code = e;
        }
    }

    fn escape(&mut self, kind: u32, addr: u64) {
        self.set_exit(RawReason::GuestEscape);
        self.exit.vector = kind;
        self.exit.detail = addr;
        self.exit_state = self.entry;
        self.escaped = true;
    }
}

fn is_amd() -> bool {
    // CPUID leaf 0 vendor "AuthenticAMD" (EBX, EDX, ECX) — also Hygon.
    let r = std::arch::x86_64::__cpuid(0);
    (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
        || (r.ebx, r.edx, r.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
}
