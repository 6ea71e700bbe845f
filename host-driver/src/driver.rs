//! The library side: spawning the executor and driving runs over the control region.

use crate::error::{DeathCause, DriverError};
use crate::exit::{decode_reason, Exit, ExitReason};
use crate::protocol::{
    self, cmd, guest_selector, native_selector, req, seg, status, ExecArea, GuestState, LibArea,
    RamRange, RawCommand, Segment, EXEC_AREA_OFFSET, LDT_MIRROR_ENTRIES, MAX_CODE_PAGES,
    MAX_COMMANDS, MAX_RAM_RANGES, REGION_SIZE, SEG_NOT_INSTALLED,
};
use crate::sys::{self, SharedMapping};
use std::mem::offset_of;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Name of the executor binary.
pub const EXECUTOR_NAME: &str = "plex86-executor";
/// Environment variable naming the executor binary when it is not next to this library.
pub const EXECUTOR_ENV: &str = "PLEX86_EXECUTOR";

/// The executor's default place: [`EXECUTOR_NAME`] in the directory of the shared object or
/// executable that contains this library (`None` when the loader cannot say which that is).
pub fn executor_next_to_module() -> Option<PathBuf> {
    let module = sys::current_module_path()?;
    Some(module.parent()?.join(EXECUTOR_NAME))
}

/// Default polls of the sequence word before sleeping on a futex: the first
/// [`protocol::SPIN_PAUSES`] PAUSE, the rest `sched_yield` (so that a poller sharing a CPU with
/// the other side hands it over). Measured on the 2-vCPU EPYC VMs: a cross-process futex wake
/// costs ~50 µs there (the sleeping vCPU is woken from idle); polling brings exit + re-entry
/// to ~7 µs.
pub const DEFAULT_SPIN: u32 = 200;

/// Which clock the executor's budget timer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BudgetClock {
    /// `CLOCK_MONOTONIC` (a high-resolution timer: precise slices; counts time the executor
    /// was preempted too). The default.
    #[default]
    Monotonic,
    /// The executor thread's CPU-time clock (charges only CPU time, but the kernel checks
    /// CPU-time timers at the scheduler tick, so expiry can be late by up to a tick).
    ThreadCpuTime,
}

/// Configuration of [`Executor::spawn`].
#[derive(Debug)]
pub struct ExecutorConfig<'a> {
    /// The executor binary. Default: `plex86-executor` next to the shared object or executable
    /// that contains this library, else the path in the `PLEX86_EXECUTOR` environment variable.
    pub executor_path: Option<PathBuf>,
    /// The guest-RAM memfd (guest-physical address = file offset).
    pub ram_fd: BorrowedFd<'a>,
    /// Size of guest RAM in bytes (a multiple of 4 KiB, at most the file's size).
    pub ram_size: u64,
    /// Guest-physical ranges that are plain RAM (page aligned). Only pages inside them are
    /// mirrored; accesses elsewhere exit as [`ExitReason::NeedsEmulation`].
    pub ram_map: Vec<Range<u64>>,
    /// Clock of the budget timer.
    pub budget_clock: BudgetClock,
    /// Spin iterations on the sequence word before sleeping on the futex (both sides).
    pub spin: u32,
    /// Demand fills after which a run ends with [`ExitReason::FillLimit`] (0 = no limit). A run
    /// that only mirrors pages (each fill costs about 8 µs, far more than the emulator needs
    /// for an access) can then be handed back to the emulator.
    pub max_fills_per_run: u32,
    /// How long to wait for the executor's setup.
    pub startup_timeout: Duration,
}

impl<'a> ExecutorConfig<'a> {
    /// A configuration where all of `[0, ram_size)` is plain RAM.
    pub fn new(ram_fd: BorrowedFd<'a>, ram_size: u64) -> Self {
        ExecutorConfig {
            executor_path: None,
            ram_fd,
            ram_size,
            ram_map: std::iter::once(0..ram_size).collect(),
            budget_clock: BudgetClock::default(),
            spin: DEFAULT_SPIN,
            max_fills_per_run: 0,
            startup_timeout: Duration::from_secs(20),
        }
    }
}

/// An MMU command, applied by the executor before the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmuCommand {
    /// Drop every mirrored page (e.g. after a CR3 load or a paging-mode change).
    FlushAll,
    /// Drop every mirrored page that is not global (a CR3 load with CR4.PGE).
    FlushNonGlobal,
    /// Drop the mirror of the page containing this linear address (INVLPG).
    InvalidatePage(u32),
    /// Write-protect every mirror of this guest-physical page: the emulator holds decoded code
    /// from it. A native write is logged in [`Exit::code_pages_written`].
    WriteProtectPhysPage(u64),
}

impl MmuCommand {
    fn to_raw(self) -> RawCommand {
        let (kind, addr) = match self {
            MmuCommand::FlushAll => (cmd::FLUSH_ALL, 0),
            MmuCommand::FlushNonGlobal => (cmd::FLUSH_NON_GLOBAL, 0),
            MmuCommand::InvalidatePage(l) => (cmd::INVALIDATE_PAGE, u64::from(l)),
            MmuCommand::WriteProtectPhysPage(p) => (cmd::WRITE_PROTECT_PHYS, p),
        };
        RawCommand { kind, pad: 0, addr }
    }
}

/// The XSAVE layout the executor transfers: the host CPU's standard (non-compacted) format.
/// Component offsets are the host's (CPUID leaf 0xD) and differ between CPUs: e.g. AMD Zen 4
/// has no MPX area, so the opmask state is at 832 there and at 1088 on Intel. Whoever builds
/// the image (bochs-ffi, from Bochs's registers) must use these offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveInfo {
    /// Bytes of [`crate::XsaveImage`] that are transferred (standard format).
    pub size: u32,
    /// Components the host supports for guests (the most a guest XCR0 may enable).
    pub features: u64,
    /// (offset, size) of components 2..=7 (index = XCR0 bit); (0, 0) when absent. Components
    /// 0 and 1 live in the legacy FXSAVE area (bytes 0..512).
    pub components: [(u32, u32); 8],
}

impl XsaveInfo {
    fn from_host(size: u32, features: u64) -> Self {
        let mut components = [(0, 0); 8];
        for (bit, c) in components.iter_mut().enumerate().skip(2) {
            if features & (1 << bit) != 0 {
                let r = std::arch::x86_64::__cpuid_count(0xd, bit as u32);
                *c = (r.ebx, r.eax);
            }
        }
        XsaveInfo {
            size,
            features,
            components,
        }
    }
}

/// A running executor process.
#[derive(Debug)]
pub struct Executor {
    child: Option<Child>,
    region: SharedMapping,
    _control_fd: OwnedFd,
    seq: u32,
    dead: Option<DeathCause>,
    xsave: XsaveInfo,
    cpuid_faulting: bool,
    ram_size: u64,
    spin: u32,
    code_pages: Vec<u64>,
    run_may_have_executed: bool,
}

const REQ_SEQ: usize = offset_of!(LibArea, req_seq);
const RESP_SEQ: usize = EXEC_AREA_OFFSET + offset_of!(ExecArea, resp_seq);
const EXEC_SLEEPING: usize = EXEC_AREA_OFFSET + offset_of!(ExecArea, exec_sleeping);
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// How long past its budget a run (or a command-only request) may take before the executor is
/// declared unresponsive and killed: generous for a loaded 2-core host, short enough that the
/// emulator learns of a stopped executor within 5 s.
pub const RESPONSE_GRACE: Duration = Duration::from_secs(4);
/// How long before a run's budget ends the library stops sleeping and polls: the ~40 µs a
/// futex-woken thread needs to run again here, the default 50 µs timer slack of the timed
/// sleep, and margin (120 µs measured slightly worse than 200).
const WAKE_LEAD: Duration = Duration::from_micros(200);
/// How long the library polls right after posting a run before it sleeps: a run that ends at
/// once (a system call, a page fault) answers within a few µs, and catching that answer by
/// polling spares it the wake-up of a sleeping thread (exit + re-entry in host-driver's bench:
/// 7.6 µs with it, 20-31 µs without).
const HEAD_POLL: Duration = Duration::from_micros(20);
/// How long past a run's budget the library keeps polling: the budget timer's overshoot
/// (8-20 µs) and the executor's exit path, with margin.
const POLL_TAIL: Duration = Duration::from_micros(200);

/// One polling step: PAUSE for the first [`protocol::SPIN_PAUSES`] polls, then yield, so that a
/// poller sharing a CPU with the other side hands it over instead of burning its time slice.
fn poll_pause(i: u32) {
    if i < protocol::SPIN_PAUSES {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn locate_executor(cfg: &ExecutorConfig<'_>) -> Result<PathBuf, DriverError> {
    if let Some(p) = &cfg.executor_path {
        use std::os::unix::fs::PermissionsExt;
        return match std::fs::metadata(p) {
            Err(e) => Err(DriverError::ExecutorNotFound(format!(
                "{}: {e}",
                p.display()
            ))),
            Ok(m) if !m.is_file() => Err(DriverError::CannotStart(format!(
                "{} is not a regular file",
                p.display()
            ))),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(DriverError::CannotStart(format!(
                "{} is not executable",
                p.display()
            ))),
            Ok(_) => Ok(p.clone()),
        };
    }
    if let Some(p) = executor_next_to_module() {
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(p) = std::env::var_os(EXECUTOR_ENV).map(PathBuf::from) {
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DriverError::ExecutorNotFound(format!(
        "no {EXECUTOR_NAME} next to this library and ${EXECUTOR_ENV} unset or invalid"
    )))
}

fn death_cause(st: std::process::ExitStatus) -> DeathCause {
    if let Some(sig) = st.signal() {
        if sig == libc::SIGSYS {
            DeathCause::SeccompViolation
        } else {
            DeathCause::Signal(sig)
        }
    } else {
        DeathCause::ExitCode(st.code().unwrap_or(-1))
    }
}

impl Executor {
    /// Spawns the executor and waits until its sandbox is in place.
    pub fn spawn(config: ExecutorConfig<'_>) -> Result<Executor, DriverError> {
        let invalid = |m: String| Err(DriverError::InvalidConfig(m));
        if config.ram_size == 0 || config.ram_size % 4096 != 0 {
            return invalid(format!(
                "ram_size {:#x} is not a positive multiple of 4 KiB",
                config.ram_size
            ));
        }
        if sys::file_size(config.ram_fd)? < config.ram_size {
            return invalid("ram_fd is smaller than ram_size".into());
        }
        if config.ram_map.len() > MAX_RAM_RANGES {
            return invalid(format!("more than {MAX_RAM_RANGES} RAM ranges"));
        }
        for r in &config.ram_map {
            if r.start % 4096 != 0
                || r.end % 4096 != 0
                || r.start > r.end
                || r.end > config.ram_size
            {
                return invalid(format!("bad RAM range {:#x}..{:#x}", r.start, r.end));
            }
        }
        let path = locate_executor(&config)?;
        let control_fd = sys::memfd(c"plex86-control", REGION_SIZE as u64)?;
        let region = SharedMapping::new(control_fd.as_fd(), REGION_SIZE, 0)?;
        let mut lib: LibArea = sys::Pod::zeroed();
        lib.magic = protocol::MAGIC;
        lib.version = protocol::VERSION;
        lib.library_pid = std::process::id();
        lib.ram_size = config.ram_size;
        lib.n_ram_ranges = config.ram_map.len() as u32;
        for (d, r) in lib.ram_ranges.iter_mut().zip(&config.ram_map) {
            *d = RamRange {
                start: r.start,
                end: r.end,
            };
        }
        lib.budget_clock = match config.budget_clock {
            BudgetClock::Monotonic => 0,
            BudgetClock::ThreadCpuTime => 1,
        };
        lib.spin = config.spin;
        lib.max_fills = config.max_fills_per_run;
        region.write_pod(0, &lib);
        let child = sys::spawn_executor(&path, config.ram_fd, control_fd.as_fd(), &[])
            .map_err(|e| DriverError::CannotStart(format!("{}: {e}", path.display())))?;
        let mut exe = Executor {
            child: Some(child),
            region,
            _control_fd: control_fd,
            seq: 1,
            dead: None,
            xsave: XsaveInfo {
                size: 0,
                features: 0,
                components: [(0, 0); 8],
            },
            cpuid_faulting: false,
            ram_size: config.ram_size,
            spin: config.spin,
            code_pages: Vec::with_capacity(MAX_CODE_PAGES),
            run_may_have_executed: false,
        };
        match exe.wait_response(1, Some(config.startup_timeout)) {
            Ok(()) => {}
            // Not our executor (another program, a script, a build of another protocol
            // version that refused the control region...): say which binary it was.
            Err(DriverError::ExecutorDied(cause)) => {
                return Err(DriverError::CannotStart(format!(
                    "{} ended before it was ready ({cause}): is it a {EXECUTOR_NAME} of protocol version {}?",
                    path.display(),
                    protocol::VERSION
                )))
            }
            Err(e) => return Err(e),
        }
        let area: ExecArea = exe.region.read_pod(EXEC_AREA_OFFSET);
        match area.status {
            status::READY => {}
            status::FAILED => {
                let n = (area.msg_len as usize).min(area.msg.len());
                let message = String::from_utf8_lossy(&area.msg[..n]).into_owned();
                exe.kill();
                return Err(DriverError::SetupFailed {
                    code: area.fail_code as i32,
                    message,
                });
            }
            s => return Err(exe.corrupted(format!("status {s} after setup"))),
        }
        let size = area.xsave_size;
        if !(576..=protocol::XSAVE_AREA_SIZE as u32).contains(&size) || area.xsave_features & 3 != 3
        {
            return Err(exe.corrupted(format!(
                "xsave size {size} / features {:#x}",
                area.xsave_features
            )));
        }
        exe.xsave = XsaveInfo::from_host(size, area.xsave_features);
        exe.cpuid_faulting = match area.cpuid_faulting {
            0 => false,
            1 => true,
            v => return Err(exe.corrupted(format!("cpuid_faulting {v}"))),
        };
        if exe
            .xsave
            .components
            .iter()
            .any(|&(o, s)| o as usize + s as usize > size as usize)
        {
            return Err(exe.corrupted(format!("xsave size {size} smaller than the host layout")));
        }
        Ok(exe)
    }

    /// The XSAVE layout transferred by this executor.
    pub fn xsave_info(&self) -> XsaveInfo {
        self.xsave
    }

    /// Whether native CPUID faults and exits as [`crate::ExitReason::Cpuid`] (CPUID faulting);
    /// otherwise native code reads the host's CPUID.
    pub fn cpuid_faulting(&self) -> bool {
        self.cpuid_faulting
    }

    /// The executor's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `commands` without entering the guest.
    pub fn apply_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError> {
        self.check_alive()?;
        for chunk in commands.chunks(MAX_COMMANDS) {
            self.write_commands(chunk);
            self.request(req::COMMANDS, 0, Some(RESPONSE_GRACE), None)?;
            let st = self
                .region
                .read_pod::<u32>(EXEC_AREA_OFFSET + offset_of!(ExecArea, status));
            if st != status::COMMANDS_DONE {
                return Err(self.corrupted(format!("status {st} after commands")));
            }
        }
        Ok(())
    }

    /// Runs the guest natively from `state` for at most about `budget` of host time, after
    /// applying `commands`. On return `state` holds the guest state before the instruction
    /// that ended the run.
    pub fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<Exit<'_>, DriverError> {
        self.run_may_have_executed = false;
        self.check_alive()?;
        validate_entry(state, self.xsave)?;
        let (now, rest) = if commands.len() > MAX_COMMANDS {
            commands.split_at(commands.len() - MAX_COMMANDS)
        } else {
            (&[][..], commands)
        };
        if !now.is_empty() {
            self.apply_commands(now)?;
        }
        self.write_commands(rest);
        self.region.write_pod(offset_of!(LibArea, state), state);
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).max(1);
        let posted = self.request(
            req::RUN,
            budget_ns,
            Some(budget.saturating_add(RESPONSE_GRACE)),
            Some(budget),
        );
        self.run_may_have_executed = true;
        if let Err(e) = posted {
            self.run_may_have_executed = !self.ended_waiting_for_request();
            return Err(e);
        }
        let area: ExecArea = self.region.read_pod(EXEC_AREA_OFFSET);
        self.accept_exit(state, &area, budget_ns)
    }

    /// After [`Executor::run`] failed: whether guest code may have run natively in it. `false`
    /// when the failure came before the executor took the run request (it was found dead, or
    /// died or stalled while still asleep waiting for the request): guest memory and the entry
    /// state are then as they were, and an emulator can go on without acceleration. `true`
    /// when it may have run (the state in guest memory may be ahead of the entry state).
    pub fn failed_run_may_have_executed(&self) -> bool {
        self.run_may_have_executed
    }

    /// Whether the executor is asleep waiting for a request (it has stopped polling for one).
    /// For tests that must stop or kill it exactly then.
    #[doc(hidden)]
    pub fn asleep_waiting_for_request(&self) -> bool {
        self.region.atomic_u32(EXEC_SLEEPING).load(Ordering::SeqCst) != 0
    }

    /// Whether the executor has ended (died, or killed by the library) while asleep waiting
    /// for a request: it sets `exec_sleeping` before sleeping and clears it before it acts on
    /// a request, so a dead executor that left it set never took the last one.
    fn ended_waiting_for_request(&self) -> bool {
        self.child.is_none() && self.asleep_waiting_for_request()
    }

    fn write_commands(&mut self, cmds: &[MmuCommand]) {
        for (i, c) in cmds.iter().enumerate() {
            let off = offset_of!(LibArea, commands) + i * std::mem::size_of::<RawCommand>();
            self.region.write_pod(off, &c.to_raw());
        }
        self.region
            .write_pod(offset_of!(LibArea, n_commands), &(cmds.len() as u32));
    }

    /// Posts a request and waits for its response. `expected`: when the response is due (a
    /// run's budget), see [`Executor::await_expected`].
    fn request(
        &mut self,
        kind: u32,
        budget_ns: u64,
        deadline: Option<Duration>,
        expected: Option<Duration>,
    ) -> Result<(), DriverError> {
        let posted = Instant::now();
        self.region.write_pod(offset_of!(LibArea, req_kind), &kind);
        self.region
            .write_pod(offset_of!(LibArea, budget_ns), &budget_ns);
        self.seq = self.seq.wrapping_add(1).max(2);
        let word = self.region.atomic_u32(REQ_SEQ);
        word.store(self.seq, Ordering::Release);
        if self.region.atomic_u32(EXEC_SLEEPING).load(Ordering::SeqCst) != 0 {
            sys::futex_wake(word);
        }
        if let Some(due) = expected {
            if self.await_expected(self.seq, posted, due)? {
                return Ok(());
            }
        }
        self.wait_response(self.seq, deadline)
    }

    /// Waits for a response due `due` after `posted` (a run that its budget will end): polls
    /// for [`HEAD_POLL`], sleeps until [`WAKE_LEAD`] before the due time, then polls until
    /// [`POLL_TAIL`] after it. A thread that sleeps until the executor's futex wake runs again
    /// only ~40 µs later on the project's VMs (its vCPU went idle); waking ahead of the
    /// deadline takes that off every run that its budget ends (the compute benchmark's per-run
    /// overhead fell from ~40 to ~20 µs), and the first poll off every run that ends at once.
    /// A run that ends in between wakes this thread through the futex. Returns whether the
    /// response came; if not, [`Executor::wait_response`] takes over.
    fn await_expected(
        &mut self,
        want: u32,
        posted: Instant,
        due: Duration,
    ) -> Result<bool, DriverError> {
        let wake_at = due.saturating_sub(WAKE_LEAD);
        if self.poll_until(want, posted, HEAD_POLL.min(wake_at)) {
            return Ok(true);
        }
        loop {
            let cur = self.response_seq();
            if cur == want {
                return Ok(true);
            }
            let elapsed = posted.elapsed();
            if elapsed >= wake_at {
                break;
            }
            let slice = wake_at - elapsed;
            sys::futex_wait(self.region.atomic_u32(RESP_SEQ), cur, slice.min(WAIT_SLICE));
            // A long budget: notice a dead executor within a slice, as wait_response does (but
            // first take a response it left: after a guest escape it exits at once).
            if slice > WAIT_SLICE && self.response_seq() != want {
                self.reap_if_dead()?;
            }
        }
        Ok(self.poll_until(want, posted, due.saturating_add(POLL_TAIL)))
    }

    /// Polls until `resp_seq == want` or `until` after `posted`; returns whether it came.
    fn poll_until(&self, want: u32, posted: Instant, until: Duration) -> bool {
        let mut i = 0;
        while posted.elapsed() < until {
            if self.response_seq() == want {
                return true;
            }
            poll_pause(i);
            i = i.saturating_add(1);
        }
        self.response_seq() == want
    }

    /// Waits until `resp_seq == want`, spinning first, then sleeping in slices and checking
    /// that the child is alive.
    fn wait_response(&mut self, want: u32, timeout: Option<Duration>) -> Result<(), DriverError> {
        for i in 0..self.spin {
            if self.response_seq() == want {
                return Ok(());
            }
            poll_pause(i);
        }
        let start = Instant::now();
        loop {
            let cur = self.response_seq();
            if cur == want {
                return Ok(());
            }
            sys::futex_wait(self.region.atomic_u32(RESP_SEQ), cur, WAIT_SLICE);
            if self.response_seq() == want {
                return Ok(());
            }
            self.reap_if_dead()?;
            if let Some(t) = timeout.filter(|&t| start.elapsed() > t) {
                self.kill();
                return Err(DriverError::ExecutorUnresponsive(t));
            }
        }
    }

    fn response_seq(&self) -> u32 {
        self.region.atomic_u32(RESP_SEQ).load(Ordering::Acquire)
    }

    /// Fails if the executor process has ended (a setup failure leaves its message).
    fn reap_if_dead(&mut self) -> Result<(), DriverError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let Some(st) = child.try_wait()? else {
            return Ok(());
        };
        self.child = None;
        let cause = death_cause(st);
        self.dead = Some(cause.clone());
        let area: ExecArea = self.region.read_pod(EXEC_AREA_OFFSET);
        if area.status == status::FAILED {
            let n = (area.msg_len as usize).min(area.msg.len());
            return Err(DriverError::SetupFailed {
                code: area.fail_code as i32,
                message: String::from_utf8_lossy(&area.msg[..n]).into_owned(),
            });
        }
        Err(DriverError::ExecutorDied(cause))
    }

    fn check_alive(&self) -> Result<(), DriverError> {
        match &self.dead {
            Some(c) => Err(DriverError::ExecutorDied(c.clone())),
            None => Ok(()),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.dead.is_none() {
            self.dead = Some(DeathCause::KilledByLibrary);
        }
    }

    fn corrupted(&mut self, what: String) -> DriverError {
        self.kill();
        DriverError::CorruptedSharedMemory(what)
    }

    /// Validates the executor's exit record and state, and applies it to `state`.
    fn accept_exit(
        &mut self,
        state: &mut GuestState,
        area: &ExecArea,
        budget_ns: u64,
    ) -> Result<Exit<'_>, DriverError> {
        let expected = ExitExpectation {
            seq: self.seq,
            budget_ns,
            ram_size: self.ram_size,
            xsave: self.xsave,
        };
        let checked = match check_exit(state, area, &expected) {
            Ok(c) => c,
            Err(e) => return Err(self.corrupted(e)),
        };
        if let ExitReason::GuestEscape { .. } = checked.reason {
            // The executor can no longer be trusted.
            self.kill();
        }
        if let Some(new) = checked.state {
            *state = new;
        }
        self.code_pages.clear();
        self.code_pages
            .extend_from_slice(&area.exit.code_pages[..checked.n_code_pages]);
        Ok(Exit {
            reason: checked.reason,
            native_time: checked.native_time,
            code_pages_written: &self.code_pages,
            ecx_clobbered: checked.ecx_clobbered,
            eip_lost: checked.eip_lost,
            demand_fills: checked.demand_fills,
            fill_time: checked.fill_time,
        })
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the library expects of the executor's response to a run ([`check_exit`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExitExpectation {
    /// The request's sequence number.
    pub seq: u32,
    /// The run's budget.
    pub budget_ns: u64,
    /// Size of guest RAM.
    pub ram_size: u64,
    /// The XSAVE layout the executor transfers.
    pub xsave: XsaveInfo,
}

/// An exit record that passed [`check_exit`], as [`Executor::run`] applies it.
#[derive(Clone, Debug)]
pub(crate) struct CheckedExit {
    pub reason: ExitReason,
    pub native_time: Duration,
    /// The guest state after the run; `None` after a guest escape (not meaningful then).
    pub state: Option<GuestState>,
    /// Valid entries of `area.exit.code_pages`.
    pub n_code_pages: usize,
    pub ecx_clobbered: bool,
    pub eip_lost: bool,
    pub demand_fills: u32,
    pub fill_time: Duration,
}

/// Validates the executor's response `area` to a run entered with `entry`: the pure part of
/// [`Executor::run`]'s acceptance (no executor needed). `Err` names the first bad field.
pub(crate) fn check_exit(
    entry: &GuestState,
    area: &ExecArea,
    expected: &ExitExpectation,
) -> Result<CheckedExit, String> {
    if area.status != status::EXITED {
        return Err(format!("status {} after a run", area.status));
    }
    if area.resp_seq != expected.seq {
        return Err(format!("sequence {} != {}", area.resp_seq, expected.seq));
    }
    let raw = &area.exit;
    let reason = decode_reason(raw)?;
    if raw.native_ns > expected.budget_ns.saturating_add(600_000_000_000) {
        return Err(format!("native time {} ns", raw.native_ns));
    }
    let native_time = Duration::from_nanos(raw.native_ns);
    if raw.fill_ns > raw.native_ns {
        return Err(format!(
            "fill time {} ns > native time {} ns",
            raw.fill_ns, raw.native_ns
        ));
    }
    let fill_time = Duration::from_nanos(raw.fill_ns);
    if let ExitReason::GuestEscape { .. } = reason {
        return Ok(CheckedExit {
            reason,
            native_time,
            state: None,
            n_code_pages: 0,
            ecx_clobbered: false,
            eip_lost: false,
            demand_fills: raw.demand_fills,
            fill_time,
        });
    }
    let n = raw.n_code_pages as usize;
    if n > MAX_CODE_PAGES {
        return Err(format!("{n} code pages"));
    }
    for &p in &raw.code_pages[..n] {
        if p % 4096 != 0 || p >= expected.ram_size {
            return Err(format!("code page {p:#x}"));
        }
    }
    let state = validate_exit_state(entry, &area.state, expected.xsave)?;
    if reason == ExitReason::SingleStep && state.eflags & EFL_TF == 0 {
        // Only an instruction run with TF set single-steps, and nothing but a #DB clears it.
        return Err(format!("single-step exit with EFLAGS {:#x}", state.eflags));
    }
    Ok(CheckedExit {
        reason,
        native_time,
        state: Some(state),
        n_code_pages: n,
        ecx_clobbered: raw.flags & protocol::EXIT_ECX_CLOBBERED != 0,
        eip_lost: raw.flags & protocol::EXIT_EIP_LOST != 0,
        demand_fills: raw.demand_fills,
        fill_time,
    })
}

const EFL_RESERVED_ZERO: u32 = (1 << 3) | (1 << 5) | (1 << 15) | 0xffc0_0000;
const EFL_TF: u32 = 1 << 8;
const EFL_IF: u32 = 1 << 9;
const EFL_IOPL: u32 = 3 << 12;
const EFL_NT: u32 = 1 << 14;
const EFL_RF: u32 = 1 << 16;
const EFL_VM: u32 = 1 << 17;
const EFL_VIF: u32 = 1 << 19;
const EFL_VIP: u32 = 1 << 20;

/// Checks that `state` can be entered natively on a host transferring `xs`: the entry rules,
/// written once. [`Executor::run`] applies them; callers may check first (the error is
/// [`DriverError::UnsupportedState`] naming the first rule broken).
pub fn validate_entry(state: &GuestState, xs: XsaveInfo) -> Result<(), DriverError> {
    let bad = |m: String| Err(DriverError::UnsupportedState(m));
    let f = state.eflags;
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 {
        return bad(format!("EFLAGS {f:#x} has reserved bits wrong"));
    }
    if f & EFL_IF == 0
        || f & (EFL_IOPL | EFL_TF | EFL_NT | EFL_RF | EFL_VM | EFL_VIF | EFL_VIP) != 0
    {
        return bad(format!(
            "EFLAGS {f:#x}: need IF=1, IOPL=0, TF/NT/RF/VM/VIF/VIP=0"
        ));
    }
    if state.cr0 & 1 == 0 {
        return bad("CR0.PE is clear".into());
    }
    if state.reserved != [0; 3] {
        return bad("reserved fields are not zero".into());
    }
    for (i, s) in state.segs.iter().enumerate() {
        let name = seg::NAMES[i];
        if s.flags != 0 {
            return bad(format!("{name}: flags must be 0 on entry"));
        }
        if s.selector & 4 != 0 {
            return bad(format!(
                "{name}: LDT selector {:#x} (guest LDTs are not mirrored)",
                s.selector
            ));
        }
        if s.selector >> 3 >= LDT_MIRROR_ENTRIES {
            return bad(format!(
                "{name}: GDT selector {:#x} beyond the {LDT_MIRROR_ENTRIES} mirrored GDT entries",
                s.selector
            ));
        }
        let null = s.is_null();
        match i {
            seg::CS => {
                if null || s.selector & 3 != 3 || !s.present() || !s.s() || !s.is_code() || s.long()
                {
                    return bad(format!(
                        "CS {:#x}/{:#x} is not a CPL 3 32/16-bit code segment",
                        s.selector, s.attr
                    ));
                }
                if s.seg_type() & 4 != 0 {
                    return bad("CS is a conforming code segment (modify_ldt refuses them)".into());
                }
                if s.dpl() != 3 {
                    return bad("CS DPL is not 3".into());
                }
            }
            seg::SS => {
                if null
                    || s.selector & 3 != 3
                    || !s.present()
                    || !s.s()
                    || s.is_code()
                    || s.seg_type() & 2 == 0
                    || s.dpl() != 3
                {
                    return bad(format!(
                        "SS {:#x}/{:#x} is not a writable DPL 3 data segment",
                        s.selector, s.attr
                    ));
                }
            }
            _ => {
                if !null {
                    let readable = !s.is_code() || s.seg_type() & 2 != 0;
                    if s.is_code() && s.seg_type() & 4 != 0 {
                        return bad(format!(
                            "{name} holds a conforming code segment (modify_ldt refuses them)"
                        ));
                    }
                    if !s.present() || !s.s() || !readable || s.dpl() != 3 {
                        return bad(format!(
                            "{name} {:#x}/{:#x} cannot be mirrored",
                            s.selector, s.attr
                        ));
                    }
                }
            }
        }
        if s.limit > 0xfffff || s.attr & 0x0f00 != 0 {
            return bad(format!("{name}: limit or attribute bits out of range"));
        }
        for t in &state.segs[..i] {
            if !null
                && !t.is_null()
                && t.selector >> 3 == s.selector >> 3
                && (t.base, t.limit, t.attr) != (s.base, s.limit, s.attr)
            {
                return bad(format!(
                    "{name} shares a GDT index with another register but not its descriptor"
                ));
            }
        }
    }
    let xcr0 = state.xcr0;
    if xcr0 & 1 == 0 || xcr0 & !xs.features != 0 {
        return bad(format!(
            "XCR0 {xcr0:#x} not a subset of host features {:#x}",
            xs.features
        ));
    }
    if xcr0 & 4 != 0 && xcr0 & 2 == 0 {
        return bad("XCR0 enables AVX without SSE".into());
    }
    if xcr0 & 0xe0 != 0 && (xcr0 & 0xe4 != 0xe4) {
        return bad("XCR0 enables part of AVX-512".into());
    }
    let img = &state.xsave;
    if img.xcomp_bv() != 0 || img.xstate_bv() & !xcr0 != 0 {
        return bad("XSAVE header: XCOMP_BV must be 0 and XSTATE_BV within XCR0".into());
    }
    if img.0[528..576].iter().any(|&b| b != 0) {
        return bad("XSAVE header reserved bytes are not zero".into());
    }
    if img.mxcsr() & !0xffff != 0 {
        return bad(format!("MXCSR {:#x} has reserved bits set", img.mxcsr()));
    }
    Ok(())
}

/// Checks the executor-reported state against the entry state and builds the guest view.
/// `Err` names a field no honest executor could report.
fn validate_exit_state(
    entry: &GuestState,
    got: &GuestState,
    xs: XsaveInfo,
) -> Result<GuestState, String> {
    let mut out = *entry;
    out.gprs = got.gprs;
    out.eip = got.eip;
    let f = got.eflags;
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 || f & (EFL_VM | EFL_IOPL | EFL_RF) != 0 {
        return Err(format!("EFLAGS {f:#x}"));
    }
    out.eflags = f;
    for i in 0..6 {
        let (e, g) = (&entry.segs[i], &got.segs[i]);
        if (g.attr, g.limit, g.base, g.flags) != (e.attr, e.limit, e.base, 0) {
            return Err(format!("segment {} descriptor changed", seg::NAMES[i]));
        }
        let native = g.selector;
        // Native CPL 3 code cannot change CPL (the emulator refuses such a state outright).
        if (i == seg::CS || i == seg::SS) && (native & 3 != 3 || native & !3 == 0) {
            return Err(format!(
                "{} selector {native:#x} is not a CPL 3 selector",
                seg::NAMES[i]
            ));
        }
        if native == native_selector(e.selector) {
            out.segs[i] = *e;
            continue;
        }
        let guest = if native & 4 == 0 {
            // Null, or a GDT selector value that native code loaded (glibc loads its TLS
            // selector 0x33 so): it resolved in the host's GDT. The emulator reloads it from
            // the guest's GDT, and stops if the guest could not have loaded it.
            native
        } else {
            // Only the mirror's slots of the LDT are filled: any other LDT load faults natively.
            guest_selector(native).ok_or_else(|| {
                format!(
                    "{} selector {native:#x} is no mirror selector",
                    seg::NAMES[i]
                )
            })?
        };
        out.segs[i] = Segment {
            selector: guest,
            flags: SEG_NOT_INSTALLED,
            ..*e
        };
    }
    let img = &got.xsave;
    if img.xcomp_bv() != 0 || img.xstate_bv() & !entry.xcr0 != 0 {
        return Err(format!(
            "XSAVE header {:#x}/{:#x}",
            img.xstate_bv(),
            img.xcomp_bv()
        ));
    }
    if img.0[528..576].iter().any(|&b| b != 0) {
        return Err("XSAVE header reserved bytes".into());
    }
    let n = xs.size as usize;
    out.xsave.0[..n].copy_from_slice(&img.0[..n]);
    // Bytes 464..511 are software-available in the FXSAVE layout: keep the guest's.
    out.xsave.0[464..512].copy_from_slice(&entry.xsave.0[464..512]);
    // MXCSR_MASK (bytes 28..32) describes the CPU, not the guest: keep the guest's value.
    out.xsave.0[28..32].copy_from_slice(&entry.xsave.0[28..32]);
    normalize_xsave(&mut out.xsave, entry.xcr0, &xs);
    Ok(out)
}

/// Writes the initial values into the areas of components whose XSTATE_BV bit is clear, so
/// that equal states have equal images.
fn normalize_xsave(img: &mut crate::XsaveImage, xcr0: u64, xs: &XsaveInfo) {
    let bv = img.xstate_bv();
    if xcr0 & 1 != 0 && bv & 1 == 0 {
        img.0[0..24].fill(0);
        img.0[0] = 0x7f;
        img.0[1] = 0x03;
        img.0[32..160].fill(0);
    }
    if xcr0 & 2 != 0 && bv & 2 == 0 {
        img.0[160..416].fill(0);
    }
    for (bit, &(off, len)) in xs.components.iter().enumerate().skip(2) {
        let (off, len) = (off as usize, len as usize);
        if xcr0 & (1 << bit) != 0 && bv & (1 << bit) == 0 && off + len <= img.0.len() {
            img.0[off..off + len].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_default_executor_place_is_next_to_the_containing_object() {
        // In a unit test the crate is linked into the test binary itself.
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let want = exe.parent().unwrap().join(EXECUTOR_NAME);
        let got = executor_next_to_module().expect("dladdr knows the test binary");
        assert_eq!(
            got.parent().unwrap().canonicalize().unwrap(),
            want.parent().unwrap()
        );
        assert_eq!(got.file_name(), want.file_name());
    }

    #[test]
    fn death_causes() {
        let st = |raw| std::process::ExitStatus::from_raw(raw);
        assert_eq!(death_cause(st(libc::SIGSYS)), DeathCause::SeccompViolation);
        assert_eq!(death_cause(st(libc::SIGKILL)), DeathCause::Signal(9));
        assert_eq!(death_cause(st(15 << 8)), DeathCause::ExitCode(15));
        assert!(format!(
            "{}",
            DriverError::ExecutorDied(DeathCause::SeccompViolation)
        )
        .contains("seccomp violation"));
    }

    fn state() -> GuestState {
        let mut s = GuestState::default();
        s.segs[seg::CS] = Segment::flat_code(0x1b);
        for i in [seg::ES, seg::SS, seg::DS] {
            s.segs[i] = Segment::flat_data(0x23);
        }
        s
    }
    const XS: XsaveInfo = XsaveInfo {
        size: 2688,
        features: 0xe7,
        components: [(0, 0); 8],
    };

    #[test]
    fn entry_validation() {
        assert!(validate_entry(&state(), XS).is_ok());
        let bad = |f: &dyn Fn(&mut GuestState)| {
            let mut s = state();
            f(&mut s);
            assert!(matches!(
                validate_entry(&s, XS),
                Err(DriverError::UnsupportedState(_))
            ));
        };
        bad(&|s| s.eflags = 0x002); // IF clear
        bad(&|s| s.eflags = 0x3202); // IOPL 3
        bad(&|s| s.eflags = 0x302); // TF
        bad(&|s| s.segs[seg::CS].selector = 0x18); // RPL 0
        bad(&|s| s.segs[seg::CS] = Segment::flat_data(0x1b)); // data as CS
        bad(&|s| s.segs[seg::DS].selector = 0x27); // LDT selector
        bad(&|s| s.segs[seg::SS] = Segment::null(0));
        bad(&|s| s.segs[seg::DS].base = 0x1000); // same index as ES/SS, other descriptor
        bad(&|s| s.segs[seg::FS].flags = 1);
        bad(&|s| s.xcr0 = 0x207);
        bad(&|s| s.xcr0 = 0x27); // part of AVX-512
        bad(&|s| s.cr0 = 0);
    }

    #[test]
    fn single_step_exits_need_tf() {
        let entry = state();
        let mut area: ExecArea = crate::sys::Pod::zeroed();
        area.status = status::EXITED;
        area.resp_seq = 7;
        area.exit.reason = protocol::RawReason::SingleStep as u32;
        area.state = entry;
        for (i, s) in area.state.segs.iter_mut().enumerate() {
            s.selector = native_selector(entry.segs[i].selector);
        }
        let expected = ExitExpectation {
            seq: 7,
            budget_ns: 1_000_000,
            ram_size: 1 << 20,
            xsave: XS,
        };
        area.state.eflags = 0x202;
        assert!(check_exit(&entry, &area, &expected).is_err(), "TF clear");
        area.state.eflags = 0x302;
        let c = check_exit(&entry, &area, &expected).unwrap();
        assert_eq!(c.reason, ExitReason::SingleStep);
        assert_eq!(c.state.unwrap().eflags, 0x302);
    }

    #[test]
    fn exit_validation_rejects_corruption() {
        let entry = state();
        let mut got = entry;
        for (i, s) in got.segs.iter_mut().enumerate() {
            s.selector = native_selector(entry.segs[i].selector);
        }
        let valid = |g: &GuestState| validate_exit_state(&entry, g, XS).unwrap();
        assert_eq!(valid(&got).segs, entry.segs);
        // Another mirror selector (the guest's CS selector as data): reloaded by the emulator.
        let mut g = got;
        g.segs[seg::DS].selector = native_selector(entry.segs[seg::CS].selector);
        let s = valid(&g);
        assert_eq!(
            (s.segs[seg::DS].selector, s.segs[seg::DS].flags),
            (entry.segs[seg::CS].selector, SEG_NOT_INSTALLED)
        );
        let mut g = got;
        g.segs[seg::FS].selector = 0; // a null selector
        assert_eq!(valid(&g).segs[seg::FS].selector, 0);
        // GDT selector values loaded natively (they resolved in the host's GDT): passed on as
        // they are, for the emulator to reload from the guest's GDT.
        for (i, host) in [
            (seg::DS, 0x2b),
            (seg::SS, 0x2b),
            (seg::CS, 0x23),
            (seg::GS, 0x33),
        ] {
            let mut g = got;
            g.segs[i].selector = host;
            let s = valid(&g);
            assert_eq!(
                (s.segs[i].selector, s.segs[i].flags),
                (host, SEG_NOT_INSTALLED),
                "{}",
                seg::NAMES[i]
            );
        }
        // LDT selectors outside the mirror cannot load natively: a corrupted record.
        let mut g = got;
        g.segs[seg::ES].selector = 0x7f;
        assert!(validate_exit_state(&entry, &g, XS).is_err());
        for (i, bad) in [(seg::SS, 0x28), (seg::SS, 0), (seg::CS, 0x20), (seg::CS, 3)] {
            let mut g = got;
            g.segs[i].selector = bad;
            assert!(
                validate_exit_state(&entry, &g, XS).is_err(),
                "{} = {bad:#x} accepted",
                seg::NAMES[i]
            );
        }
        let mut g = got;
        g.segs[seg::DS].base = 5;
        assert!(validate_exit_state(&entry, &g, XS).is_err());
        let mut g = got;
        g.eflags |= 1 << 17; // VM
        assert!(validate_exit_state(&entry, &g, XS).is_err());
        let mut g = got;
        g.xsave.set_u64_at(512, 0xe7); // beyond the guest's XCR0 (3)
        assert!(validate_exit_state(&entry, &g, XS).is_err());
        let mut raw = protocol::RawExit::ZERO;
        raw.reason = 99;
        assert!(decode_reason(&raw).is_err());
        raw.reason = protocol::RawReason::PageFault as u32;
        raw.error_code = 0x100;
        assert!(decode_reason(&raw).is_err());
        raw.reason = protocol::RawReason::OtherException as u32;
        raw.vector = 40;
        assert!(decode_reason(&raw).is_err());
    }
}
