//! The stub executor's library side, for 32-bit and 64-bit guest code: the same contract as
//! [`Executor`] (budget, errors, death detection, plain-RAM map, fill limit, code-page log,
//! exit statistics), with guest code in a process that holds only S (the stub's code page, the
//! library's pages read-only, its own pages) and the guest mirrors. The monitor
//! ([`plex86_monitor`]) runs here, in the library, over guest RAM mapped here; its mirror
//! changes reach the stub as op batches that the stub's mapper thread carries out.
//!
//! One run: queued MMU commands and LDT writes go out as batches; the entry frame is written
//! to S; the Enter verdict wakes the guest thread, which waits for the batch, loads the data
//! segments and `rt_sigreturn`s. Each signal comes back through S (the kernel's frame on the
//! stub's alternate stack); the monitor classifies it: a fill queues a map op and answers
//! Resume (the guest thread waits for the mapper and returns through the kernel's frame), an
//! exit ends the run. The guest thread arms its own timer with the budget as it enters;
//! the library `tgkill`s SIGALRM only when that has not ended the run a little after the
//! budget (`wait.rs`); `signal.rs` tells the budget's signals from stale and foreign ones.
//!
//! * this file: configuration, start-up, the run and its acceptance;
//! * `batch.rs`: handing the op queue to the mapper and the verdicts to the guest thread;
//! * `wait.rs`: waiting for the stub: the budget signal, death and stop detection;
//! * `signal.rs`: one published signal: its frame, the budget's signal, the stub's timestamps;
//! * `published.rs`: the reading of a published signal, a pure function of the stub's pages;
//! * `host.rs`: the monitor's [`plex86_monitor::monitor::Host`] over the op queue;
//! * `contain.rs`: a guest escape costs the guest process a #GP(0): a fresh stub replaces
//!   the one it ran in.
//!
//! 64-bit code (CS.L=1 in long mode) runs too: entered on the host's 64-bit CS and SS with
//! the state's FS/GS bases (WRFSBASE/WRGSBASE in the stub), mirrored through the 4-level
//! walker, its exits read whole and its FS/GS bases at the exit taken from the handler's
//! RDFSBASE/RDGSBASE; a call into the vsyscall page is rewound to the guest's fetch there.
//! Compatibility-mode code (32-bit processes of a 64-bit guest) runs as 32-bit code does,
//! its fills through the 4-level walker.
//!
//! The stub-written pages are RW to guest code: every byte the library reads there after a
//! signal is checked by `published.rs` (or, for the state, by the exit checks after the
//! monitor), and the whole path is fuzzed through `crate::fuzzing` (`stub_region`).
//!
//! [`Executor`]: crate::Executor

mod batch;
mod contain;
pub(crate) mod host;
pub(crate) mod published;
pub(crate) mod signal;
mod wait;

use crate::child::ChildProcess;
use crate::driver::{check_config, locate_executor, MmuCommand};
use crate::error::DriverError;
use crate::protocol::stub::{self as layout, by_lib as lib, by_stub as stub, Verdict};
use crate::protocol::{ExitRecord, GuestState, RamRange, XSAVE_AREA_SIZE};
use crate::sys::{self, RamMap, SharedMapping};
use crate::validate::{
    check_reason_against_state, validate_entry_for, validate_exit_state, CodeModes,
};
use crate::{ExecutorConfig, XsaveInfo};
use host::StubHost;
use plex86_monitor::decode::IcebpRip;
use plex86_monitor::frame::{EntryFrame, FpxSwBytes, KStack};
use plex86_monitor::monitor::{GuestRam, HostParams, Monitor};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long each side polls a shared word before it sleeps on it (a futex wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Polling {
    /// Polls by the library (PAUSE, then yield).
    pub library: u32,
    /// Polls by the stub's guest thread and mapper (PAUSE).
    pub stub: u32,
}

impl Polling {
    /// Nobody polls: every hand-over is a futex wake.
    pub const SLEEP: Polling = Polling {
        library: 0,
        stub: 0,
    };
    /// Both sides poll 2,000 times before they sleep.
    pub const BOTH: Polling = Polling {
        library: 2000,
        stub: 2000,
    };
    /// The library polls 2,000 times, the stub sleeps at once.
    pub const LIBRARY: Polling = Polling {
        library: 2000,
        stub: 0,
    };
}

/// Where the stub's threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the host's scheduler puts them.
    Free,
    /// On the CPU the library runs on at each entry (re-pinned when the library has moved):
    /// every hand-over is then a wake-up on the same CPU, never an idle vCPU's.
    WithLibrary,
}

/// The gate's winner on the 2-vCPU VMs (docs/bench/issue14-gate.md): every hand-over a futex
/// wake (three pollers on two vCPUs starve each other), ...
pub const DEFAULT_POLLING: Polling = Polling::SLEEP;
/// ... both stub threads on the library's CPU (a wake of an idle vCPU costs 40-130 µs) ...
pub const DEFAULT_PLACEMENT: Placement = Placement::WithLibrary;
/// ... and a fill mirrors up to 16 following pages the guest has used already.
pub const DEFAULT_FILL_AHEAD: u32 = 16;

/// A stub process and the monitor that drives it.
#[derive(Debug)]
pub struct StubExecutor {
    /// `None` once the stub has ended (reaped) or been killed.
    child: ChildProcess,
    pid: u32,
    mapper_tid: i32,
    ctl: SharedMapping,
    _ctl_fd: OwnedFd,
    monitor: Box<Monitor<RamMap, StubHost>>,
    /// Where S is in the stub.
    base: u64,
    /// The last verdict's sequence number.
    req: u32,
    /// The last signal sequence number taken.
    exit_seen: u32,
    /// The last op batch handed to the mapper.
    map_seq: u32,
    /// The batch whose outcome (`MAP_ERR`) has been looked at (and whose ops were scrubbed).
    map_checked: u32,
    /// Ops in the last batch handed to the mapper.
    map_len: usize,
    polling: Polling,
    placement: Placement,
    pinned_to: Option<usize>,
    /// Scratch for the XSAVE part of a signal frame.
    fpstate: Vec<u8>,
    xsave: XsaveInfo,
    cpuid_faulting: bool,
    library_pid: u32,
    /// The stub's budget timer (its expiries carry this id).
    timer_id: u32,
    /// Whether runs arm the stub's timer (tests turn it off to see the library's signal).
    stub_timer: bool,
    /// Runs the library's own signal ended (the stub's timer did not).
    backstops: u64,
    run_may_have_executed: bool,
    /// How to start a replacement after a contained escape.
    relaunch: contain::Relaunch,
    /// Escapes contained by replacing the process.
    escapes_contained: u64,
    /// The guest thread, not stopped, left the budget's signal unanswered in this run.
    guest_thread_hung: bool,
}

/// Offset in the control memfd of the stub-written word `off`.
const fn st(off: usize) -> usize {
    layout::LIB_LEN + off
}

impl StubExecutor {
    /// Starts `plex86-executor --stub` as `config` says and waits until the stub is ready.
    /// `config.spin` and `config.budget_clock` do not apply (see [`StubExecutor::set_polling`];
    /// the budget is the library's CLOCK_MONOTONIC).
    pub fn spawn(config: ExecutorConfig<'_>) -> Result<StubExecutor, DriverError> {
        check_config(&config)?;
        let path = locate_executor(&config)?;
        let relaunch = contain::Relaunch::of(&config, path.clone())?;
        let ctl_fd = sys::memfd(c"plex86-stub-control", layout::CONTROL_LEN as u64)?;
        let ctl = SharedMapping::new(ctl_fd.as_fd(), layout::CONTROL_LEN, 0)?;
        ctl.atomic_u32(lib::SPIN)
            .store(DEFAULT_POLLING.stub, Ordering::Relaxed);
        let base = config.stub_base;
        let base_arg = format!("{base:#x}");
        let mut child =
            sys::spawn_executor(&path, config.ram_fd, ctl_fd.as_fd(), &["--stub", &base_arg])
                .map_err(|e| DriverError::CannotStart(format!("{}: {e}", path.display())))?;
        let report = match wait::await_ready(&mut child, &ctl, &path, config.startup_timeout)
            .and_then(|()| LauncherReport::read(&ctl))
        {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let ram_map = RamMap::new(config.ram_fd, config.ram_size)?;
        let ranges: Vec<RamRange> = config
            .ram_map
            .iter()
            .map(|r| RamRange {
                start: r.start,
                end: r.end,
            })
            .collect();
        let mut monitor = stub_monitor(
            ram_map,
            base,
            config.ram_size,
            &ranges,
            report.sw,
            host_is_amd(),
            report.vdso,
        );
        monitor.icebp_rip = report.icebp_rip;
        monitor.fault_ns = report.fault_ns;
        monitor.max_fills = config.max_fills_per_run;
        Ok(StubExecutor {
            pid: child.id(),
            child: ChildProcess::new(child),
            mapper_tid: report.mapper_tid,
            ctl,
            _ctl_fd: ctl_fd,
            monitor,
            base,
            req: 0,
            exit_seen: 0,
            map_seq: 0,
            map_checked: 0,
            map_len: 0,
            polling: DEFAULT_POLLING,
            placement: DEFAULT_PLACEMENT,
            pinned_to: None,
            fpstate: vec![0; XSAVE_AREA_SIZE],
            xsave: XsaveInfo::from_host(
                report.sw.xstate_size,
                report.sw.xfeatures & crate::protocol::xsave::xfeature::TRANSFERRED,
            ),
            cpuid_faulting: report.cpuid_faulting,
            library_pid: std::process::id(),
            timer_id: report.timer_id,
            stub_timer: true,
            backstops: 0,
            run_may_have_executed: false,
            relaunch,
            escapes_contained: 0,
            guest_thread_hung: false,
        })
    }

    /// Lets each fill also mirror up to `pages` following pages the guest has used already
    /// (0 maps only the faulting page; default [`DEFAULT_FILL_AHEAD`]).
    pub fn set_fill_ahead(&mut self, pages: u32) {
        self.monitor.fill_ahead = pages;
    }

    /// Sets where the stub's threads run (default [`DEFAULT_PLACEMENT`]).
    pub fn set_placement(&mut self, p: Placement) {
        self.placement = p;
        self.pinned_to = None;
    }

    /// Sets who polls before sleeping (default [`DEFAULT_POLLING`]).
    pub fn set_polling(&mut self, p: Polling) {
        self.polling = p;
        self.ctl
            .atomic_u32(lib::SPIN)
            .store(p.stub, Ordering::Relaxed);
    }

    /// The code this executor runs natively: 32-bit code, and in long mode 64-bit and
    /// compatibility-mode code (its process holds only S, in a 4 GiB block above 4 GiB the
    /// mirror never uses, and the guest's mirrors; its monitor walks 4-level tables).
    pub fn code_modes(&self) -> CodeModes {
        CodeModes::Legacy32Long64AndCompat
    }

    /// The stub's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid().map(|_| self.pid)
    }

    /// The XSAVE layout transferred (the host's, as for [`crate::Executor::xsave_info`]).
    pub fn xsave_info(&self) -> XsaveInfo {
        self.xsave
    }

    /// Whether native CPUID faults and exits as [`crate::ExitReason::Cpuid`] (the launcher turned
    /// CPUID faulting on); otherwise native code reads the host's CPUID.
    pub fn cpuid_faulting(&self) -> bool {
        self.cpuid_faulting
    }

    /// Whether the guest thread sleeps waiting for a verdict (for tests that must stop or kill
    /// it exactly then).
    #[doc(hidden)]
    pub fn asleep_waiting_for_request(&self) -> bool {
        self.stub_word(stub::SLEEPING) != 0 && self.stub_word(stub::ACK) == self.req
    }

    /// How many runs the library's own SIGALRM ended because the stub's timer had not
    /// [`BACKSTOP`](wait::BACKSTOP) after the budget (a host too loaded to deliver it, or guest
    /// code that re-armed it).
    pub fn budget_backstops(&self) -> u64 {
        self.backstops
    }

    /// Leaves the stub's budget timer disarmed, so that only the library's signal ends a run
    /// (for tests of that path).
    #[doc(hidden)]
    pub fn disarm_stub_timer(&mut self) {
        self.stub_timer = false;
    }

    /// Sends `sig` to the guest thread from the library, outside the budget logic: how a
    /// stale budget signal looks (for tests).
    #[doc(hidden)]
    pub fn signal_guest_thread(&self, sig: i32) -> std::io::Result<()> {
        sys::tgkill(self.pid, self.pid, sig)
    }

    /// Pins both stub threads to the library's current CPU if they are not there already.
    fn place(&mut self) -> Result<(), DriverError> {
        if self.placement != Placement::WithLibrary {
            return Ok(());
        }
        let Some(cpu) = sys::current_cpu() else {
            return Ok(());
        };
        if self.pinned_to == Some(cpu) {
            return Ok(());
        }
        for tid in [self.pid as i32, self.mapper_tid] {
            if let Err(e) = sys::pin_thread(tid, cpu) {
                // A thread that is gone: the stub died; say so rather than "no such process".
                // Its threads are gone before the process can be reaped, so wait a little.
                self.reap_if_dead_within(Duration::from_secs(1))?;
                return Err(DriverError::Io(e));
            }
        }
        self.pinned_to = Some(cpu);
        Ok(())
    }

    /// Applies `commands` to the mirror without entering the guest.
    pub fn apply_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError> {
        self.check_alive()?;
        self.queue_commands(commands)?;
        self.flush_ops()
    }

    fn queue_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError> {
        for c in commands {
            let raw = c.to_raw();
            // The queue is unbounded, so only a bad kind fails (never from an MmuCommand).
            self.monitor
                .command(raw.kind, raw.addr)
                .map_err(|e| DriverError::Io(std::io::Error::from_raw_os_error(e)))?;
        }
        Ok(())
    }

    /// Runs the guest natively from `state` for at most about `budget` of host time, after
    /// applying `commands`, as [`crate::Executor::run`] does. On return `state` holds the
    /// guest state before the instruction that ended the run. Unlike today's executor, a
    /// guest escape (or a stub tampered with by guest code) ends the run with
    /// [`ExitRecord::escape_contained`]: a fresh stub has replaced this one and `state` is the
    /// one at which the guest process takes #GP(0) (contain.rs).
    pub fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        self.run_may_have_executed = false;
        self.guest_thread_hung = false;
        self.check_alive()?;
        validate_entry_for(state, self.xsave, self.code_modes())?;
        if state.code64() && guest_maps_s(&self.monitor.ram, self.base, state) {
            return Err(DriverError::StubRegionMapped { base: self.base });
        }
        self.place()?;
        self.queue_commands(commands)?;
        let m = &mut self.monitor;
        m.entry = *state;
        m.prepare_entry()
            .map_err(|e| DriverError::Io(std::io::Error::from_raw_os_error(e)))?;
        // The frame's XSAVE pointer is where the stub sees the frame, not where it is built.
        let frame_at = self.base + layout::LIB + lib::FRAME as u64;
        m.frame.uc.mc.fpstate = frame_at + std::mem::offset_of!(EntryFrame, fpstate) as u64;
        self.ctl.write_plain(lib::FRAME, &m.frame);
        self.ctl.write_plain(lib::SEGS, &m.entry_data_segs);
        let id = (m.entry.rflags & (1 << 21)) as u32;
        self.ctl
            .atomic_u32(lib::ENTRY_ID)
            .store(id, Ordering::Relaxed);
        let mut run = signal::RunClock::start(budget);
        let b = if self.stub_timer { run.budget_ns } else { 0 }; // 0 disarms
                                                                 // struct itimerspec: no interval, the budget from the arming.
        for (i, v) in [0, 0, b / 1_000_000_000, b % 1_000_000_000]
            .into_iter()
            .enumerate()
        {
            self.ctl
                .atomic_u64(lib::BUDGET + 8 * i)
                .store(v, Ordering::Relaxed);
        }
        self.clear_timestamps();
        self.monitor.in_guest = true;
        let ran = self.answer(Verdict::Enter).and_then(|()| {
            let enter = self.req;
            self.run_may_have_executed = true;
            self.guest_loop(&mut run).inspect_err(|_| {
                // Nothing ran unless the guest thread took the Enter verdict (or a later one).
                let taken = self.stub_word(stub::ACK).wrapping_sub(enter);
                self.run_may_have_executed = taken < 1 << 31;
            })
        });
        self.monitor.in_guest = false;
        if let Err(e) = ran {
            // Guest code may have tampered with the stub: contained like an escape (contain.rs).
            return self.contain_tampering(e);
        }
        match accept_run(
            &mut self.monitor,
            &signal::Live(&self.ctl),
            &run,
            state,
            self.xsave,
        ) {
            Err(e) => Err(self.corrupted(e)),
            // A guest escape: the stub is not trusted any more; a fresh one replaces it and
            // the guest process takes a #GP(0) (contain.rs).
            Ok(None) => self.contain(state),
            Ok(Some(after)) => {
                *state = after;
                Ok(&self.monitor.exit)
            }
        }
    }

    /// After [`StubExecutor::run`] failed: whether guest code may have run natively in it
    /// (as [`crate::Executor::failed_run_may_have_executed`]): `false` when the guest thread
    /// never took the run's Enter verdict.
    pub fn failed_run_may_have_executed(&self) -> bool {
        self.run_may_have_executed
    }

    /// Signals until the monitor ends the run.
    fn guest_loop(&mut self, run: &mut signal::RunClock) -> Result<(), DriverError> {
        loop {
            self.await_signal(run)?;
            match self.on_signal(run)? {
                plex86_monitor::frame::SignalAction::Resume => self.answer(Verdict::Resume)?,
                plex86_monitor::frame::SignalAction::ExitToHost => return Ok(()),
            }
        }
    }

    fn stub_word(&self, off: usize) -> u32 {
        self.ctl.atomic_u32(st(off)).load(Ordering::Relaxed)
    }

    /// Kills the stub after it reported something no honest stub could.
    fn corrupted(&mut self, what: String) -> DriverError {
        self.kill();
        DriverError::CorruptedSharedMemory(what)
    }
}

/// The monitor of a stub with S at `base` whose kernel frames have `sw`'s XSAVE parameters:
/// the alternate stack in S, the stub's fill-ahead.
pub(crate) fn stub_monitor<R: GuestRam>(
    ram: R,
    base: u64,
    ram_size: u64,
    ranges: &[RamRange],
    sw: FpxSwBytes,
    amd: bool,
    vdso: u64,
) -> Box<Monitor<R, StubHost>> {
    let params = HostParams {
        sw,
        altstack: KStack {
            sp: base + layout::STUB + stub::ALTSTACK as u64,
            flags: 0,
            pad: 0,
            size: stub::ALTSTACK_LEN as u64,
        },
        clock: libc::CLOCK_MONOTONIC,
        timer: 0,
        vdso,
        amd,
    };
    let mut m = Monitor::new(ram, StubHost::new(base), ram_size, ranges, params);
    m.fill_ahead = DEFAULT_FILL_AHEAD;
    m
}

/// Whether 64-bit `state`'s page tables map any page where S (at `base`) lies (present at
/// every level, whatever its permissions). Native code there would use S's pages, not the
/// guest's: such a process runs emulated. (Pages elsewhere in S's 4 GiB block are never
/// mirrored, so their accesses are emulated one by one.)
pub(crate) fn guest_maps_s(
    ram: &impl guest_paging::PhysMemory,
    base: u64,
    state: &GuestState,
) -> bool {
    use guest_paging::{walk64, Access, LongRegs, WalkError};
    let regs = LongRegs::new(
        state.cr3,
        state.cr4,
        state.efer,
        plex86_monitor::monitor::GUEST_MAXPHYADDR,
    );
    (base..base + layout::S_LEN).step_by(4096).any(|page| {
        match walk64(ram, &regs, page, Access::Read, false) {
            Ok(_) => true,
            // A present page the walk refuses (supervisor, reserved bits) is mapped too.
            Err(WalkError::Fault(code)) => code & 1 != 0,
            Err(_) => false,
        }
    })
}

/// The checks of a run the monitor ended (entered with `entry`): its times from the stub's
/// timestamps, then, as for today's executor, the state against the entry, rebuilt in the
/// guest's terms (native selectors back to the guest's, XSAVE normalised). `None` after a
/// guest escape (the state is not meaningful; the caller kills the stub); `Err` says why no
/// honest stub could have left this.
pub(crate) fn accept_run<R: GuestRam>(
    m: &mut Monitor<R, StubHost>,
    pages: &(impl published::Pages + ?Sized),
    run: &signal::RunClock,
    entry: &GuestState,
    xsave: XsaveInfo,
) -> Result<Option<GuestState>, String> {
    if !m.exit_set {
        // As today's library rejects a record without a reason (never from this monitor).
        return Err("an exit without a reason".into());
    }
    signal::finish_times(m, pages, run)?;
    if m.exit.reason.ends_executor() {
        return Ok(None);
    }
    let after = validate_exit_state(entry, &m.exit_state, xsave)?;
    check_reason_against_state(&m.exit.reason, entry, &after)?;
    Ok(Some(after))
}

impl Drop for StubExecutor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the launcher measured and reported at start-up (before any guest code ran: trusted as
/// far as it is plausible).
struct LauncherReport {
    sw: FpxSwBytes,
    icebp_rip: IcebpRip,
    fault_ns: u64,
    cpuid_faulting: bool,
    mapper_tid: i32,
    timer_id: u32,
    vdso: u64,
}

impl LauncherReport {
    fn read(ctl: &SharedMapping) -> Result<LauncherReport, DriverError> {
        let word = |off: usize| ctl.atomic_u64(st(off)).load(Ordering::Relaxed);
        let sw_words = word(stub::XSAVE_SW);
        let sw = FpxSwBytes {
            extended_size: sw_words as u32,
            xstate_size: (sw_words >> 32) as u32,
            xfeatures: word(stub::XSAVE_SW + 8),
        };
        let (cpuid, icebp, fault_ns) = (
            word(stub::CPUID_FAULTING),
            word(stub::ICEBP_AT),
            word(stub::FAULT_NS),
        );
        let mapper_tid = ctl.atomic_u32(st(stub::MAPPER_TID)).load(Ordering::Relaxed);
        let timer_id = ctl.atomic_u32(st(stub::TIMER_ID)).load(Ordering::Relaxed);
        let vdso = word(stub::VDSO_BASE);
        if sw.xstate_size as usize > XSAVE_AREA_SIZE || sw.xstate_size < 576 {
            return Err(DriverError::CorruptedSharedMemory(format!(
                "XSAVE frame size {}",
                sw.xstate_size
            )));
        }
        if cpuid > 1
            || icebp > 1
            || fault_ns > 1_000_000
            || mapper_tid == 0
            || timer_id > i32::MAX as u32
            || vdso % 4096 != 0
            || vdso >= layout::USER_END
        {
            return Err(DriverError::CorruptedSharedMemory(format!(
                "start-up report: CPUID faulting {cpuid}, ICEBP {icebp}, fault {fault_ns} ns, mapper {mapper_tid}, timer {timer_id}, vDSO {vdso:#x}"
            )));
        }
        Ok(LauncherReport {
            sw,
            icebp_rip: if icebp == 1 {
                IcebpRip::At
            } else {
                IcebpRip::After
            },
            fault_ns,
            cpuid_faulting: cpuid == 1,
            mapper_tid: mapper_tid as i32,
            timer_id,
            vdso,
        })
    }
}

fn host_is_amd() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.contains("AuthenticAMD") || s.contains("HygonGenuine"))
        .unwrap_or(false)
}
