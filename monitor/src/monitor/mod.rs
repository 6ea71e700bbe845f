//! The monitor: per-run state of the executor, the entry-frame builder, the LDT mirror, demand
//! paging and the signal-handler logic that turns host signals into guest exits.
//! Everything here runs without allocating (the signal handler included).
//!
//! * this file: the state, its construction, MMU commands and the helpers the others share;
//! * `entry.rs`: the LDT mirror and the entry frame;
//! * `signal.rs`: the signal handler's logic, by cause;
//! * `fill.rs`: demand paging (the mirror's fills);
//! * `long.rs`: what only 64-bit code has (its SYSCALL, the vsyscall page, leaving the mode);
//! * `tests.rs`: the monitor over a fake [`Host`].

mod entry;
mod fill;
mod long;
mod signal;
#[cfg(test)]
mod tests;

use crate::decode::IcebpRip;
use crate::frame::{EntryFrame, EntrySegs, FpxSwBytes, KStack, SignalContext, UserDesc};
use crate::shadow::{MirrorOps, Shadow};
use guest_paging::{self as paging, LongRegs, PagingRegs, PhysMemory};
use plex86_protocol::{
    self as protocol, CommandKind, EscapeKind, ExitReason, ExitRecord, GuestState, RawExit,
};

use plex86_protocol::{HOST_CS32, HOST_CS64, HOST_SS64};
/// The guest's physical-address width for the 4-level walker. 52, the architectural maximum,
/// rather than the width Bochs's CPU model reports (40 unless built for 52): with a wider
/// width than the guest's, an entry with bits set between the two is not a reserved-bit
/// fault here but a frame beyond guest RAM, which is never mirrored (the access is
/// emulated and Bochs raises the fault); a narrower one would raise faults Bochs does not.
pub const GUEST_MAXPHYADDR: u8 = 52;

/// Guest RAM as the monitor reads it: the walker's word accesses, and byte copies for
/// instruction bytes.
pub trait GuestRam: PhysMemory {
    /// Copies guest-physical bytes at `pa` into `buf`; `false` if out of range.
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool;
}

/// What the monitor needs from the process it runs in: the mirror's mappings ([`MirrorOps`]),
/// the LDT, the budget clock and timer. The executor process implements it with system calls;
/// another executor (or a test) with its own means.
pub trait Host: MirrorOps {
    /// Lowest linear page the mirror can map (`mmap_min_addr`): below it accesses are
    /// emulated.
    const MIRROR_START: u64;
    /// Writes one LDT entry.
    fn write_ldt(&mut self, d: &UserDesc) -> Result<(), i32>;
    /// Reads `clock` in nanoseconds.
    fn clock_ns(&self, clock: i32) -> u64;
    /// True while `timer` is armed (its expiry still ahead).
    fn timer_pending(&self, timer: i32) -> bool;
}

/// The monitor's parameters that come from the host, measured or created at setup.
#[derive(Clone, Copy, Debug)]
pub struct HostParams {
    /// The kernel's XSAVE signal-frame parameters.
    pub sw: FpxSwBytes,
    /// The alternate signal stack (for the entry frame's uc_stack).
    pub altstack: KStack,
    /// Budget clock id.
    pub clock: i32,
    /// Budget timer id.
    pub timer: i32,
    /// Address of the process's vDSO (0 without one).
    pub vdso: u64,
    /// The host CPU is AMD (or Hygon).
    pub amd: bool,
}

/// The executor's state.
pub struct Monitor<R, H> {
    /// Guest RAM.
    pub ram: R,
    /// The process's services.
    pub host: H,
    ram_ok: Box<[u64]>,
    ram_pages: u64,
    /// The mirror record.
    pub shadow: Shadow,
    regs: PagingRegs,
    /// The 4-level walker's registers while the entry is in long mode, 64-bit or
    /// compatibility-mode code (`None` otherwise: the 32-bit walker's `regs` apply).
    long_regs: Option<LongRegs>,
    /// The entry is 64-bit code (CS.L=1 in long mode): its exits are read whole. Compatibility-
    /// mode code is 32-bit code here but for its walker.
    code64: bool,
    /// The run switched between 64-bit and compatibility mode natively (its exit reads whole).
    mode_switched: bool,
    /// Native selectors installed for ES, CS, SS, DS, FS, GS.
    installed: [u16; 6],
    /// CS's base for the 32-bit walker's linear addresses (0 in 64-bit code, which has none).
    cs_base: u32,
    ldt: [Option<UserDesc>; 6],
    /// The request's state (entry).
    pub entry: GuestState,
    /// The exit being built.
    pub exit: ExitRecord,
    /// Whether this run's exit reason has been set (the library rejects a record without one).
    pub exit_set: bool,
    /// The exit as last encoded for the region: a buffer reused so that publishing an exit
    /// clears and allocates nothing.
    pub wire: RawExit,
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
    /// Pages after a filled one that a fill also mirrors when the guest has used them already
    /// (0: none; the stub executor's batching variant).
    pub fill_ahead: u32,
    /// Host cost of a mirror-region fault delivered to a handler and returned from, measured
    /// at start-up: the part of a fill the handler cannot time.
    pub fault_ns: u64,
    /// Where the host reports RIP for ICEBP, measured at start-up.
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

impl<R, H> std::fmt::Debug for Monitor<R, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("ram_pages", &self.ram_pages)
            .field("in_guest", &self.in_guest)
            .field("escaped", &self.escaped)
            .finish_non_exhaustive()
    }
}

impl<R: GuestRam, H: Host> Monitor<R, H> {
    /// Builds the monitor (setup time: allocates its tables).
    pub fn new(
        ram: R,
        host: H,
        ram_size: u64,
        ranges: &[protocol::RamRange],
        p: HostParams,
    ) -> Box<Self> {
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
            host,
            ram_ok,
            ram_pages,
            shadow: Shadow::new(ram_pages as usize),
            regs: PagingRegs::default(),
            long_regs: None,
            code64: false,
            mode_switched: false,
            installed: [0; 6],
            cs_base: 0,
            ldt: [None; 6],
            entry: GuestState::default(),
            exit: ExitRecord::new(ExitReason::BudgetExpired),
            exit_set: false,
            wire: RawExit::ZERO,
            exit_state: GuestState::default(),
            frame: EntryFrame::new(),
            entry_data_segs: EntrySegs::default(),
            sw: p.sw,
            altstack: p.altstack,
            clock: p.clock,
            timer: p.timer,
            start_ns: 0,
            budget_ns: 0,
            max_fills: 0,
            fill_ahead: 0,
            fault_ns: 0,
            icebp_rip: IcebpRip::After,
            in_guest: false,
            escaped: false,
            amd: p.amd,
            vdso: p.vdso,
        })
    }

    #[inline]
    fn is_ram(&self, ppn: u64) -> bool {
        ppn < self.ram_pages && self.ram_ok[(ppn / 64) as usize] & (1 << (ppn % 64)) != 0
    }

    /// Applies one MMU command.
    pub fn command(&mut self, kind: u32, addr: u64) -> Result<(), i32> {
        let ops = &mut self.host;
        match CommandKind::try_from(kind).map_err(|_| libc::EINVAL)? {
            CommandKind::FlushAll => self.shadow.flush_all(ops),
            CommandKind::FlushNonGlobal => self.shadow.flush_non_global(ops),
            CommandKind::InvalidatePage => self.shadow.invalidate(ops, addr >> 12),
            CommandKind::WriteProtectPhys => self.shadow.write_protect(ops, addr >> 12),
        }
    }

    /// Reads up to 15 instruction bytes at `rip` (CS-relative: linear in 64-bit code)
    /// through the guest's page tables (without setting A/D bits). Returns the number of bytes
    /// read.
    fn read_code(&self, rip: u64, buf: &mut [u8; 15]) -> usize {
        let ram_only = |pa: u64, b: &mut [u8]| self.is_ram(pa >> 12) && self.ram.read(pa, b);
        let lin32 = self.cs_base.wrapping_add(rip as u32);
        match &self.long_regs {
            Some(long) if self.code64 => paging::read_linear64(&self.ram, long, rip, buf, ram_only),
            // Compatibility mode: a 32-bit linear address through the 4-level tables.
            Some(long) => paging::read_linear64(&self.ram, long, u64::from(lin32), buf, ram_only),
            None => paging::read_linear(&self.ram, &self.regs, lin32, buf, ram_only),
        }
    }

    /// The two instruction bytes `n` bytes before `rip` (where the host reports a trap or a
    /// system call: after the instruction).
    fn code_bytes_before(&self, rip: u64, n: u64) -> Option<[u8; 2]> {
        let mut b = [0u8; 15];
        let got = self.read_code(rip.wrapping_sub(n), &mut b);
        (got >= 2).then_some([b[0], b[1]])
    }

    /// Whether the run's entry is 64-bit code (its exits are then read whole).
    #[inline]
    fn code64(&self) -> bool {
        self.code64
    }

    #[inline]
    fn set_exit(&mut self, reason: ExitReason) {
        self.exit.reason = reason;
        self.exit_set = true;
    }

    fn other_exception(&mut self, vector: u32, error_code: Option<u32>) {
        self.set_exit(ExitReason::OtherException {
            vector: vector.min(31) as u8,
            error_code,
        });
    }

    /// Ends the run as an escape. The exit state is the registers at the signal in the
    /// entry's code width (what [`Self::capture_state`] takes) with the entry's segments as
    /// installed: the stub executor hands it back for the guest's #GP(0) when it contains the
    /// escape (today's executor's library ignores it).
    fn escape(&mut self, ctx: &SignalContext<'_>, kind: EscapeKind, address: u64, diagnostic: u32) {
        self.set_exit(ExitReason::GuestEscape {
            kind,
            address,
            diagnostic,
        });
        self.capture_state(ctx);
        for (i, s) in self.exit_state.segs.iter_mut().enumerate() {
            *s = self.entry.segs[i];
            s.selector = self.installed[i];
            s.flags = 0;
        }
        self.escaped = true;
    }
}
