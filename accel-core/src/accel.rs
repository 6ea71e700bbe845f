//! The accelerator: entry policy, MMU coherence, native runs, exit translation, statistics.

use crate::backend::{Backend, ExecutorBackend};
use crate::cpuid::{self, CpuidFn};
use crate::decode::{self, GuestMemory};
use crate::exits::{exit_code, worth_decoding};
use crate::log::Logger;
use crate::mmu::MmuQueue;
use crate::policy::{
    ns_to_ticks, ticks_to_ns, Backoff, Decision, Decline, HotSpaces, Policy, MIN_BUDGET_NS,
};
use crate::prealloc::Prealloc;
use crate::state::{self, effective_xcr0};
use crate::stats::Stats;
use crate::{AccelOps, CpuState, RunOutcome};
use host_driver::{DriverError, ExitReason, GuestState, MmuCommand, SyscallInstruction, XsaveInfo};
use std::collections::HashSet;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The host driver's limit on plain-RAM ranges.
pub const MAX_RAM_RANGES: usize = host_driver::protocol::MAX_RAM_RANGES;
/// Log at most this many unsupported-state declines (then only count them).
const UNSUPPORTED_LOG_LIMIT: u32 = 8;
/// Log at most this many distinct guest XCR0 values.
const XCR0_LOG_LIMIT: u32 = 4;

/// The accelerator's configuration, validated from `plex86_accel_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bytes of the RAM memfd that hold RAM.
    pub ram_size: u64,
    /// Plain-RAM ranges (normalised: page aligned, sorted, merged, inside `ram_size`).
    pub ram_map: Vec<Range<u64>>,
    /// Guest ticks (instructions) per second.
    pub ips: u64,
    /// The executor binary; `None`: next to the library.
    pub executor_path: Option<PathBuf>,
    /// Where to write the JSON statistics; `None`: nowhere.
    pub stats_path: Option<PathBuf>,
    /// Entry policy: user instructions to emulate after each kernel return.
    pub min_user_insns: u32,
    /// Allocate all of guest RAM at start ([`crate::prealloc`]).
    pub prealloc_ram: bool,
    /// Start even if native user code can use extensions the guest CPU model lacks
    /// (`allow_cpu_mismatch=1`).
    pub allow_cpu_mismatch: bool,
    /// The guest CPU model is `cpu: model=host`.
    pub cpu_model_host: bool,
}

impl Config {
    /// How the guest CPU model was chosen, for [`cpuid::admit`].
    pub fn model_choice(&self) -> cpuid::ModelChoice {
        if self.cpu_model_host {
            cpuid::ModelChoice::Host
        } else if self.allow_cpu_mismatch {
            cpuid::ModelChoice::NamedMismatchAllowed
        } else {
            cpuid::ModelChoice::Named
        }
    }
}

impl Config {
    /// Checks the values that no normalisation can fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.ips == 0 {
            return Err("ips is 0 (Bochs's cpu: ips= must be positive)".into());
        }
        if self.ram_size == 0 || self.ram_size % 4096 != 0 {
            return Err(format!(
                "ram_size {:#x} is not a positive multiple of 4 KiB",
                self.ram_size
            ));
        }
        if self.ram_map.is_empty() {
            return Err(
                "no plain-RAM range (after rounding to whole pages inside ram_size)".into(),
            );
        }
        Ok(())
    }
}

/// Normalises plain-RAM ranges `[start, end)`: rounds each inward to whole pages, drops empty
/// ones, sorts and merges. Problems (reversed or out-of-RAM ranges, too many ranges) are
/// returned; the map is then the safe subset (less RAM mirrored, never more).
pub fn normalize_ram_map(ranges: &[(u64, u64)], ram_size: u64) -> (Vec<Range<u64>>, Vec<String>) {
    let mut problems = Vec::new();
    let mut v: Vec<Range<u64>> = Vec::new();
    for &(start, end) in ranges {
        if start > end {
            problems.push(format!("RAM range {start:#x}..{end:#x} is reversed"));
            continue;
        }
        if end > ram_size {
            problems.push(format!(
                "RAM range {start:#x}..{end:#x} ends beyond ram_size {ram_size:#x}"
            ));
        }
        let s = start.checked_add(0xfff).map_or(u64::MAX, |x| x & !0xfff);
        let e = end.min(ram_size) & !0xfff;
        if s < e {
            v.push(s..e);
        }
    }
    v.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > MAX_RAM_RANGES {
        problems.push(format!(
            "{} RAM ranges; only the first {MAX_RAM_RANGES} are mirrored",
            merged.len()
        ));
        merged.truncate(MAX_RAM_RANGES);
    }
    (merged, problems)
}

/// The paging state that the mirror depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PagingKey {
    cr3: u32,
    /// CR0.PG/WP, CR4.PSE/PAE/PGE, EFER.NXE.
    mode: (u32, u32, u64),
}

impl PagingKey {
    fn of(cpu: &CpuState) -> Self {
        PagingKey {
            cr3: cpu.cr3,
            mode: (
                cpu.cr0 & (1 << 31 | 1 << 16),
                cpu.cr4 & (1 << 4 | 1 << 5 | 1 << 7),
                cpu.efer & (1 << 11),
            ),
        }
    }
}

/// What a finished native run left, copied out of the driver's exit.
struct Ran {
    reason: ExitReason,
    native_ns: u64,
    eip_lost: bool,
    demand_fills: u32,
    fill_ns: u64,
}

/// The accelerator over a [`Backend`] (the executor, or a fake in tests).
pub struct Accelerator<B: Backend> {
    backend: B,
    xsave: XsaveInfo,
    policy: Policy,
    backoff: Backoff,
    hot: HotSpaces,
    ips: u64,
    log: Logger,
    stats: Stats,
    stats_path: Option<PathBuf>,
    ram_size: u64,
    /// The plain-RAM map Bochs reported last.
    ram_map: Vec<Range<u64>>,
    /// The map the running executor was started with.
    backend_map: Vec<Range<u64>>,
    mmu: MmuQueue,
    /// Physical pages write-protected in the executor (sent or queued, not yet written).
    protected: HashSet<u64>,
    last_paging: Option<PagingKey>,
    disabled: bool,
    native_started: bool,
    gs: Box<GuestState>,
    commands: Vec<MmuCommand>,
    code_pages: Vec<u64>,
    memory: Option<Box<dyn GuestMemory + Send>>,
    host_xcr0: Option<u64>,
    xcr0_logged: (Option<u64>, u32),
    unsupported_logged: u32,
    finished: bool,
    /// The allocation of guest RAM at start, until its outcome is logged.
    prealloc: Option<Prealloc>,
}

impl<B: Backend> std::fmt::Debug for Accelerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accelerator")
            .field("backend", &self.backend.describe())
            .field("policy", &self.policy)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl Accelerator<ExecutorBackend> {
    /// Starts the accelerator: checks that the guest CPU model `guest_cpuid` emulates what
    /// native user code can use ([`cpuid::admit`]: refused unless `cpu: model=host` or
    /// `allow_cpu_mismatch`), spawns the executor on `ram_fd` (the library's duplicate of
    /// Bochs's fd), maps RAM read-only for the exit statistics, and logs the start-up summary
    /// and the CPUID/XCR0 comparison.
    pub fn new(
        cfg: &Config,
        ram_fd: OwnedFd,
        log: Logger,
        guest_cpuid: Option<CpuidFn<'_>>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        // The host against the model (and the most XCR0 the model supports), once: for the
        // refusal here and for the log below.
        let cmp = guest_cpuid.map(|guest| {
            (
                cpuid::compare(&cpuid::host_cpuid, guest),
                cpuid::supported_xcr0(guest),
            )
        });
        let verdict = match &cmp {
            Some((c, guest_xcr0)) => cpuid::admit(
                &cpuid::user_gap(c, crate::sys::host_xcr0(), *guest_xcr0),
                cfg.model_choice(),
            )?,
            None => Vec::new(),
        };
        let backend = ExecutorBackend::spawn(
            ram_fd,
            cfg.ram_size,
            &cfg.ram_map,
            cfg.executor_path.clone(),
        )?;
        let memory: Option<Box<dyn GuestMemory + Send>> = match crate::sys::RamView::map(
            backend.ram_fd().as_fd(),
            cfg.ram_size,
        ) {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                log.info(&format!("guest RAM not mapped for exit statistics ({e}): instructions behind exits are not named"));
                None
            }
        };
        let prealloc = if cfg.prealloc_ram {
            match backend
                .ram_fd()
                .try_clone()
                .and_then(|fd| Prealloc::start(fd, cfg.ram_size))
            {
                Ok(p) => Some(p),
                Err(e) => {
                    log.error(&format!("cannot start allocating guest RAM up front: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let mut accel =
            Accelerator::with_backend(backend, cfg, log, memory, crate::sys::host_xcr0());
        accel.prealloc = prealloc;
        accel.log_cpuid(cmp.as_ref().map(|(c, x)| (c, *x)));
        for (level, line) in verdict {
            accel.log.log(level, &line);
        }
        Ok(accel)
    }
}

impl<B: Backend> Accelerator<B> {
    /// An accelerator over `backend` (already started with `cfg.ram_map`). `memory` is guest
    /// RAM for naming exit instructions; `host_xcr0` the host's XCR0, for the logs.
    pub fn with_backend(
        backend: B,
        cfg: &Config,
        log: Logger,
        memory: Option<Box<dyn GuestMemory + Send>>,
        host_xcr0: Option<u64>,
    ) -> Self {
        let xsave = backend.xsave_info();
        let policy = Policy::new(cfg.ips, cfg.min_user_insns);
        log.info(&format!(
            "started: {}; {} MiB RAM in {} range(s); XSAVE {} bytes ({}); ips {}; entry after {} user instructions and with at least {} ticks of budget ({} µs)",
            backend.describe(),
            cfg.ram_size >> 20,
            cfg.ram_map.len(),
            xsave.size,
            cpuid::xcr0_names(xsave.features),
            cfg.ips,
            cfg.min_user_insns,
            policy.min_budget_ticks,
            MIN_BUDGET_NS / 1000,
        ));
        Accelerator {
            backend,
            xsave,
            policy,
            backoff: Backoff::default(),
            hot: HotSpaces::default(),
            ips: cfg.ips,
            log,
            stats: Stats::default(),
            stats_path: cfg.stats_path.clone(),
            ram_size: cfg.ram_size,
            ram_map: cfg.ram_map.clone(),
            backend_map: cfg.ram_map.clone(),
            mmu: MmuQueue::new(),
            protected: HashSet::new(),
            last_paging: None,
            disabled: false,
            native_started: false,
            gs: Box::new(GuestState::default()),
            commands: Vec::with_capacity(64),
            code_pages: Vec::with_capacity(host_driver::protocol::MAX_CODE_PAGES),
            memory,
            host_xcr0,
            xcr0_logged: (None, 0),
            unsupported_logged: 0,
            finished: false,
            prealloc: None,
        }
    }

    /// Logs how CPUID reaches native code, and the CPUID/XCR0 comparison of the host with the
    /// guest model (`cmp`: [`cpuid::compare`] and the model's most XCR0; `None`: no model).
    pub fn log_cpuid(&self, cmp: Option<(&cpuid::Comparison, u64)>) {
        self.log.info(if self.backend.cpuid_faulting() {
            "CPUID faulting: native CPUID exits and Bochs answers with the guest CPU model, at every privilege level"
        } else {
            "no CPUID faulting on this host: native user code reads the host's CPUID, so Bochs answers CPUID at CPL 3 with the host's values too"
        });
        let Some((cmp, guest_xcr0)) = cmp else {
            self.log
                .info("no guest CPUID callback: CPUID comparison skipped");
            return;
        };
        for (level, line) in cpuid::report(cmp, self.host_xcr0, guest_xcr0) {
            self.log.log(level, &line);
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The entry policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// True once the accelerator has disabled itself.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    fn decline(&mut self, reason: Decline, retry_after_ticks: u64) -> RunOutcome<'static> {
        self.stats.decline(reason.code());
        RunOutcome::Declined {
            reason: reason.code(),
            retry_after_ticks,
        }
    }

    fn fail(&mut self, message: String, lost_native_progress: bool) -> RunOutcome<'static> {
        self.disabled = true;
        self.native_started = false;
        self.stats.failures += 1;
        let consequence = if lost_native_progress {
            "the guest state cannot be vouched for"
        } else {
            "nothing ran; emulation can go on"
        };
        self.log
            .error(&format!("accelerator disabled: {message} ({consequence})"));
        self.stats.failure.get_or_insert_with(|| message.clone());
        RunOutcome::Failed {
            message,
            lost_native_progress,
        }
    }

    /// Declines a state the host driver cannot run (`why` is its rule), logging the first few.
    fn unsupported(&mut self, why: &str) -> RunOutcome<'_> {
        self.native_started = false;
        self.note_unsupported(&format!("host driver: {why}"));
        self.decline(Decline::Unsupported, self.policy.unsupported_retry_ticks)
    }

    fn note_unsupported(&mut self, why: &str) {
        if self.unsupported_logged < UNSUPPORTED_LOG_LIMIT {
            self.unsupported_logged += 1;
            let more = if self.unsupported_logged == UNSUPPORTED_LOG_LIMIT {
                " (further ones are only counted)"
            } else {
                ""
            };
            self.log
                .info(&format!("entry declined, unsupported state: {why}{more}"));
        }
    }

    /// Logs the outcome of the allocation of guest RAM once it is known (`wait`: block).
    fn report_prealloc(&mut self, wait: bool) {
        match self.prealloc.as_mut().and_then(|p| p.outcome(wait)) {
            Some(Ok(m)) => self.log.info(&m),
            Some(Err(m)) => self.log.error(&m),
            None => return,
        }
        self.prealloc = None;
    }

    fn note_xcr0(&mut self, xcr0: u64) {
        let (last, n) = self.xcr0_logged;
        if last == Some(xcr0) || n >= XCR0_LOG_LIMIT {
            return;
        }
        self.xcr0_logged = (Some(xcr0), n + 1);
        let mut line = format!(
            "guest XCR0 in force: {xcr0:#x} ({})",
            cpuid::xcr0_names(xcr0)
        );
        if let Some(h) = self.host_xcr0 {
            line.push_str(&format!("; host XCR0 {h:#x}"));
            if h & !xcr0 != 0 {
                line.push_str(&format!(
                    ": native code can also use {} (a leak: such instructions run instead of faulting)",
                    cpuid::xcr0_names(h & !xcr0)
                ));
            }
        }
        self.log.info(&line);
    }

    /// Brings the executor in line with the memory map Bochs reported last.
    fn sync_memory_map(&mut self) -> Result<(), String> {
        if self.backend_map == self.ram_map {
            return Ok(());
        }
        self.backend.respawn(&self.ram_map)?;
        self.stats.respawns += 1;
        self.backend_map = self.ram_map.clone();
        self.xsave = self.backend.xsave_info();
        // A fresh executor: empty mirror, no write protections.
        self.mmu.drop_flushes();
        for &p in &self.protected {
            self.mmu.protect(p);
        }
        self.last_paging = None;
        self.log.info(&format!(
            "memory map changed: restarted the {}",
            self.backend.describe()
        ));
        Ok(())
    }

    fn count_commands(&mut self) {
        self.stats.commands_sent += self.commands.len() as u64;
        self.stats.write_protects_sent += self
            .commands
            .iter()
            .filter(|c| matches!(c, MmuCommand::WriteProtectPhysPage(_)))
            .count() as u64;
    }

    fn run_native(&mut self, cpu: &mut CpuState, budget_ticks: u64) -> RunOutcome<'_> {
        if let Err(e) = self.sync_memory_map() {
            return self.fail(
                format!("restarting the executor for the new memory map failed: {e}"),
                false,
            );
        }
        let key = PagingKey::of(cpu);
        if let Some(prev) = self.last_paging {
            if prev.mode != key.mode {
                self.mmu.flush(true);
                self.stats.paging_mode_flushes += 1;
            } else if prev.cr3 != key.cr3 && !self.mmu.has_flush() {
                self.mmu.flush(true);
                self.stats.unreported_cr3_flushes += 1;
                if self.stats.unreported_cr3_flushes == 1 {
                    self.log.info("CR3 changed between entries without a TLB-flush notification: flushing the mirror (counted from now on)");
                }
            }
        }
        self.note_xcr0(effective_xcr0(cpu));
        state::to_guest(cpu, &self.xsave, &mut self.gs);
        // The driver's entry rules, checked before anything is queued or sent, so that any
        // backend declines the same states (the driver checks again in `run`).
        if let Err(DriverError::UnsupportedState(m)) =
            host_driver::validate_entry(&self.gs, self.xsave)
        {
            return self.unsupported(&m);
        }
        self.commands.clear();
        self.mmu.commands(&mut self.commands);
        let budget = Duration::from_nanos(ticks_to_ns(budget_ticks, self.ips));
        self.native_started = true;
        let t0 = Instant::now();
        let result = match self.backend.run(&mut self.gs, budget, &self.commands) {
            Ok(exit) => {
                self.code_pages.clear();
                self.code_pages.extend_from_slice(exit.code_pages_written);
                Ok(Ran {
                    reason: exit.reason,
                    native_ns: u64::try_from(exit.native_time.as_nanos()).unwrap_or(u64::MAX),
                    eip_lost: exit.eip_lost,
                    demand_fills: exit.demand_fills,
                    fill_ns: u64::try_from(exit.fill_time.as_nanos()).unwrap_or(u64::MAX),
                })
            }
            Err(e) => Err(e),
        };
        self.stats.run_wall_ns += u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let ran = match result {
            Ok(r) => r,
            // Refused before anything was sent: the commands stay queued.
            Err(DriverError::UnsupportedState(m)) => return self.unsupported(&m),
            Err(e) => {
                let lost = self.backend.failed_run_may_have_executed();
                return self.fail(format!("native run failed: {e}"), lost);
            }
        };
        self.count_commands();
        self.mmu.clear();
        self.last_paging = Some(key);
        self.stats.native_ns += ran.native_ns;
        self.stats.demand_fills += u64::from(ran.demand_fills);
        self.stats.fill_ns += ran.fill_ns;
        self.stats.run_length(ran.native_ns);
        let verdict = self.backoff.record_run(
            ran.native_ns,
            ran.fill_ns,
            ran.demand_fills,
            matches!(ran.reason, ExitReason::BudgetExpired),
        );
        self.hot.record(cpu.cr3, verdict);
        let Some(reason) = exit_code(&ran.reason) else {
            return self.fail(ran.reason.describe(), true);
        };
        if ran.eip_lost {
            let insn = match ran.reason {
                ExitReason::SystemCall {
                    instruction: SyscallInstruction::Sysenter,
                } => "SYSENTER",
                _ => "SYSCALL",
            };
            return self.fail(
                format!(
                    "{insn} executed natively: the host kernel's compat fast-syscall path discarded EIP and ECX, so the guest cannot be resumed (the guest CPU model must not offer {insn} in 32-bit mode)"
                ),
                true,
            );
        }
        for p in &self.code_pages {
            self.protected.remove(p);
        }
        self.stats.code_page_invalidations += self.code_pages.len() as u64;
        let ticks = ns_to_ticks(ran.native_ns, self.ips).max(1);
        let seg_reload = state::from_guest(&self.gs, &self.xsave, cpu);
        self.stats.runs += 1;
        self.stats.exit(reason);
        self.stats.ticks_charged = self.stats.ticks_charged.saturating_add(ticks);
        if worth_decoding(reason) {
            match self
                .memory
                .as_deref()
                .and_then(|m| decode::instruction_at(m, &self.gs))
            {
                Some(k) => {
                    *self
                        .stats
                        .instructions
                        .entry((reason as usize, k))
                        .or_insert(0) += 1
                }
                None => self.stats.undecoded += 1,
            }
        }
        self.native_started = false;
        RunOutcome::Ran {
            reason,
            ticks,
            seg_reload,
            code_pages: &self.code_pages,
        }
    }
}

impl<B: Backend> AccelOps for Accelerator<B> {
    fn run(&mut self, cpu: &mut CpuState, budget_ticks: u64, user_insns: u64) -> RunOutcome<'_> {
        self.stats.calls += 1;
        if self.prealloc.is_some() {
            self.report_prealloc(false);
        }
        if self.disabled {
            return self.decline(Decline::Disabled, crate::policy::NEVER_TICKS);
        }
        if let Some(ticks) = self.backoff.take() {
            return self.decline(Decline::Backoff, ticks);
        }
        match self
            .policy
            .decide(budget_ticks, user_insns, self.hot.contains(cpu.cr3))
        {
            Decision::Enter => self.run_native(cpu, budget_ticks),
            Decision::Decline {
                reason,
                retry_after_ticks,
            } => self.decline(reason, retry_after_ticks),
        }
    }

    fn note_declined(&mut self, reason: u32) {
        self.stats.decline(reason);
    }

    fn flush_tlb(&mut self, include_global: bool) {
        if include_global {
            self.stats.flush_all += 1;
        } else {
            self.stats.flush_non_global += 1;
        }
        self.mmu.flush(include_global);
    }

    fn invlpg(&mut self, linear: u32) {
        self.stats.invlpg += 1;
        self.mmu.invalidate(linear);
    }

    fn protect_code_page(&mut self, physical: u64) {
        self.stats.protect_requests += 1;
        let page = physical & !0xfff;
        if page < self.ram_size && self.protected.insert(page) {
            self.mmu.protect(page);
        }
    }

    fn memory_map_changed(&mut self, ranges: &[(u64, u64)]) {
        self.stats.memory_map_changes += 1;
        let (map, problems) = normalize_ram_map(ranges, self.ram_size);
        for p in problems {
            self.log.error(&format!("memory map: {p}"));
        }
        self.ram_map = map;
        self.mmu.flush(true);
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Waits for an allocation still running (seconds only for tens of GiB of RAM).
        self.report_prealloc(true);
        let wall = u64::try_from(self.stats.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for line in self.stats.summary(wall) {
            self.log.info(&line);
        }
        if let Some(path) = &self.stats_path {
            match std::fs::write(path, self.stats.to_json(wall)) {
                Ok(()) => self
                    .log
                    .info(&format!("statistics written to {}", path.display())),
                Err(e) => self.log.error(&format!(
                    "cannot write statistics to {}: {e}",
                    path.display()
                )),
            }
        }
    }

    fn native_progress_uncertain(&self) -> bool {
        self.native_started
    }

    fn disable(&mut self, why: &str) {
        self.disabled = true;
        self.native_started = false;
        self.stats.failures += 1;
        self.stats.failure.get_or_insert_with(|| why.to_string());
    }

    fn log(&self) -> &Logger {
        &self.log
    }

    fn native_cpuid_is_hosts(&self) -> bool {
        !self.backend.cpuid_faulting()
    }
}

impl<B: Backend> Drop for Accelerator<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests;
