//! The entry policy: whether a call of `plex86_accel_run` should run the guest natively.
//!
//! Pure and cheap: it looks only at counters, and allocates nothing. Whether the state itself
//! can run natively is the host driver's rule (`host_driver::validate_entry`, written once): the
//! accelerator treats its `UnsupportedState` answer as a decline.
//!
//! # Thresholds
//!
//! A native run costs a fixed exit + re-entry of about [`EXIT_REENTRY_NS`] of host time on the
//! project's VMs (futex handover with polling, docs/ARCHITECTURE.md "Control-region
//! protocol"), and the budget timer overshoots a little (figures: docs/ARCHITECTURE.md,
//! "Costs behind the constants"). An entry is declined
//! ([`Decline::NoBudget`]) when the budget is shorter than [`MIN_BUDGET_NS`], twice the round
//! trip: below that, most of the slice would be spent entering and leaving, and the timer's
//! overshoot would exceed the slice itself. In guest ticks that is `MIN_BUDGET_NS × ips / 1e9`
//! (840 ticks at `ips=60000000`).
//!
//! # Back-off
//!
//! A native run that ends after less than [`SHORT_RUN_NS`] (host time, entry and exit
//! included) cost more than Bochs would have needed for the instructions it ran: a system-call
//! or page-fault loop, RDTSC polling, a short-lived process filling its pages. After each such
//! run the next entry waits for Bochs to emulate [`BACKOFF_START_TICKS`] ticks, doubling with
//! every further short run up to [`BACKOFF_MAX_TICKS`]; one longer run resets it. Demand
//! fills are not guest work: the time the executor measured for them (its handler plus a fault
//! round trip calibrated at start-up, more as the mirror's mappings grow) is subtracted. A short
//! run without fills that the budget ended says nothing about the guest code on its own and
//! neither arms nor resets; its work is carried over to the next run if that one resumes where
//! it stopped (same CR3 and RIP: only the timer event came between), so that a stretch of guest
//! work cut into pieces by frequent timer events is judged whole. (A serial console sending
//! output ends a slice at every character, 87 µs at 115200 baud: a compute loop's piece that
//! ends at an RDTSC or a system call is then often short on its own.) At the cap an entry is tried
//! after an eighth to the whole of a million ticks (milliseconds of emulation; the eighths
//! taken in an order that spreads them, [`CAP_EIGHTHS`]), so a program that turns to compute is
//! run natively again within milliseconds, and a program that never does pays one short run
//! per ~560,000 ticks. A fixed distance locked onto loops whose exits come a little more than
//! the cap apart: a loop with an RDTSC every 1.2 million instructions was tried 1 million
//! ticks after each, the run from there to the next RDTSC was short every time, and the loop
//! stayed emulated for as long as it ran.
//!
//! A state the driver cannot run (an LDT selector, a conforming code segment, …) usually
//! persists for a while, so such declines ask Bochs to emulate [`UNSUPPORTED_RETRY_NS`] worth of
//! ticks before asking again: that bounds the cost of filling the state and checking it to a
//! few percent of emulation time.
//!
//! # Long mode
//!
//! ABI 6 hands the library long-mode states too. Only the stub executor runs long-mode code,
//! 64-bit and compatibility-mode (issue 15; the default backend starts it at the first
//! long-mode entry): with today's executor alone (`PLEX86_ACCEL_BACKEND=executor`)
//! [`mode_decline`] declines 64-bit mode ([`Decline::LongMode64`]) and compatibility mode
//! ([`Decline::LongModeCompat`]), before anything is converted, with the unsupported-state
//! retry, each counted under its own name. Bochs itself declines, with reasons of its own,
//! the long-mode features native code would not honour (LA57, LAM, UINTR, PKE, user CET).

use bochs_ffi::raw;

/// Host cost of one exit plus re-entry, as measured (docs/ARCHITECTURE.md, "Costs behind the
/// constants").
pub const EXIT_REENTRY_NS: u64 = 7_000;
/// Shortest budget worth an entry: twice the exit + re-entry cost.
pub const MIN_BUDGET_NS: u64 = 2 * EXIT_REENTRY_NS;
/// Native runs shorter than this (host time, entry and exit included, demand fills excluded)
/// count as not paying off: a few times what a run that only enters and exits takes.
pub const SHORT_RUN_NS: u64 = 32_000;
/// What a demand fill costs beyond the time the executor reports for it (handler entry and the
/// return to compatibility mode, which its calibration cannot see), an upper estimate from
/// host-driver's benchmark and bench-pagefault (docs/ARCHITECTURE.md, "Costs behind the
/// constants").
pub const UNTIMED_FILL_NS: u64 = 1_500;
/// A run ends after this many demand fills (host-driver's `max_fills_per_run`). A loop that
/// touches each page a few times, like a checksum over fresh memory, would otherwise stay native
/// paying many times per page what Bochs needs; ending the run lets the back-off
/// judge it (a run of mostly fills is short once fills are subtracted).
pub const MAX_FILLS_PER_RUN: u32 = 64;
/// First back-off distance after a short run, in guest ticks.
pub const BACKOFF_START_TICKS: u64 = 1_000;
/// Largest back-off distance, in guest ticks.
pub const BACKOFF_MAX_TICKS: u64 = 1_000_000;
/// At the cap, successive distances in eighths of [`BACKOFF_MAX_TICKS`]: every eighth once per
/// cycle, neighbours far apart.
pub const CAP_EIGHTHS: [u64; 8] = [8, 3, 6, 1, 5, 2, 7, 4];
/// After an unsupported-state decline, emulate this long before asking again.
pub const UNSUPPORTED_RETRY_NS: u64 = 50_000;

/// `retry_after_ticks` of a DISABLED decline: "never" (2^62 ticks: 146 years at 1 GHz), yet
/// small enough that Bochs can add it to a 64-bit tick counter without overflowing.
pub const NEVER_TICKS: u64 = 1 << 62;

/// Guest ticks → host nanoseconds (`ticks × 1e9 / ips`, saturating; `ips` > 0).
pub fn ticks_to_ns(ticks: u64, ips: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(ips.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Host nanoseconds → guest ticks (`ns × ips / 1e9`, saturating).
pub fn ns_to_ticks(ns: u64, ips: u64) -> u64 {
    let t = u128::from(ns) * u128::from(ips) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Why an entry is declined by the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decline {
    /// Still within the first `min_user_insns` user instructions after a kernel return.
    ShortBurst,
    /// The host driver cannot run this state (`host_driver::validate_entry`).
    Unsupported,
    /// The next timer event is too close.
    NoBudget,
    /// The accelerator disabled itself after a failure.
    Disabled,
    /// Recent native runs were too short to pay off (see "Back-off").
    Backoff,
    /// 64-bit mode, with an executor that runs 32-bit code only.
    LongMode64,
    /// Compatibility mode (a 32-bit process of a 64-bit guest), with an executor that does
    /// not run it.
    LongModeCompat,
}

impl Decline {
    /// The header's `PLEX86_ACCEL_DECLINE_*` value.
    pub fn code(self) -> u32 {
        match self {
            Decline::ShortBurst => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_SHORT_BURST
            }
            Decline::Unsupported => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE
            }
            Decline::NoBudget => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NO_BUDGET,
            Decline::Disabled => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_DISABLED,
            Decline::Backoff => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_BACKOFF,
            Decline::LongMode64 => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_64
            }
            Decline::LongModeCompat => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_COMPAT
            }
        }
    }

    /// What the log says the first time an entry is declined for this reason, when it says
    /// more than the statistics' name.
    pub fn explanation(self) -> Option<&'static str> {
        match self {
            Decline::LongMode64 => {
                Some("long mode: this executor runs 32-bit code only (PLEX86_ACCEL_BACKEND=executor; 64-bit user code is emulated; unset or auto runs it natively on the stub executor)")
            }
            Decline::LongModeCompat => {
                Some("long mode: this executor runs no compatibility-mode code (PLEX86_ACCEL_BACKEND=executor; 32-bit processes of a 64-bit guest are emulated; unset or auto runs them natively on the stub executor)")
            }
            _ => None,
        }
    }
}

/// The decline for a CPU mode (`plex86_accel_cpu_state.mode`) the library cannot run natively:
/// 64-bit mode and compatibility mode, unless the backend runs them (`code_modes`: the stub
/// executor), have reasons of their own; real and V8086 mode (which Bochs never
/// offers) and unknown values are unsupported states. `None` for 32-bit protected mode.
pub fn mode_decline(mode: u32, code_modes: host_driver::CodeModes) -> Option<Decline> {
    match mode {
        raw::plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED => None,
        raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64 if code_modes.long64() => None,
        raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64 => Some(Decline::LongMode64),
        raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT if code_modes.compat() => None,
        raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT => Some(Decline::LongModeCompat),
        _ => Some(Decline::Unsupported),
    }
}

/// The policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run natively.
    Enter,
    /// Let Bochs emulate.
    Decline {
        /// Why.
        reason: Decline,
        /// Ticks Bochs should emulate before asking again (0: any time; [`NEVER_TICKS`]: never).
        retry_after_ticks: u64,
    },
}

/// The entry policy's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// User instructions to emulate after each kernel return before entering.
    pub min_user_insns: u64,
    /// Budgets below this many ticks are declined.
    pub min_budget_ticks: u64,
    /// Retry distance after an unsupported-state decline.
    pub unsupported_retry_ticks: u64,
}

impl Policy {
    /// The policy for Bochs's `ips` and `min_user_insns`.
    pub fn new(ips: u64, min_user_insns: u32) -> Self {
        Policy {
            min_user_insns: u64::from(min_user_insns),
            min_budget_ticks: ns_to_ticks(MIN_BUDGET_NS, ips),
            unsupported_retry_ticks: ns_to_ticks(UNSUPPORTED_RETRY_NS, ips),
        }
    }

    /// Decides on one entry. `hot`: the address space's last native run paid off (see
    /// [`HotSpaces`]), so the short-burst rule does not apply.
    pub fn decide(&self, budget_ticks: u64, user_insns: u64, hot: bool) -> Decision {
        if !hot && user_insns < self.min_user_insns {
            return Decision::Decline {
                reason: Decline::ShortBurst,
                retry_after_ticks: self.min_user_insns - user_insns,
            };
        }
        if budget_ticks < self.min_budget_ticks {
            // Nothing changes before the timer event; after it the budget is renewed.
            return Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: budget_ticks,
            };
        }
        Decision::Enter
    }
}

/// What [`Backoff::record_run`] made of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunVerdict {
    /// Enough guest work to pay for entry and exit.
    PaidOff,
    /// Too little: the back-off is armed.
    Short,
    /// Says nothing (a short run without fills that the budget ended).
    Neutral,
}

/// Address spaces (by CR3) whose last judged native run paid off. After a return from the
/// kernel such a process is entered at once instead of after `min_user_insns`: a compute loop
/// comes back from every timer interrupt, and emulating its first instructions each time would
/// cost a few percent. A process starts cold (short-lived processes stay emulated); a short
/// run makes it cold again. A few entries suffice: a freed CR3 reused by a new process only
/// starts that process hot once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotSpaces {
    cr3: [Option<u64>; HOT_SPACES],
    next: usize,
}

/// How many hot address spaces are remembered.
pub const HOT_SPACES: usize = 8;

impl HotSpaces {
    /// Whether `cr3`'s last judged run paid off.
    pub fn contains(&self, cr3: u64) -> bool {
        self.cr3.contains(&Some(cr3))
    }

    /// Records the verdict on a run in address space `cr3`.
    pub fn record(&mut self, cr3: u64, verdict: RunVerdict) {
        match verdict {
            RunVerdict::PaidOff if !self.contains(cr3) => {
                self.cr3[self.next] = Some(cr3);
                self.next = (self.next + 1) % HOT_SPACES;
            }
            RunVerdict::Short => {
                for e in &mut self.cr3 {
                    if *e == Some(cr3) {
                        *e = None;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Where a native run began or ended: the address space and the instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// The guest's CR3 (the address space).
    pub cr3: u64,
    /// The instruction pointer.
    pub rip: u64,
}

/// One native run as the back-off judges it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSample {
    /// Host nanoseconds of the run, fills included.
    pub native_ns: u64,
    /// Nanoseconds the executor measured for the run's demand fills.
    pub fill_ns: u64,
    /// Demand fills of the run.
    pub demand_fills: u32,
    /// The budget (the next timer event) ended the run.
    pub budget_expired: bool,
    /// Where the run was entered.
    pub entry: Place,
    /// Where it stopped (the instruction it ended before).
    pub exit: Place,
}

/// The adaptive back-off after native runs that were too short to pay off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Ticks the next call must decline for; 0 when not armed.
    armed_ticks: u64,
    /// The current back-off distance; 0 after a run that paid off.
    distance: u64,
    /// Guest work of short runs the budget ended, and where the last of them stopped: a run
    /// entered there continues that stretch of work.
    carry: Option<(Place, u64)>,
    /// Short runs at the cap so far (picks the next of [`CAP_EIGHTHS`]).
    at_cap: usize,
}

impl Backoff {
    /// Records a native run. A run that mostly mirrored pages did little guest work, however
    /// long it took. A short run without fills that the budget ended says nothing about the
    /// guest code on its own (the next timer event was close): it neither arms nor resets, and
    /// its work counts towards the next run if that one is entered where it stopped. With
    /// fills it does arm: a run the budget ended while it mostly mirrored pages (a loop
    /// touching fresh pages) is exactly what the back-off is for.
    pub fn record_run(&mut self, run: RunSample) -> RunVerdict {
        let fills_ns = run
            .fill_ns
            .saturating_add(u64::from(run.demand_fills) * UNTIMED_FILL_NS);
        let carried = match self.carry.take() {
            Some((at, ns)) if at == run.entry => ns,
            _ => 0,
        };
        let work_ns = run
            .native_ns
            .saturating_sub(fills_ns)
            .saturating_add(carried);
        if work_ns >= SHORT_RUN_NS {
            self.distance = 0;
            self.armed_ticks = 0;
            RunVerdict::PaidOff
        } else if run.budget_expired && run.demand_fills == 0 {
            self.carry = Some((run.exit, work_ns));
            RunVerdict::Neutral
        } else {
            self.distance = if self.distance == 0 {
                BACKOFF_START_TICKS
            } else {
                (self.distance * 2).min(BACKOFF_MAX_TICKS)
            };
            self.armed_ticks = if self.distance < BACKOFF_MAX_TICKS {
                self.distance
            } else {
                let eighths = CAP_EIGHTHS[self.at_cap % CAP_EIGHTHS.len()];
                self.at_cap = self.at_cap.wrapping_add(1);
                BACKOFF_MAX_TICKS / 8 * eighths
            };
            RunVerdict::Short
        }
    }

    /// If armed, disarms and returns the ticks the current call must decline for.
    pub fn take(&mut self) -> Option<u64> {
        let t = std::mem::take(&mut self.armed_ticks);
        (t > 0).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPS: u64 = 60_000_000;

    fn policy() -> Policy {
        Policy::new(IPS, 1000)
    }

    #[test]
    fn time_conversions() {
        assert_eq!(ticks_to_ns(60_000_000, IPS), 1_000_000_000);
        assert_eq!(ticks_to_ns(1, IPS), 16);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX, "saturates");
        assert_eq!(ticks_to_ns(5, 0), 5_000_000_000, "ips 0 treated as 1");
        assert_eq!(ns_to_ticks(1_000_000_000, IPS), IPS);
        assert_eq!(ns_to_ticks(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(ns_to_ticks(10, IPS), 0);
    }

    #[test]
    fn thresholds_follow_ips() {
        let p = policy();
        assert_eq!(p.min_budget_ticks, 840);
        assert_eq!(p.unsupported_retry_ticks, 3000);
        assert_eq!(Policy::new(1_000_000_000, 0).min_budget_ticks, 14_000);
    }

    #[test]
    fn enters_with_budget_after_the_burst() {
        assert_eq!(policy().decide(1_000_000, 1000, false), Decision::Enter);
    }

    #[test]
    fn short_burst_retries_after_the_remaining_instructions() {
        let d = policy().decide(1_000_000, 250, false);
        assert_eq!(
            d,
            Decision::Decline {
                reason: Decline::ShortBurst,
                retry_after_ticks: 750
            }
        );
        // Short burst is checked before the budget.
        assert_eq!(
            policy().decide(0, 0, false),
            Decision::Decline {
                reason: Decline::ShortBurst,
                retry_after_ticks: 1000
            }
        );
    }

    #[test]
    fn no_budget_below_the_threshold() {
        let p = policy();
        assert_eq!(
            p.decide(839, 5000, false),
            Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: 839
            }
        );
        assert_eq!(p.decide(840, 5000, false), Decision::Enter);
        assert_eq!(
            p.decide(0, 5000, false),
            Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: 0
            }
        );
    }

    #[test]
    fn hot_address_spaces_skip_the_short_burst() {
        let p = policy();
        assert_eq!(p.decide(1_000_000, 0, true), Decision::Enter);
        assert_eq!(
            p.decide(100, 0, true),
            Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: 100
            },
            "the budget rule still applies"
        );
        let mut h = HotSpaces::default();
        assert!(!h.contains(0x1000), "cold at start");
        h.record(0x1000, RunVerdict::Neutral);
        assert!(!h.contains(0x1000));
        h.record(0x1000, RunVerdict::PaidOff);
        h.record(0x1000, RunVerdict::PaidOff);
        assert!(h.contains(0x1000));
        h.record(0x1000, RunVerdict::Neutral);
        assert!(h.contains(0x1000), "neutral runs change nothing");
        h.record(0x1000, RunVerdict::Short);
        assert!(!h.contains(0x1000), "a short run makes it cold");
        for i in 0..HOT_SPACES as u64 + 1 {
            h.record(0x2000 + i * 0x1000, RunVerdict::PaidOff);
        }
        assert!(!h.contains(0x2000), "the oldest is forgotten");
        assert!(h.contains(0x2000 + HOT_SPACES as u64 * 0x1000));
        // 64-bit CR3 values are told apart by their high bits.
        h.record(0x1_0000_1000, RunVerdict::PaidOff);
        assert!(h.contains(0x1_0000_1000));
        assert!(!h.contains(0x1000));
    }

    /// A run elsewhere each time (no carry between them unless a test asks for it).
    fn run(native_ns: u64, fill_ns: u64, demand_fills: u32, budget_expired: bool) -> RunSample {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0x1000);
        let rip = NEXT.fetch_add(0x10, Ordering::Relaxed);
        RunSample {
            native_ns,
            fill_ns,
            demand_fills,
            budget_expired,
            entry: Place { cr3: 0x5000, rip },
            exit: Place {
                cr3: 0x5000,
                rip: rip + 8,
            },
        }
    }

    #[test]
    fn backoff_doubles_after_short_runs_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.take(), None, "not armed at start");
        b.record_run(run(SHORT_RUN_NS - 1, 0, 0, false));
        assert_eq!(b.take(), Some(BACKOFF_START_TICKS));
        assert_eq!(b.take(), None, "one decline per short run");
        b.record_run(run(1_000, 0, 0, false));
        assert_eq!(b.take(), Some(2 * BACKOFF_START_TICKS));
        for _ in 0..40 {
            b.record_run(run(1_000, 0, 0, false));
        }
        let at_cap = b.take().unwrap();
        assert!(at_cap <= BACKOFF_MAX_TICKS && at_cap % (BACKOFF_MAX_TICKS / 8) == 0);
        b.record_run(run(1_000, 0, 0, true));
        assert_eq!(
            b.take(),
            None,
            "a short run ended by the budget does not arm..."
        );
        b.record_run(run(1_000, 0, 0, false));
        assert!(b.take().unwrap() >= BACKOFF_MAX_TICKS / 8, "...nor reset");
        b.record_run(run(SHORT_RUN_NS, 0, 0, true));
        assert_eq!(b.take(), None);
        b.record_run(run(1_000, 0, 0, false));
        assert_eq!(
            b.take(),
            Some(BACKOFF_START_TICKS),
            "a long run ended by the budget resets"
        );
        b.record_run(run(SHORT_RUN_NS - 1 + 30_000, 30_000, 3, true));
        assert_eq!(
            b.take(),
            Some(2 * BACKOFF_START_TICKS),
            "fills are no guest work, also when the budget ended the run"
        );
        b.record_run(run(SHORT_RUN_NS, 0, 0, false));
        assert_eq!(b.take(), None, "a run that paid off resets");
    }

    #[test]
    fn at_the_cap_the_distance_takes_every_eighth_in_turn() {
        let mut b = Backoff::default();
        while b.distance < BACKOFF_MAX_TICKS {
            b.record_run(run(1_000, 0, 0, false));
        }
        let first = b.take().unwrap();
        assert_eq!(
            first, BACKOFF_MAX_TICKS,
            "the first time at the cap: the whole of it"
        );
        let mut seen = vec![first];
        for _ in 1..8 {
            b.record_run(run(1_000, 0, 0, false));
            seen.push(b.take().unwrap());
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        let eighths: Vec<u64> = (1..=8).map(|k| k * BACKOFF_MAX_TICKS / 8).collect();
        assert_eq!(sorted, eighths, "each eighth once per cycle: {seen:?}");
        assert!(
            seen.windows(2)
                .all(|w| w[0].abs_diff(w[1]) >= 2 * BACKOFF_MAX_TICKS / 8),
            "neighbours far apart: {seen:?}"
        );
        b.record_run(run(SHORT_RUN_NS, 0, 0, false));
        b.record_run(run(1_000, 0, 0, false));
        assert_eq!(
            b.take(),
            Some(BACKOFF_START_TICKS),
            "a run that paid off resets"
        );
    }

    #[test]
    fn a_stretch_cut_by_the_budget_is_judged_whole() {
        // A compute loop while the serial console sends: the budget ends the run every 87 µs,
        // and the piece ending at the loop's RDTSC is short on its own.
        let at = |rip| Place { cr3: 0x5000, rip };
        let piece = |ns, budget, from, to| RunSample {
            native_ns: ns,
            budget_expired: budget,
            entry: at(from),
            exit: at(to),
            ..RunSample::default()
        };
        let mut b = Backoff::default();
        assert_eq!(
            b.record_run(piece(20_000, true, 0x100, 0x140)),
            RunVerdict::Neutral
        );
        assert_eq!(
            b.record_run(piece(9_000, true, 0x140, 0x120)),
            RunVerdict::Neutral
        );
        assert_eq!(
            b.record_run(piece(5_000, false, 0x120, 0x200)),
            RunVerdict::PaidOff,
            "20 + 9 + 5 µs of one stretch pay off"
        );
        assert_eq!(b.take(), None);
        // Only a run that resumes where the budget stopped the last one continues it.
        assert_eq!(
            b.record_run(piece(20_000, true, 0x100, 0x140)),
            RunVerdict::Neutral
        );
        assert_eq!(
            b.record_run(piece(20_000, false, 0x300, 0x310)),
            RunVerdict::Short,
            "elsewhere: a new stretch"
        );
        assert_eq!(b.take(), Some(BACKOFF_START_TICKS));
        assert_eq!(
            b.record_run(piece(20_000, true, 0x100, 0x140)),
            RunVerdict::Neutral
        );
        let other_process = RunSample {
            entry: Place {
                cr3: 0x6000,
                rip: 0x140,
            },
            ..piece(20_000, false, 0, 0)
        };
        assert_eq!(
            b.record_run(other_process),
            RunVerdict::Short,
            "another address space"
        );
        // A carry is used once.
        assert_eq!(
            b.record_run(piece(20_000, true, 0x100, 0x140)),
            RunVerdict::Neutral
        );
        assert_eq!(
            b.record_run(piece(1_000, false, 0x140, 0x150)),
            RunVerdict::Short
        );
        assert_eq!(
            b.record_run(piece(1_000, false, 0x150, 0x160)),
            RunVerdict::Short
        );
        // A budget-ended run that mirrored pages arms as before, and carries nothing.
        let fills = RunSample {
            fill_ns: 25_000,
            demand_fills: 2,
            ..piece(30_000, true, 0x100, 0x140)
        };
        assert_eq!(b.record_run(fills), RunVerdict::Short);
        assert_eq!(
            b.record_run(piece(30_000, false, 0x140, 0x150)),
            RunVerdict::Short
        );
    }

    #[test]
    fn decline_codes_are_the_headers() {
        assert_eq!(Decline::ShortBurst.code(), 1);
        assert_eq!(Decline::Unsupported.code(), 2);
        assert_eq!(Decline::NoBudget.code(), 3);
        assert_eq!(Decline::Disabled.code(), 4);
        assert_eq!(Decline::Backoff.code(), 5);
        assert_eq!(Decline::LongMode64.code(), 6);
        assert_eq!(Decline::LongModeCompat.code(), 7);
    }

    #[test]
    fn long_mode_is_declined_with_reasons_of_its_own() {
        use host_driver::CodeModes::{Legacy32, Legacy32AndLong64};
        use raw::*;
        for modes in [Legacy32, Legacy32AndLong64] {
            assert_eq!(
                mode_decline(plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED, modes),
                None
            );
            assert_eq!(
                mode_decline(plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT, modes),
                Some(Decline::LongModeCompat)
            );
            for m in [
                plex86_accel_mode_PLEX86_ACCEL_MODE_REAL,
                plex86_accel_mode_PLEX86_ACCEL_MODE_V8086,
                5,
                u32::MAX,
            ] {
                assert_eq!(
                    mode_decline(m, modes),
                    Some(Decline::Unsupported),
                    "mode {m}"
                );
            }
        }
        assert_eq!(
            mode_decline(plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64, Legacy32),
            Some(Decline::LongMode64)
        );
        assert_eq!(
            mode_decline(
                plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64,
                Legacy32AndLong64
            ),
            None,
            "64-bit code without compatibility mode"
        );
        // The stub executor (and the default backend) runs both.
        let all = host_driver::CodeModes::Legacy32Long64AndCompat;
        for m in [
            plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED,
            plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64,
            plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT,
        ] {
            assert_eq!(mode_decline(m, all), None, "mode {m}");
        }
        assert_eq!(
            mode_decline(plex86_accel_mode_PLEX86_ACCEL_MODE_REAL, all),
            Some(Decline::Unsupported)
        );
        assert!(Decline::LongMode64
            .explanation()
            .unwrap()
            .starts_with("long mode: this executor runs 32-bit code only"));
        assert!(Decline::LongModeCompat
            .explanation()
            .unwrap()
            .starts_with("long mode: this executor runs no compatibility-mode code"));
        assert_eq!(Decline::Backoff.explanation(), None);
    }
}
