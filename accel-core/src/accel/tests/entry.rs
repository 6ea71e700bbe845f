//! Entry, pacing and what a run hands back to Bochs.

use super::*;

#[test]
fn ran_maps_reason_ticks_and_state() {
    let mut s = step(ExitReason::Privileged);
    s.native_ns = 1_000_000; // 1 ms → 60,000 ticks
    s.fills = 3;
    s.mutate = Some(Box::new(|g: &mut GuestState| {
        g.gprs[0] = 0xdead_beef;
        g.rip += 7;
        g.rflags |= 1;
        g.xsave.0[160] ^= 0xff; // XMM0 byte 0
    }));
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    let before = cpu;
    let out = run(&mut t, &mut cpu);
    assert_eq!(
        out,
        RunOutcome::Ran {
            reason: 10,
            ticks: 60_000,
            seg_reload: 0,
            code_pages: &[],
            contained: false,
        }
    );
    assert_eq!(cpu.gpr[0], 0xdead_beef);
    assert_eq!(cpu.rip, before.rip + 7);
    assert_eq!(cpu.rflags, before.rflags | 1);
    assert_eq!(cpu.fpu.zmm[0][0], before.fpu.zmm[0][0] ^ 0xff);
    assert_eq!(cpu.fpu.zmm[0][1..], before.fpu.zmm[0][1..]);
    assert_eq!(cpu.seg[1].selector, before.seg[1].selector);
    // The budget was converted to host time: 600,000 ticks at 60 MIPS = 10 ms.
    let log = t.log.lock().unwrap();
    assert_eq!(log.runs[0].0, Duration::from_millis(10));
    assert_eq!(log.runs[0].2.xcr0, 0xe7);
    drop(log);
    let st = t.accel.stats();
    assert_eq!(
        (
            st.calls,
            st.runs,
            st.exits[10],
            st.ticks_charged,
            st.demand_fills,
            st.native_ns
        ),
        (1, 1, 1, 60_000, 3, 1_000_000)
    );
}

#[test]
fn short_runs_back_off_and_long_or_budget_runs_reset() {
    let short = |fills| {
        let mut s = step(ExitReason::Privileged);
        s.fill_ns = u64::from(fills) * 200_000;
        s.native_ns = 5_000 + s.fill_ns;
        s.fills = fills;
        s
    };
    let mut t = accel(vec![
        short(0),
        short(4),
        step(ExitReason::Privileged), // 1 ms: pays off
        short(0),
        {
            let mut s = step(ExitReason::BudgetExpired);
            s.native_ns = 5_000;
            s
        },
        short(0),
    ]);
    let mut cpu = sample_state();
    let backoff = |retry_after_ticks| RunOutcome::Declined {
        reason: Decline::Backoff.code(),
        retry_after_ticks,
    };
    let start = crate::policy::BACKOFF_START_TICKS;
    let mut outcomes = Vec::new();
    for _ in 0..9 {
        outcomes.push(match run(&mut t, &mut cpu) {
            RunOutcome::Ran { .. } => None,
            other => Some(other),
        });
    }
    assert_eq!(
        outcomes,
        [
            None,                     // short run
            Some(backoff(start)),     // ...so the next call declines
            None,                     // short, its time all demand fills
            Some(backoff(2 * start)), // the distance doubles
            None,                     // a run that paid off: no back-off
            None,                     // short again: starts over
            Some(backoff(start)),
            None, // short but ended by the budget: neutral
            None, // the last short run
        ]
    );
    assert_eq!(
        t.log.lock().unwrap().runs.len(),
        6,
        "declines never reach the backend"
    );
}

#[test]
fn a_process_whose_runs_pay_off_is_entered_right_after_the_kernel() {
    let mut t = accel(vec![
        step(ExitReason::Privileged),
        step(ExitReason::Privileged),
    ]);
    let mut cpu = sample_state();
    let short_burst = |o: RunOutcome<'_>| matches!(o, RunOutcome::Declined { reason: 1, .. });
    assert!(
        short_burst(t.accel.run(&mut cpu, BUDGET, 0)),
        "cold: the first 100 are emulated"
    );
    assert!(
        matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }),
        "a 1 ms run: pays off"
    );
    assert!(
        matches!(t.accel.run(&mut cpu, BUDGET, 0), RunOutcome::Ran { .. }),
        "hot: entered at once"
    );
    cpu.cr3 += 0x1000;
    assert!(
        short_burst(t.accel.run(&mut cpu, BUDGET, 0)),
        "another process is cold"
    );
}

#[test]
fn at_least_one_tick_is_charged() {
    let mut s = step(ExitReason::PageFault {
        linear: 0x1000,
        access: host_driver::Access::Read,
        error_code: 4,
    });
    s.native_ns = 0;
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    assert_eq!(
        run(&mut t, &mut cpu),
        RunOutcome::Ran {
            reason: 0,
            ticks: 1,
            seg_reload: 0,
            code_pages: &[],
            contained: false,
        }
    );
}

/// A single step taken natively reaches Bochs as its own reason, with TF set in the state (the
/// state is after the stepped instruction), and is counted under its name.

#[test]
fn single_step_exit_keeps_tf_and_is_counted() {
    let mut s = step(ExitReason::SingleStep);
    s.mutate = Some(Box::new(|g: &mut GuestState| {
        g.rflags |= 0x100;
        g.rip += 5;
    }));
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    let before = cpu;
    let RunOutcome::Ran { reason, .. } = run(&mut t, &mut cpu) else {
        panic!("not RAN");
    };
    let want = raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SINGLE_STEP;
    assert_eq!(reason, want);
    assert_eq!(cpu.rflags, before.rflags | 0x100);
    assert_eq!(cpu.rip, before.rip + 5);
    let json = t.accel.stats().to_json(1);
    assert!(json.contains("\"single_step\":1"), "{json}");
    assert_eq!(t.accel.stats().exits[want as usize], 1);
}

#[test]
fn policy_declines_do_not_reach_the_backend() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 40),
        RunOutcome::Declined {
            reason: 1,
            retry_after_ticks: 60
        }
    );
    assert_eq!(
        t.accel.run(&mut cpu, 100, 1000),
        RunOutcome::Declined {
            reason: 3,
            retry_after_ticks: 100
        }
    );
    cpu.seg[3].selector |= 4;
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 1000),
        RunOutcome::Declined {
            reason: 2,
            retry_after_ticks: 3000
        }
    );
    assert!(t.log.lock().unwrap().runs.is_empty());
    let st = t.accel.stats();
    assert_eq!(
        (
            st.declines[1],
            st.declines[2],
            st.declines[3],
            st.calls,
            st.runs
        ),
        (1, 1, 1, 3, 0)
    );
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("LDT selector")));
}

#[test]
fn drivers_unsupported_state_is_a_decline_and_keeps_commands() {
    let mut t = accel(vec![error(DriverError::UnsupportedState(
        "something new".into(),
    ))]);
    t.accel.flush_tlb(true);
    let mut cpu = sample_state();
    let before = cpu;
    assert_eq!(
        run(&mut t, &mut cpu),
        RunOutcome::Declined {
            reason: 2,
            retry_after_ticks: 3000
        }
    );
    assert_eq!(format!("{cpu:?}"), format!("{before:?}"), "state unchanged");
    assert!(!t.accel.is_disabled());
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 1),
        vec![MmuCommand::FlushAll],
        "the flush is still sent"
    );
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("unsupported state: host driver: something new")));
}

#[test]
fn a_stub_region_collision_is_a_counted_decline_and_emulated_accesses_there_are_counted() {
    let block = host_driver::protocol::stub::reserved_block(config().stub_base);
    let mut t = accel(vec![
        error(DriverError::StubRegionMapped {
            base: config().stub_base,
        }),
        step(ExitReason::NeedsEmulation {
            linear: block.start + 0x40_0000,
            access: host_driver::Access::Read,
        }),
        step(ExitReason::NeedsEmulation {
            linear: 0x1000,
            access: host_driver::Access::Read,
        }),
    ]);
    let mut cpu = sample_state();
    assert!(matches!(
        run(&mut t, &mut cpu),
        RunOutcome::Declined { reason: 2, .. }
    ));
    assert!(!t.accel.is_disabled());
    run(&mut t, &mut cpu);
    run(&mut t, &mut cpu);
    let stats = &t.accel.report.stats;
    assert_eq!(
        (stats.stub_region_refused, stats.stub_region_emulated),
        (1, 1),
        "the access below S's block is not counted"
    );
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("the stub's region")));
}

#[test]
fn long_mode_is_declined_with_named_counted_reasons() {
    use test_support::guest_state::sample_long_state;
    let mut t = accel(vec![step(ExitReason::Privileged)]);
    let mut cpu = sample_long_state();
    let before = cpu;
    let long64 = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_64;
    let compat = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_COMPAT;
    let retry = t.accel.policy().unsupported_retry_ticks;
    for _ in 0..3 {
        assert_eq!(
            t.accel.run(&mut cpu, BUDGET, 1_000_000),
            RunOutcome::Declined {
                reason: long64,
                retry_after_ticks: retry
            }
        );
    }
    cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT;
    assert!(matches!(
        t.accel.run(&mut cpu, BUDGET, 1_000_000),
        RunOutcome::Declined { reason, .. } if reason == compat
    ));
    cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_V8086;
    assert!(matches!(
        t.accel.run(&mut cpu, BUDGET, 1_000_000),
        RunOutcome::Declined { reason: 2, .. }
    ));
    cpu.mode = before.mode;
    assert_eq!(
        format!("{cpu:?}"),
        format!("{before:?}"),
        "a decline changes nothing"
    );
    assert!(
        t.log.lock().unwrap().runs.is_empty(),
        "long mode never reaches the 32-bit backend"
    );
    let st = t.accel.stats();
    assert_eq!(
        (
            st.declines[long64 as usize],
            st.declines[compat as usize],
            st.declines[2],
            st.calls,
            st.runs
        ),
        (3, 1, 1, 5, 0)
    );
    let lines = t.lines.lock().unwrap();
    let said = |s: &str| lines.iter().filter(|(_, m)| m.contains(s)).count();
    assert_eq!(
        said("long mode: this executor runs 32-bit code only"),
        1,
        "logged once"
    );
    assert_eq!(said("this executor runs no compatibility-mode code"), 1);
    drop(lines);
    // The names in the statistics.
    let json = t.accel.stats().to_json(1);
    assert!(json.contains("\"long_mode_64\":3"), "{json}");
    assert!(json.contains("\"long_mode_compat\":1"), "{json}");
    // A 32-bit state still runs.
    let mut cpu = sample_state();
    assert!(matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }));
}

/// A 32-bit process of a 64-bit guest (compatibility mode) on a backend that runs it (the
/// stub): not declined for its mode; the backend gets it in long mode with 32-bit code's
/// values, and the exit comes back as 32-bit code's (EAX..EDI's low halves, R8..R15 Bochs's).
#[test]
fn compat_mode_runs_on_a_backend_that_runs_it() {
    use test_support::guest_state::sample_long_state;
    let mut t = accel(vec![Step {
        mutate: Some(Box::new(|s: &mut GuestState| {
            s.gprs[0] = 0x1234;
            s.rip += 2;
        })),
        ..step(ExitReason::Privileged)
    }]);
    t.accel.backend.code_modes = host_driver::CodeModes::Legacy32Long64AndCompat;
    let mut cpu = sample_long_state();
    cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT;
    cpu.seg[1].attr = (cpu.seg[1].attr & !(1 << 13)) | 1 << 14; // L=0, D=1
    cpu.seg[1].selector = 0x23;
    for i in [4, 5] {
        cpu.seg[i] = cpu.seg[3]; // flat data selectors, as a compat process's TLS
    }
    for g in cpu.gpr[..8].iter_mut() {
        *g &= 0xffff_ffff;
    }
    cpu.rip = 0x0804_9000;
    cpu.rflags = 0x202;
    let r9 = cpu.gpr[9];
    assert!(matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }));
    let log = t.log.lock().unwrap();
    let entered = &log.runs[0].2;
    assert!(entered.long_mode() && !entered.code64());
    assert_eq!(
        entered.cr3, 0x0000_0001_2345_6005,
        "the PML4 above 4 GiB, PCID 5"
    );
    assert_eq!(entered.gprs[9], r9, "R9 as Bochs has it");
    drop(log);
    assert_eq!((cpu.gpr[0], cpu.rip), (0x1234, 0x0804_9002));
    assert_eq!(cpu.gpr[9], r9);
    let st = t.accel.stats();
    assert_eq!((st.runs, st.declines.iter().sum::<u64>()), (1, 0));
    assert_eq!(st.compat_runs, 1, "counted as compatibility-mode code");
    let mut cpu = sample_long_state();
    assert!(!matches!(
        run(&mut t, &mut cpu),
        RunOutcome::Declined { .. }
    ));
    assert_eq!(t.accel.stats().compat_runs, 1, "64-bit code is not");
}

#[test]
fn a_change_to_long_mode_flushes_the_mirror() {
    let mut t = accel(vec![
        step(ExitReason::Privileged),
        step(ExitReason::Privileged),
    ]);
    let mut cpu = sample_state();
    assert!(matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }));
    // Same CR3 and CR0/CR4 bits, but EFER.LMA differs between the entries (only the key is
    // compared here: a long-mode state is declined before it reaches the key).
    let k32 = run::PagingKey::of(&cpu);
    cpu.efer |= 1 << 10;
    assert_ne!(run::PagingKey::of(&cpu), k32, "EFER.LMA is part of the key");
    cpu.efer &= !(1 << 10);
    cpu.cr3 |= 1 << 40;
    assert_ne!(run::PagingKey::of(&cpu), k32, "CR3 is compared in 64 bits");
}
