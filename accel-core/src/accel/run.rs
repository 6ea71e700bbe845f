//! One native run: the checks before entry, the backend call, the accounting of what the run
//! cost, and the state and exit handed back to Bochs.

use super::Accelerator;
use crate::backend::{Backend, Which};
use crate::decode;
use crate::exits::{record_exit_code, worth_decoding};
use crate::policy::{ns_to_ticks, ticks_to_ns, Place, RunSample};
use crate::state::{self, effective_xcr0};
use crate::{CpuState, RunOutcome};
use host_driver::{DriverError, ExitReason, MmuCommand, SyscallInstruction};
use std::time::{Duration, Instant};

/// The paging state that the mirror depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PagingKey {
    /// The guest's CR3, all 64 bits.
    cr3: u64,
    /// CR0.PG/WP, CR4.PSE/PAE/PGE, EFER.NXE/LMA.
    mode: (u64, u64, u64),
}

impl PagingKey {
    pub(super) fn of(cpu: &CpuState) -> Self {
        PagingKey {
            cr3: cpu.cr3,
            mode: (
                cpu.cr0 & (1 << 31 | 1 << 16),
                cpu.cr4 & (1 << 4 | 1 << 5 | 1 << 7),
                cpu.efer & (1 << 11 | 1 << 10),
            ),
        }
    }
}

/// Log at most this many contained escapes (then only count them): a process that keeps
/// escaping, with a SIGSEGV handler of its own, must not flood the log.
const CONTAINED_ESCAPE_LOG_LIMIT: u64 = 16;

/// Why no run: the outcome to return instead (a decline or a failure).
type NotRun = RunOutcome<'static>;

impl<B: Backend> Accelerator<B> {
    /// Runs `cpu` natively for at most `budget_ticks` (the policy said Enter).
    pub(super) fn run_native(&mut self, cpu: &mut CpuState, budget_ticks: u64) -> RunOutcome<'_> {
        let key = match self.enter_checks(cpu) {
            Ok(key) => key,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self.run_backend(budget_ticks) {
            return outcome;
        }
        self.account(cpu, key);
        self.hand_back(cpu)
    }

    /// Brings the mirror in line with `cpu` and converts its state; declines a state the
    /// driver would refuse. Nothing has been sent yet.
    fn enter_checks(&mut self, cpu: &CpuState) -> Result<PagingKey, NotRun> {
        if let Err(e) = self.sync_memory_map() {
            return Err(self.fail(
                format!("restarting the executor for the new memory map failed: {e}"),
                false,
            ));
        }
        let key = PagingKey::of(cpu);
        self.flush_for_paging_change(key);
        self.report.note_xcr0(effective_xcr0(cpu));
        state::to_guest(cpu, &self.xsave, &mut self.scratch.gs);
        match self.backend.prepare(&self.scratch.gs) {
            Ok(None) => {}
            Ok(Some(started)) => {
                self.report.stats.stub_starts += 1;
                self.report.log.info(&started);
            }
            Err(e) => return Err(self.fail(e, false)),
        }
        // The driver's entry rules for what this backend runs, checked before anything is
        // queued or sent (the driver checks again in `run`).
        if let Err(DriverError::UnsupportedState(m)) =
            host_driver::validate_entry_for(&self.scratch.gs, self.xsave, self.backend.code_modes())
        {
            return Err(self.unsupported(&m));
        }
        Ok(key)
    }

    /// Brings the executor in line with the memory map Bochs reported last.
    fn sync_memory_map(&mut self) -> Result<(), String> {
        let m = &mut self.mirror;
        if m.backend_map == m.ram_map {
            return Ok(());
        }
        self.backend.respawn(&m.ram_map)?;
        self.report.stats.respawns += 1;
        m.backend_map = m.ram_map.clone();
        self.fresh_executor();
        self.report.log.info(&format!(
            "memory map changed: restarted the {}",
            self.backend.describe()
        ));
        Ok(())
    }

    /// A fresh executor process runs the guest from now on (a respawn, or the stub's
    /// replacement after a contained escape): its mirror is empty and no page is
    /// write-protected in it, so the protections are queued again.
    fn fresh_executor(&mut self) {
        let m = &mut self.mirror;
        self.xsave = self.backend.xsave_info();
        m.mmu.drop_flushes();
        for &p in &m.protected {
            m.mmu.protect(p);
        }
        m.last_paging = None;
    }

    /// Flushes the mirror when the paging mode, or CR3 without a flush notification, changed
    /// since the last run.
    fn flush_for_paging_change(&mut self, key: PagingKey) {
        let (m, stats) = (&mut self.mirror, &mut self.report.stats);
        let Some(prev) = m.last_paging else {
            return;
        };
        if prev.mode != key.mode {
            m.mmu.flush(true);
            stats.paging_mode_flushes += 1;
        } else if prev.cr3 != key.cr3 && !m.mmu.has_flush() {
            m.mmu.flush(true);
            stats.unreported_cr3_flushes += 1;
            if stats.unreported_cr3_flushes == 1 {
                self.report.log.info("CR3 changed between entries without a TLB-flush notification: flushing the mirror (counted from now on)");
            }
        }
    }

    /// Sends the queued MMU commands and runs the converted state for `budget_ticks`.
    /// The exit is copied into `scratch.exit`.
    fn run_backend(&mut self, budget_ticks: u64) -> Result<(), NotRun> {
        let s = &mut self.scratch;
        s.commands.clear();
        self.mirror.mmu.commands(&mut s.commands);
        let budget = Duration::from_nanos(ticks_to_ns(budget_ticks, self.pacing.ips));
        self.native_started = true;
        let t0 = Instant::now();
        let result = match self.backend.run(&mut s.gs, budget, &s.commands) {
            Ok(exit) => {
                s.exit.clone_from(exit);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.report.stats.run_wall_ns += u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => Ok(()),
            // Refused before anything was sent: the commands stay queued.
            Err(DriverError::UnsupportedState(m)) => Err(self.unsupported(&m)),
            Err(e @ DriverError::StubRegionMapped { .. }) => {
                self.report.stats.stub_region_refused += 1;
                Err(self.unsupported(&e.to_string()))
            }
            Err(e) => {
                let lost = self.backend.failed_run_may_have_executed();
                Err(self.fail(format!("native run failed: {e}"), lost))
            }
        }
    }

    /// Counts what the run cost and sent, whatever its exit, and tells the pacing about it.
    fn account(&mut self, cpu: &CpuState, key: PagingKey) {
        self.count_commands();
        self.mirror.mmu.clear();
        self.mirror.last_paging = Some(key);
        let ran = &self.scratch.exit;
        let stats = &mut self.report.stats;
        stats.native_ns += ran.native_ns;
        stats.demand_fills += u64::from(ran.demand_fills);
        stats.fill_ns += ran.fill_ns;
        stats.run_length(ran.native_ns);
        if let ExitReason::NeedsEmulation { linear, .. } = ran.reason {
            if self.mirror.stub_block.contains(&linear) {
                stats.stub_region_emulated += 1;
            }
        }
        let verdict = self.pacing.backoff.record_run(RunSample {
            native_ns: ran.native_ns,
            fill_ns: ran.fill_ns,
            demand_fills: ran.demand_fills,
            budget_expired: matches!(ran.reason, ExitReason::BudgetExpired),
            entry: Place {
                cr3: cpu.cr3,
                rip: cpu.rip,
            },
            exit: Place {
                cr3: cpu.cr3,
                rip: self.scratch.gs.rip,
            },
        });
        self.pacing.hot.record(cpu.cr3, verdict);
    }

    fn count_commands(&mut self) {
        let (stats, commands) = (&mut self.report.stats, &self.scratch.commands);
        stats.commands_sent += commands.len() as u64;
        stats.write_protects_sent += commands
            .iter()
            .filter(|c| matches!(c, MmuCommand::WriteProtectPhysPage(_)))
            .count() as u64;
    }

    /// Translates the exit for Bochs and writes the state back into `cpu`, or fails when the
    /// guest cannot be resumed.
    fn hand_back(&mut self, cpu: &mut CpuState) -> RunOutcome<'_> {
        let ran = &self.scratch.exit;
        let Some(reason) = record_exit_code(ran) else {
            return self.fail(ran.reason.describe(), true);
        };
        if ran.eip_lost && !crate::exits::sysenter_without_eip(ran) {
            let why = match ran.reason {
                ExitReason::SystemCall {
                    instruction: SyscallInstruction::Sysenter,
                } => "SYSENTER executed natively (from 64-bit code, after a mode switch, with TF set or with an unreadable stack: only compatibility-mode code's is carried out)",
                _ => "SYSCALL executed natively in 32-bit code (the guest CPU model must not offer it there; a 64-bit Linux guest on an AMD CPU uses it for its 32-bit processes whatever CPUID says: boot it with clearcpuid=110 so that its 32-bit vDSO uses INT 0x80)",
            };
            return self.fail(
                format!(
                    "{why}: the host kernel's compat fast-syscall path discarded EIP and ECX, so the guest cannot be resumed"
                ),
                true,
            );
        }
        let code_pages = ran.code_pages.as_slice();
        for p in code_pages {
            self.mirror.protected.remove(p);
        }
        let written = code_pages.len() as u64;
        if ran.escape_contained {
            // After the written pages left the protected set: the rest is protected again.
            self.contained_escape(cpu.cr3);
        }
        let ran = &self.scratch.exit;
        let stats = &mut self.report.stats;
        stats.code_page_invalidations += written;
        let ticks = ns_to_ticks(ran.native_ns, self.pacing.ips).max(1);
        let seg_reload = state::from_guest(&self.scratch.gs, &self.xsave, cpu);
        stats.runs += 1;
        stats.backend_runs[self.backend.ran_on() as usize] += 1;
        let gs = &self.scratch.gs;
        if gs.long_mode() && !gs.code64() {
            stats.compat_runs += 1;
        }
        let cs = &gs.segs[host_driver::protocol::seg::CS];
        if gs.long_mode() && cs.flags & host_driver::SEG_NOT_INSTALLED != 0 {
            stats.mode_switch_runs += 1;
        }
        stats.exit(reason);
        stats.ticks_charged = stats.ticks_charged.saturating_add(ticks);
        if worth_decoding(reason) {
            match self.memory.as_deref().and_then(|m| {
                decode::instruction_at(m, &decode::CodeAt::of_guest(&self.scratch.gs))
            }) {
                Some(k) => *stats.instructions.entry((reason as usize, k)).or_insert(0) += 1,
                None => stats.undecoded += 1,
            }
        }
        self.native_started = false;
        RunOutcome::Ran {
            reason,
            ticks,
            seg_reload,
            code_pages: self.scratch.exit.code_pages.as_slice(),
            contained: self.backend.ran_on() == Which::Stub,
        }
    }

    /// The executor contained a guest escape (the stub: it replaced its process): counted,
    /// logged (the first few) with the guest's CR3 and where it was caught, and the mirror
    /// bookkeeping starts over for the fresh process. The guest process takes #GP(0) in Bochs;
    /// it is entered again only as the policy says, like any other.
    fn contained_escape(&mut self, cr3: u64) {
        self.fresh_executor();
        let stats = &mut self.report.stats;
        stats.escapes_contained += 1;
        let n = stats.escapes_contained;
        if n <= CONTAINED_ESCAPE_LOG_LIMIT {
            let more = if n == CONTAINED_ESCAPE_LOG_LIMIT {
                " (further ones are only counted: escapes.contained)"
            } else {
                ""
            };
            let (reason, rip) = (self.scratch.exit.reason.describe(), self.scratch.gs.rip);
            self.report.log.error(&format!(
                "contained guest escape: {reason}; guest CR3 {cr3:#x}, RIP {rip:#x}: the guest process takes #GP(0), its executor process was replaced (now the {}){more}",
                self.backend.describe()
            ));
        }
    }
}
