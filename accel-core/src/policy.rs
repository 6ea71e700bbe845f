//! The entry policy: whether a call of `plex86_accel_run` should run the guest natively.
//!
//! Pure and cheap: it looks only at the Bochs state and two counters, and allocates nothing.
//! Checks run cheapest first: disabled, short burst, budget, then the state rules that the
//! host driver would refuse (its `UnsupportedState` error is treated as the same decline by
//! the caller, in case the two ever disagree).
//!
//! # Thresholds
//!
//! A native run costs a fixed exit + re-entry of about [`EXIT_REENTRY_NS`] of host time on the
//! project's VMs (futex handover with polling, docs/ARCHITECTURE.md "Control-region
//! protocol"), and the budget timer overshoots by 8-20 µs. An entry is declined
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
//! fills ([`FILL_NS`] each) are not guest work and are subtracted; a short run that the budget
//! ended says nothing about the guest code and neither arms nor resets. At the cap an
//! entry is tried once per million ticks (about 4 ms of emulation at Bochs's ~240 MIPS), so a
//! program that turns to compute is run natively again within milliseconds, and a program that
//! never does pays one short run per 4 ms (well under 1%).
//!
//! A state the driver cannot run (an LDT selector, a conforming code segment, …) usually
//! persists for a while, so such declines ask Bochs to emulate [`UNSUPPORTED_RETRY_NS`] worth of
//! ticks before asking again: that bounds the cost of filling the state and checking it to a
//! few percent of emulation time.

use crate::state::effective_xcr0;
use bochs_ffi::raw::{self, plex86_accel_cpu_state as CpuState};

/// Measured host cost of one exit plus re-entry (2-vCPU EPYC VMs, a free core per process).
pub const EXIT_REENTRY_NS: u64 = 7_000;
/// Shortest budget worth an entry: twice the exit + re-entry cost.
pub const MIN_BUDGET_NS: u64 = 2 * EXIT_REENTRY_NS;
/// Native runs shorter than this (host time, entry and exit included, demand fills excluded)
/// count as not paying off. A run that does nothing but enter and exit takes 8-16 µs here
/// (measured with the run-length histogram of the statistics).
pub const SHORT_RUN_NS: u64 = 32_000;
/// Host cost of one demand fill inside a run (host-driver's fill benchmark: 8.4-8.8 µs). A run
/// that mostly mirrors fresh pages did little guest work, however long it took.
pub const FILL_NS: u64 = 8_000;
/// First back-off distance after a short run, in guest ticks.
pub const BACKOFF_START_TICKS: u64 = 1_000;
/// Largest back-off distance, in guest ticks.
pub const BACKOFF_MAX_TICKS: u64 = 1_000_000;
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
    /// The host driver cannot run this state; the reason is for the log.
    Unsupported(&'static str),
    /// The next timer event is too close.
    NoBudget,
    /// The accelerator disabled itself after a failure.
    Disabled,
    /// Recent native runs were too short to pay off (see "Back-off").
    Backoff,
}

impl Decline {
    /// The header's `PLEX86_ACCEL_DECLINE_*` value.
    pub fn code(self) -> u32 {
        match self {
            Decline::ShortBurst => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_SHORT_BURST
            }
            Decline::Unsupported(_) => {
                raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE
            }
            Decline::NoBudget => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NO_BUDGET,
            Decline::Disabled => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_DISABLED,
            Decline::Backoff => raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_BACKOFF,
        }
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
    /// XSAVE components the host transfers (`XsaveInfo::features`).
    pub host_xsave_features: u64,
}

impl Policy {
    /// The policy for Bochs's `ips` and `min_user_insns`, on a host transferring
    /// `host_xsave_features`.
    pub fn new(ips: u64, min_user_insns: u32, host_xsave_features: u64) -> Self {
        Policy {
            min_user_insns: u64::from(min_user_insns),
            min_budget_ticks: ns_to_ticks(MIN_BUDGET_NS, ips),
            unsupported_retry_ticks: ns_to_ticks(UNSUPPORTED_RETRY_NS, ips),
            host_xsave_features,
        }
    }

    /// Decides on one entry.
    pub fn decide(&self, cpu: &CpuState, budget_ticks: u64, user_insns: u64) -> Decision {
        if user_insns < self.min_user_insns {
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
        if let Err(why) = check_state(cpu, self.host_xsave_features) {
            return Decision::Decline {
                reason: Decline::Unsupported(why),
                retry_after_ticks: self.unsupported_retry_ticks,
            };
        }
        Decision::Enter
    }
}

const EFL_RESERVED_ZERO: u32 = (1 << 3) | (1 << 5) | (1 << 15) | 0xffc0_0000;
const EFL_TF: u32 = 1 << 8;
const EFL_IF: u32 = 1 << 9;
const EFL_IOPL: u32 = 3 << 12;
const EFL_NT: u32 = 1 << 14;
const EFL_VM: u32 = 1 << 17;
const EFL_VIF: u32 = 1 << 19;
const EFL_VIP: u32 = 1 << 20;

const ATTR_S: u16 = 0x10;
const ATTR_P: u16 = 0x80;
const ATTR_L: u16 = 1 << 13;
const TYPE_CODE: u16 = 8;
const TYPE_CONFORMING: u16 = 4; // code segments
const TYPE_WRITABLE: u16 = 2; // data segments
const TYPE_READABLE: u16 = 2; // code segments

/// The adaptive back-off after native runs that were too short to pay off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Ticks the next call must decline for; 0 when not armed.
    armed_ticks: u64,
    /// The current back-off distance; 0 after a run that paid off.
    distance: u64,
}

impl Backoff {
    /// Records a native run of `native_ns` with `demand_fills` fills that ended for
    /// `budget_expired` or another reason. A short run that the budget ended says nothing about
    /// the guest code (the next timer event was close): it neither arms nor resets.
    pub fn record_run(&mut self, native_ns: u64, demand_fills: u32, budget_expired: bool) {
        let work_ns = native_ns.saturating_sub(u64::from(demand_fills) * FILL_NS);
        if work_ns >= SHORT_RUN_NS {
            self.distance = 0;
            self.armed_ticks = 0;
        } else if !budget_expired {
            self.distance = if self.distance == 0 {
                BACKOFF_START_TICKS
            } else {
                (self.distance * 2).min(BACKOFF_MAX_TICKS)
            };
            self.armed_ticks = self.distance;
        }
    }

    /// If armed, disarms and returns the ticks the current call must decline for.
    pub fn take(&mut self) -> Option<u64> {
        let t = std::mem::take(&mut self.armed_ticks);
        (t > 0).then_some(t)
    }
}

/// The host driver's entry rules (host-driver `validate_entry`, plus the conforming-segment
/// limit of `modify_ldt`), checked on the Bochs state. `Err` names the first rule broken.
pub fn check_state(cpu: &CpuState, host_xsave_features: u64) -> Result<(), &'static str> {
    let f = cpu.eflags;
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 {
        return Err("EFLAGS reserved bits are wrong");
    }
    if f & EFL_IF == 0 || f & (EFL_IOPL | EFL_TF | EFL_NT | EFL_VM | EFL_VIF | EFL_VIP) != 0 {
        // RF is allowed: `state::to_guest` clears it (see there).
        return Err("EFLAGS: native runs need IF=1, IOPL=0 and TF/NT/VM/VIF/VIP clear");
    }
    if cpu.cr0 & 1 == 0 {
        return Err("CR0.PE is clear");
    }
    for (i, s) in cpu.seg.iter().enumerate() {
        let null = s.selector & !3 == 0;
        if s.selector & 4 != 0 {
            return Err("a segment register holds an LDT selector (guest LDTs are not mirrored)");
        }
        if s.valid == 0 && !null {
            return Err(
                "a segment register has a non-null selector but an invalid descriptor cache",
            );
        }
        let attr = if s.valid == 0 { 0 } else { s.attr };
        let ty = attr & 0xf;
        let code = ty & TYPE_CODE != 0;
        let dpl = (attr >> 5) & 3;
        let present_user = attr & ATTR_P != 0 && attr & ATTR_S != 0;
        if !null && code && ty & TYPE_CONFORMING != 0 {
            return Err(
                "a segment register holds a conforming code segment (modify_ldt refuses them)",
            );
        }
        match i {
            1 => {
                if null
                    || s.selector & 3 != 3
                    || !present_user
                    || !code
                    || attr & ATTR_L != 0
                    || dpl != 3
                {
                    return Err("CS is not a present DPL 3 32/16-bit code segment with RPL 3");
                }
            }
            2 => {
                if null
                    || s.selector & 3 != 3
                    || !present_user
                    || code
                    || ty & TYPE_WRITABLE == 0
                    || dpl != 3
                {
                    return Err("SS is not a present writable DPL 3 data segment with RPL 3");
                }
            }
            _ => {
                if !null && (!present_user || (code && ty & TYPE_READABLE == 0) || dpl != 3) {
                    return Err("a data segment register is not present, execute-only, a system segment or DPL < 3");
                }
            }
        }
        if s.limit > 0xfffff || attr & 0x0f00 != 0 {
            return Err("segment limit or attribute bits out of range");
        }
        if !null {
            for t in &cpu.seg[..i] {
                if t.selector & !3 != 0
                    && t.selector >> 3 == s.selector >> 3
                    && (t.base, t.limit, t.attr, t.valid) != (s.base, s.limit, s.attr, s.valid)
                {
                    return Err("two segment registers share a GDT index but not their descriptor");
                }
            }
        }
    }
    let xcr0 = effective_xcr0(cpu);
    if xcr0 & !host_xsave_features != 0 {
        return Err("the guest's XCR0 enables state components the host does not transfer");
    }
    if xcr0 & 0xe0 != 0 && xcr0 & 0xe4 != 0xe4 {
        return Err("the guest's XCR0 enables only part of the AVX-512 state");
    }
    if cpu.fpu.mxcsr & !0xffff != 0 {
        return Err("MXCSR has reserved bits set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{sample_state, CR4_OSXSAVE};

    const IPS: u64 = 60_000_000;

    fn policy() -> Policy {
        Policy::new(IPS, 1000, 0xe7)
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
        assert_eq!(Policy::new(1_000_000_000, 0, 3).min_budget_ticks, 14_000);
    }

    #[test]
    fn enters_a_plain_user_state() {
        assert_eq!(
            policy().decide(&sample_state(), 1_000_000, 1000),
            Decision::Enter
        );
    }

    #[test]
    fn short_burst_retries_after_the_remaining_instructions() {
        let d = policy().decide(&sample_state(), 1_000_000, 250);
        assert_eq!(
            d,
            Decision::Decline {
                reason: Decline::ShortBurst,
                retry_after_ticks: 750
            }
        );
        // Short burst is checked before everything else.
        let mut s = sample_state();
        s.eflags = 0x2;
        assert_eq!(
            policy().decide(&s, 0, 0),
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
            p.decide(&sample_state(), 839, 5000),
            Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: 839
            }
        );
        assert_eq!(p.decide(&sample_state(), 840, 5000), Decision::Enter);
        assert_eq!(
            p.decide(&sample_state(), 0, 5000),
            Decision::Decline {
                reason: Decline::NoBudget,
                retry_after_ticks: 0
            }
        );
    }

    #[test]
    fn backoff_doubles_after_short_runs_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.take(), None, "not armed at start");
        b.record_run(SHORT_RUN_NS - 1, 0, false);
        assert_eq!(b.take(), Some(BACKOFF_START_TICKS));
        assert_eq!(b.take(), None, "one decline per short run");
        b.record_run(1_000, 0, false);
        assert_eq!(b.take(), Some(2 * BACKOFF_START_TICKS));
        for _ in 0..40 {
            b.record_run(1_000, 0, false);
        }
        assert_eq!(b.take(), Some(BACKOFF_MAX_TICKS));
        b.record_run(1_000, 0, true);
        assert_eq!(b.take(), None, "a short run ended by the budget does not arm...");
        b.record_run(1_000, 0, false);
        assert_eq!(b.take(), Some(BACKOFF_MAX_TICKS), "...nor reset");
        b.record_run(SHORT_RUN_NS, 0, true);
        assert_eq!(b.take(), None);
        b.record_run(1_000, 0, false);
        assert_eq!(
            b.take(),
            Some(BACKOFF_START_TICKS),
            "a long run ended by the budget resets"
        );
        b.record_run(SHORT_RUN_NS - 1 + 3 * FILL_NS, 3, false);
        assert_eq!(
            b.take(),
            Some(2 * BACKOFF_START_TICKS),
            "fills are no guest work"
        );
        b.record_run(SHORT_RUN_NS, 0, false);
        assert_eq!(b.take(), None, "a run that paid off resets");
    }

    fn unsupported(f: impl Fn(&mut CpuState)) -> &'static str {
        let mut s = sample_state();
        f(&mut s);
        match policy().decide(&s, 1_000_000, 1000) {
            Decision::Decline {
                reason: Decline::Unsupported(why),
                retry_after_ticks,
            } => {
                assert_eq!(retry_after_ticks, 3000);
                why
            }
            d => panic!("expected an unsupported-state decline, got {d:?}"),
        }
    }

    #[test]
    fn unsupported_states() {
        assert!(unsupported(|s| s.seg[3].selector = 0x7f).contains("LDT"));
        assert!(unsupported(|s| s.seg[1].attr |= 4).contains("conforming"));
        assert!(unsupported(|s| {
            s.seg[4] = s.seg[1];
            s.seg[4].selector = 0x63;
            s.seg[4].attr |= 4;
        })
        .contains("conforming"));
        assert!(unsupported(|s| s.seg[1].selector = 0x70).contains("CS"));
        assert!(unsupported(|s| s.seg[1].attr = s.seg[0].attr).contains("CS"));
        assert!(
            unsupported(|s| s.seg[1].attr |= 1 << 13).contains("CS"),
            "64-bit code"
        );
        assert!(
            unsupported(|s| s.seg[1].attr &= !(3 << 5)).contains("CS"),
            "DPL 0"
        );
        assert!(
            unsupported(|s| s.seg[2].attr &= !2).contains("SS"),
            "read-only stack"
        );
        assert!(unsupported(|s| s.seg[2].valid = 0).contains("invalid descriptor cache"));
        assert!(
            unsupported(|s| s.seg[3].attr &= !0x80).contains("data segment"),
            "not present"
        );
        assert!(
            unsupported(|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0x8).contains("data segment"),
            "execute-only"
        );
        assert!(
            unsupported(|s| s.seg[5].attr &= !(1 << 5)).contains("data segment"),
            "DPL 2"
        );
        assert!(unsupported(|s| s.seg[3].base = 0x1000).contains("share a GDT index"));
        assert!(unsupported(|s| s.seg[5].limit = 0x10_0000).contains("limit"));
        assert!(unsupported(|s| s.eflags &= !0x200).contains("IF=1"));
        assert!(unsupported(|s| s.eflags |= 0x3000).contains("IOPL"));
        let mut rf = sample_state();
        rf.eflags |= 1 << 16;
        assert_eq!(
            check_state(&rf, 0xe7),
            Ok(()),
            "RF=1 (after a return from a fault) is entered"
        );
        assert!(unsupported(|s| s.eflags |= 1 << 14).contains("NT"));
        assert!(unsupported(|s| s.eflags |= 1 << 3).contains("reserved"));
        assert!(unsupported(|s| s.eflags &= !2).contains("reserved"));
        assert!(unsupported(|s| s.cr0 &= !1).contains("PE"));
        assert!(unsupported(|s| s.xcr0 |= 0x200).contains("XCR0"), "PKRU");
        assert!(unsupported(|s| s.xcr0 = 0x27).contains("part of the AVX-512"));
        assert!(unsupported(|s| s.fpu.mxcsr = 0x1_0000).contains("MXCSR"));
    }

    #[test]
    fn acceptable_variations() {
        let ok = |f: &dyn Fn(&mut CpuState)| {
            let mut s = sample_state();
            f(&mut s);
            assert_eq!(check_state(&s, 0xe7), Ok(()));
        };
        ok(&|s| {
            s.seg[0] = raw::plex86_accel_segment {
                selector: 0,
                attr: 0,
                limit: 0,
                base: 0,
                valid: 0,
            }
        });
        ok(&|s| s.seg[4].selector = 3); // null with RPL 3
        ok(&|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0xb); // readable code in GS
        ok(&|s| s.seg[5].attr = (s.seg[5].attr & !0xf) | 0x5); // expand-down read-only data
        ok(&|s| s.seg[1].attr &= !(1 << 14)); // 16-bit code
        ok(&|s| s.eflags |= 0xcd5 | (1 << 18) | (1 << 21)); // arithmetic flags, DF, AC, ID
        ok(&|s| {
            s.cr4 &= !CR4_OSXSAVE;
            s.xcr0 = 0x2e7; // not in force without OSXSAVE
        });
        // With XCR0 beyond an AVX-only host's features, the same state is unsupported.
        assert!(check_state(&sample_state(), 0x7).is_err());
        let mut s = sample_state();
        s.xcr0 = 7;
        assert_eq!(check_state(&s, 0x7), Ok(()));
    }

    #[test]
    fn decline_codes_are_the_headers() {
        assert_eq!(Decline::ShortBurst.code(), 1);
        assert_eq!(Decline::Unsupported("x").code(), 2);
        assert_eq!(Decline::NoBudget.code(), 3);
        assert_eq!(Decline::Disabled.code(), 4);
    }
}
