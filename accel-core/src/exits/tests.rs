use super::*;
use crate::policy::Decline;
use host_driver::{Access, EscapeKind, SyscallInstruction};
use std::collections::HashSet;

#[test]
fn exit_table_covers_the_header() {
    assert_eq!(EXITS.len(), EXIT_REASONS);
    for (i, &(code, name)) in EXITS.iter().enumerate() {
        assert_eq!(code as usize, i, "{name}");
        assert_eq!(EXIT_NAMES[i], name);
        assert!(!name.is_empty());
    }
    let names: HashSet<&str> = EXITS.iter().map(|&(_, n)| n).collect();
    assert_eq!(names.len(), EXITS.len(), "exit names are unique");
}

#[test]
fn decline_table_covers_the_header() {
    let mut codes = HashSet::new();
    let mut names = HashSet::new();
    for &(code, name) in &DECLINES {
        assert!((code as usize) < DECLINE_REASONS, "{name} = {code}");
        assert!(codes.insert(code), "{name}: code {code} twice");
        assert!(names.insert(name), "{name} twice");
        assert_eq!(decline_name(code as usize), Some(name));
    }
    for i in 0..DECLINE_REASONS + 2 {
        assert_eq!(
            decline_name(i).is_some(),
            codes.contains(&(i as u32)),
            "slot {i}"
        );
    }
    for d in [
        Decline::ShortBurst,
        Decline::Unsupported,
        Decline::NoBudget,
        Decline::Disabled,
        Decline::Backoff,
        Decline::LongMode64,
        Decline::LongModeCompat,
    ] {
        assert!(decline_name(d.code() as usize).is_some(), "{d:?}");
    }
}

/// Every `PLEX86_ACCEL_DECLINE_*` the header defines (but the slot count) has a name in the
/// statistics, so a reason added to the header cannot be counted as "unknown".
#[test]
fn every_decline_in_the_header_is_named() {
    let defined: Vec<u32> = bochs_ffi::HEADER
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PLEX86_ACCEL_DECLINE_"))
        .filter(|l| !l.starts_with("REASONS"))
        .filter_map(|l| l.split('=').nth(1))
        .map(|v| {
            v.trim()
                .trim_end_matches(',')
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(',')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(defined.len(), DECLINES.len(), "{defined:?}");
    for code in defined {
        assert!(decline_name(code as usize).is_some(), "code {code}");
    }
    for name in [
        "long_mode_64",
        "long_mode_compat",
        "la57",
        "lam",
        "user_cet",
        "uintr",
        "pke",
    ] {
        assert!(DECLINES.iter().any(|&(_, n)| n == name), "{name}");
    }
}

/// The variant's position in `ExitReason`: the match has no wildcard, so a new variant does
/// not compile until it is added to [`one_of_each`].
fn variant(r: &ExitReason) -> usize {
    use ExitReason as R;
    match r {
        R::PageFault { .. } => 0,
        R::NeedsEmulation { .. } => 1,
        R::GeneralProtection { .. } => 2,
        R::InvalidOpcode => 3,
        R::DivideError => 4,
        R::X87Exception => 5,
        R::SimdException => 6,
        R::Breakpoint => 7,
        R::SoftwareInterrupt { .. } => 8,
        R::Overflow => 9,
        R::SystemCall { .. } => 10,
        R::Rdtsc { .. } => 11,
        R::Privileged => 12,
        R::SegmentLoad => 13,
        R::Cpuid => 14,
        R::SingleStep => 15,
        R::OtherException { .. } => 16,
        R::BudgetExpired => 17,
        R::FillLimit => 18,
        R::CodeLogFull => 19,
        R::GuestEscape { .. } => 20,
    }
}
const VARIANTS: usize = 21;

fn one_of_each() -> Vec<ExitReason> {
    use ExitReason as R;
    vec![
        R::PageFault {
            linear: 0x1000,
            access: Access::Read,
            error_code: 4,
        },
        R::NeedsEmulation {
            linear: 0,
            access: Access::Write,
        },
        R::GeneralProtection { error_code: 0 },
        R::InvalidOpcode,
        R::DivideError,
        R::X87Exception,
        R::SimdException,
        R::Breakpoint,
        R::SoftwareInterrupt { vector: 0x21 },
        R::Overflow,
        R::SystemCall {
            instruction: SyscallInstruction::Sysenter,
        },
        R::Rdtsc { rdtscp: false },
        R::Privileged,
        R::SegmentLoad,
        R::Cpuid,
        R::SingleStep,
        R::OtherException {
            vector: 17,
            error_code: Some(0),
        },
        R::BudgetExpired,
        R::FillLimit,
        R::CodeLogFull,
        R::GuestEscape {
            kind: EscapeKind::HostSyscall,
            address: 0,
            diagnostic: 0,
        },
    ]
}

#[test]
fn every_exit_reason_has_a_header_code() {
    let samples = one_of_each();
    let covered: HashSet<usize> = samples.iter().map(variant).collect();
    assert_eq!(covered.len(), VARIANTS, "one sample of every variant");
    let mut codes = HashSet::new();
    for r in &samples {
        match exit_code(r) {
            Some(code) => {
                assert!((code as usize) < EXIT_REASONS, "{r:?}");
                codes.insert(code);
            }
            // Today's executor is gone and the guest state is meaningless: Bochs gets FAILED.
            None => assert!(matches!(r, ExitReason::GuestEscape { .. }), "{r:?}"),
        }
        // What the stub's record of a contained escape maps to; the same as the reason's for
        // everything else.
        let mut rec = ExitRecord::new(*r);
        rec.escape_contained = true;
        match (r, record_exit_code(&rec)) {
            (ExitReason::GuestEscape { .. }, Some(code)) => {
                assert_eq!(
                    code,
                    raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE
                );
                codes.insert(code);
            }
            (_, code) => assert_eq!(code, exit_code(r), "{r:?}"),
        }
        assert_eq!(record_exit_code(&ExitRecord::new(*r)), exit_code(r));
        // The stub's SYSENTER of compatibility-mode code: EIP lost, ECX intact.
        let mut rec = ExitRecord::new(*r);
        rec.eip_lost = true;
        if let Some(code) = record_exit_code(&rec) {
            codes.insert(code);
        }
    }
    assert_eq!(codes.len(), EXIT_REASONS, "every header exit is reachable");
}

/// A SYSENTER whose EIP the host discarded is carried out by Bochs only when the rest of the
/// state is whole (the stub's, ECX intact); SYSCALL, or ECX lost, stays the stop it was.
#[test]
fn only_a_whole_sysenter_without_eip_is_bochs_s_to_carry_out() {
    let sysenter = ExitReason::SystemCall {
        instruction: SyscallInstruction::Sysenter,
    };
    let syscall = ExitReason::SystemCall {
        instruction: SyscallInstruction::Syscall,
    };
    let record = |r, eip_lost, ecx_clobbered| {
        let mut rec = ExitRecord::new(r);
        (rec.eip_lost, rec.ecx_clobbered) = (eip_lost, ecx_clobbered);
        rec
    };
    let sys = raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSTEM_CALL;
    let cases = [
        (
            record(sysenter, true, false),
            true,
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSENTER,
        ),
        (record(sysenter, true, true), false, sys),
        (record(sysenter, false, false), false, sys),
        (record(syscall, true, false), false, sys),
        (record(syscall, true, true), false, sys),
    ];
    for (rec, whole, code) in cases {
        assert_eq!(sysenter_without_eip(&rec), whole, "{rec:?}");
        assert_eq!(record_exit_code(&rec), Some(code), "{rec:?}");
    }
}

#[test]
fn reason_mapping() {
    use ExitReason as R;
    let cases: &[(ExitReason, u32)] = &[
        (
            R::PageFault {
                linear: 0,
                access: Access::Read,
                error_code: 0,
            },
            0,
        ),
        (
            R::NeedsEmulation {
                linear: 0,
                access: Access::Write,
            },
            1,
        ),
        (R::GeneralProtection { error_code: 0 }, 2),
        (R::InvalidOpcode, 3),
        (R::DivideError, 4),
        (R::X87Exception, 5),
        (R::SimdException, 6),
        (R::Breakpoint, 7),
        (R::Overflow, 7),
        (R::SoftwareInterrupt { vector: 0x21 }, 7),
        (R::SoftwareInterrupt { vector: 0x80 }, 8),
        (
            R::SystemCall {
                instruction: SyscallInstruction::Syscall,
            },
            8,
        ),
        (R::Rdtsc { rdtscp: true }, 9),
        (R::Privileged, 10),
        (R::SegmentLoad, 11),
        (
            R::OtherException {
                vector: 17,
                error_code: Some(0),
            },
            12,
        ),
        (R::BudgetExpired, 13),
        (R::CodeLogFull, 14),
        (R::FillLimit, 15),
        (R::SingleStep, 16),
        (R::Cpuid, 17),
    ];
    for &(r, code) in cases {
        assert_eq!(exit_code(&r), Some(code), "{r:?}");
    }
    assert_eq!(
        exit_code(&R::GuestEscape {
            kind: EscapeKind::LongMode,
            address: 0,
            diagnostic: 0
        }),
        None
    );
}
