//! The stub executor's reading of a published signal, for the `stub_region` fuzz target: the
//! stub-written pages as bytes, read (`stub::published`), classified by a monitor over a
//! zeroed fake RAM and, for an exit, checked as [`crate::stub::StubExecutor::run`] checks it.
//! The same functions run; only the process, the pages' memory and guest RAM are not there.

use super::Accepted;
use crate::protocol::stub::{self as layout, by_stub as stub};
use crate::stub::host::StubHost;
use crate::stub::published::{ucontext_bytes, Known};
use crate::stub::signal::{take_signal, RunClock};
use crate::stub::{accept_run, guest_maps_s, stub_monitor};
use crate::validate::{validate_entry_for, CodeModes};
use crate::{DriverError, GuestState, XsaveInfo};
use plex86_monitor::decode::IcebpRip;
use plex86_monitor::frame::{FpxSwBytes, SignalAction};
use plex86_monitor::monitor::{GuestRam, Monitor};
use std::cell::RefCell;

/// Size of the stub-written pages: what [`StubRun::accept`] reads.
pub const STUB_PAGES_LEN: usize = layout::STUB_LEN;

/// What the library knows of a stub run when a signal arrives (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug)]
pub struct StubRunContext {
    /// Where S is in the stub (see `plex86_protocol::stub::check_base`).
    pub base: u64,
    /// The host's XSAVE layout (the stub's kernel frames have its size).
    pub xsave: XsaveInfo,
    /// Guest RAM size (a multiple of 4 KiB; the fake RAM is zeroed: no page tables).
    pub ram_size: u64,
    /// The stub's budget timer id.
    pub timer_id: u32,
    /// The library's process id.
    pub library_pid: u32,
    /// The run's budget.
    pub budget_ns: u64,
    /// When the Enter verdict went out (non-zero: a zero timestamp is "unset").
    pub posted_ns: u64,
    /// When the library reads the signal.
    pub now_ns: u64,
    /// Whether the library has sent its own SIGALRM in this run.
    pub alarm_sent: bool,
    /// The stub's timestamp of the run's previous signal, when that was resumed as a fill.
    pub fill_signal_ns: Option<u64>,
    /// The launcher's fault round-trip measure (≤ 1 ms).
    pub fault_ns: u64,
    /// Fills that end a run (0: no limit).
    pub max_fills: u32,
    /// The host is AMD.
    pub amd: bool,
}

/// What the library made of a published signal.
#[derive(Clone, Debug)]
pub enum StubResponse {
    /// The guest goes on (a fill, an ignored or stale signal).
    Resumed,
    /// The run ended with this exit and state (boxed: a state is 4.5 KiB).
    Exit(Box<Accepted>),
}

/// A signal an honest stub publishes for an unchanged entry state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HonestSignal {
    /// The stub's timer: SIGALRM, `SI_TIMER` with its id (the budget is spent by `now_ns`).
    BudgetTimer,
    /// The library's backstop: SIGALRM, `SI_TKILL` from the library (it sent one).
    Backstop,
    /// A page fault (SIGSEGV, #PF) at a linear address.
    PageFault {
        /// CR2.
        linear: u64,
        /// A write (else a read).
        write: bool,
    },
    /// An invalid opcode (SIGILL, #UD).
    InvalidOpcode,
}

/// Guest RAM in a vector: zeroed, so every page walk faults at its first level.
struct VecRam(RefCell<Vec<u8>>);

impl guest_paging::PhysMemory for VecRam {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.read(pa, &mut b).then(|| u32::from_le_bytes(b))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.read(pa, &mut b).then(|| u64::from_le_bytes(b))
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let ok = self.read_u32(pa)? == old;
        if ok {
            self.write(pa, &new.to_le_bytes());
        }
        Some(ok)
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let ok = self.read_u64(pa)? == old;
        if ok {
            self.write(pa, &new.to_le_bytes());
        }
        Some(ok)
    }
}

impl VecRam {
    fn write(&self, pa: u64, b: &[u8]) {
        self.0.borrow_mut()[pa as usize..pa as usize + b.len()].copy_from_slice(b);
    }
}

impl GuestRam for VecRam {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let m = self.0.borrow();
        let range = usize::try_from(pa)
            .ok()
            .and_then(|s| Some(s..s.checked_add(buf.len())?));
        match range.and_then(|r| m.get(r)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// One stub run entered with a state, ready to take one published signal.
pub struct StubRun {
    monitor: Box<Monitor<VecRam, StubHost>>,
    entry: GuestState,
    ctx: StubRunContext,
}

impl std::fmt::Debug for StubRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubRun").field("ctx", &self.ctx).finish()
    }
}

/// si_code of a #PF on an unmapped page, and of #UD (the kernel's; not in `libc`).
const SEGV_MAPERR: i32 = 1;
const ILL_ILLOPN: i32 = 2;

// Where the honest frame lies in the alternate stack (offsets in the stub's pages).
const UC_AT: usize = stub::ALTSTACK + 0x8008;
const INFO_AT: usize = UC_AT + 0x140;
const FP_AT: usize = stub::ALTSTACK + 0x9000;

impl StubRun {
    /// Enters `entry` as [`crate::stub::StubExecutor::run`] does (its entry rules, S not
    /// mapped by 64-bit code, the monitor's entry frame); the error is its error.
    pub fn new(entry: &GuestState, ctx: &StubRunContext) -> Result<StubRun, DriverError> {
        validate_entry_for(entry, ctx.xsave, CodeModes::Legacy32AndLong64)?;
        let ram = VecRam(RefCell::new(vec![0; ctx.ram_size as usize]));
        if entry.code64() && guest_maps_s(&ram, ctx.base, entry) {
            return Err(DriverError::StubRegionMapped { base: ctx.base });
        }
        let sw = FpxSwBytes {
            extended_size: ctx.xsave.size + 4,
            xstate_size: ctx.xsave.size,
            xfeatures: ctx.xsave.features,
        };
        let ranges = [crate::protocol::RamRange {
            start: 0,
            end: ctx.ram_size,
        }];
        let mut m = stub_monitor(ram, ctx.base, ctx.ram_size, &ranges, sw, ctx.amd, 0);
        m.icebp_rip = IcebpRip::After;
        m.fault_ns = ctx.fault_ns;
        m.max_fills = ctx.max_fills;
        m.entry = *entry;
        m.prepare_entry()
            .map_err(|e| DriverError::Io(std::io::Error::from_raw_os_error(e)))?;
        m.in_guest = true;
        Ok(StubRun {
            monitor: m,
            entry: *entry,
            ctx: *ctx,
        })
    }

    /// The stub's pages as an honest stub leaves them when `sig` interrupts the entry state
    /// at once: the kernel's frame (the entry frame's registers and XSAVE image) on the
    /// alternate stack, the entry's data selectors and bases, timestamps at `posted_ns`
    /// (entry), `now_ns` (the signal) and the previous fill's signal (return).
    pub fn honest_pages(&self, sig: HonestSignal) -> Vec<u8> {
        let (c, m) = (&self.ctx, &self.monitor);
        let mut p = vec![0u8; STUB_PAGES_LEN];
        let mut put = |off: usize, b: &[u8]| p[off..off + b.len()].copy_from_slice(b);
        let at = |off: usize| c.base + layout::STUB + off as u64;
        let (signo, code, word4, trap, err, cr2) = match sig {
            HonestSignal::BudgetTimer => (libc::SIGALRM, libc::SI_TIMER, c.timer_id, 0, 0, 0),
            HonestSignal::Backstop => (libc::SIGALRM, libc::SI_TKILL, c.library_pid, 0, 0, 0),
            HonestSignal::PageFault { linear, write } => {
                let err = 4 | u64::from(write) << 1;
                (libc::SIGSEGV, SEGV_MAPERR, linear as u32, 14, err, linear)
            }
            HonestSignal::InvalidOpcode => (libc::SIGILL, ILL_ILLOPN, 0, 6, 0, 0),
        };
        let mut uc = m.frame.uc;
        uc.mc.trapno = trap;
        uc.mc.err = err;
        uc.mc.cr2 = cr2;
        uc.mc.fpstate = at(FP_AT);
        put(UC_AT, &ucontext_bytes(&uc));
        let mut info = [0u32; 8];
        info[0] = signo as u32;
        info[2] = code as u32;
        info[4] = word4;
        if signo == libc::SIGSEGV {
            info[5] = (cr2 >> 32) as u32; // si_addr is a u64
        }
        for (i, w) in info.iter().enumerate() {
            put(INFO_AT + 4 * i, &w.to_le_bytes());
        }
        // The kernel's XSAVE frame: the image, its software bytes and the MAGIC2 trailer.
        let fp_len = c.xsave.size as usize + 4;
        put(FP_AT, &m.frame.fpstate[..fp_len]);
        let segs = m.entry_data_segs;
        put(stub::SIG, &(signo as u32).to_le_bytes());
        put(stub::INFO, &at(INFO_AT).to_le_bytes());
        put(stub::UC, &at(UC_AT).to_le_bytes());
        for (i, s) in segs.sel.iter().enumerate() {
            put(stub::SEGS + 2 * i, &s.to_le_bytes());
        }
        put(stub::FS_BASE, &segs.fs_base.to_le_bytes());
        put(stub::GS_BASE, &segs.gs_base.to_le_bytes());
        for (off, t) in [
            (stub::ENTER_TS, Some(c.posted_ns)),
            (stub::SIGNAL_TS, Some(c.now_ns)),
            (stub::RESUME_TS, c.fill_signal_ns),
        ] {
            let t = t.unwrap_or(0);
            put(off, &(t / 1_000_000_000).to_le_bytes());
            put(off + 8, &(t % 1_000_000_000).to_le_bytes());
        }
        put(stub::TIMER_ID, &c.timer_id.to_le_bytes());
        p
    }

    /// Takes the signal published in `pages` (zero-extended or cut to [`STUB_PAGES_LEN`]) as
    /// the library does: read, classified and, for an exit, checked. A rejection is
    /// [`DriverError::CorruptedSharedMemory`] (the stub would be killed).
    pub fn accept(mut self, pages: &[u8]) -> Result<StubResponse, DriverError> {
        let mut bytes = pages[..pages.len().min(STUB_PAGES_LEN)].to_vec();
        bytes.resize(STUB_PAGES_LEN, 0);
        let c = &self.ctx;
        let known = Known {
            base: c.base,
            timer_id: c.timer_id,
            library_pid: c.library_pid,
            budget_ns: c.budget_ns,
            posted_ns: c.posted_ns,
            now_ns: c.now_ns,
            alarm_sent: c.alarm_sent,
            fill_signal_ns: c.fill_signal_ns,
        };
        let mut run = RunClock::at(c.budget_ns, c.posted_ns);
        run.fill_signal_ns = c.fill_signal_ns;
        let mut fpstate = vec![0; crate::protocol::XSAVE_AREA_SIZE];
        let m = &mut self.monitor;
        let taken = take_signal(m, &bytes[..], &known, &mut run, &mut fpstate)
            .map_err(DriverError::CorruptedSharedMemory)?;
        if taken.action == SignalAction::Resume {
            return Ok(StubResponse::Resumed);
        }
        m.in_guest = false;
        let state = accept_run(m, &bytes[..], &run, &self.entry, c.xsave)
            .map_err(DriverError::CorruptedSharedMemory)?;
        Ok(StubResponse::Exit(Box::new(Accepted {
            exit: m.exit.clone(),
            state: state.unwrap_or(self.entry),
        })))
    }
}

/// Enters `entry` ([`StubRun::new`]) and takes the signal in `pages` ([`StubRun::accept`]).
pub fn accept_stub_signal(
    entry: &GuestState,
    ctx: &StubRunContext,
    pages: &[u8],
) -> Result<StubResponse, DriverError> {
    StubRun::new(entry, ctx)?.accept(pages)
}

#[cfg(test)]
mod tests;
