//! Failures: driver errors, lost progress, escapes.

use super::*;

#[test]
fn driver_errors_fail_with_lost_progress_and_disable() {
    let mut t = accel(vec![error(DriverError::ExecutorDied(DeathCause::Signal(
        9,
    )))]);
    let mut cpu = sample_state();
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => {
            assert!(
                message.contains("executor died: killed by signal 9"),
                "{message}"
            );
            assert!(lost_native_progress);
        }
        o => panic!("{o:?}"),
    }
    assert!(t.accel.is_disabled());
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 1000),
        RunOutcome::Declined {
            reason: 4,
            retry_after_ticks: crate::policy::NEVER_TICKS
        }
    );
    let st = t.accel.stats();
    assert_eq!((st.failures, st.declines[4]), (1, 1));
    assert!(st.failure.as_deref().unwrap().contains("executor died"));
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("cannot be vouched for")));
}

#[test]
fn a_run_that_never_started_fails_without_lost_progress() {
    // The executor died while waiting for the request: emulation may go on.
    let mut t = accel(vec![Step {
        executed: false,
        ..error(DriverError::ExecutorDied(DeathCause::Signal(9)))
    }]);
    let mut cpu = sample_state();
    let (eip, gprs) = (cpu.rip, cpu.gpr);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => {
            assert!(message.contains("executor died"), "{message}");
            assert!(!lost_native_progress);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        (cpu.rip, cpu.gpr),
        (eip, gprs),
        "the CPU state is left as it was"
    );
    assert!(t.accel.is_disabled());
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("nothing ran; emulation can go on")));
}

#[test]
fn corrupted_shared_memory_fails() {
    let mut t = accel(vec![error(DriverError::CorruptedSharedMemory(
        "status 9".into(),
    ))]);
    let mut cpu = sample_state();
    assert!(
        matches!(run(&mut t, &mut cpu), RunOutcome::Failed { lost_native_progress: true, ref message } if message.contains("corrupted shared memory"))
    );
}

#[test]
fn guest_escape_and_lost_eip_fail() {
    let escape = ExitReason::GuestEscape {
        kind: EscapeKind::LongMode,
        address: 0x4000_1000,
        diagnostic: 0,
    };
    let mut t = accel(vec![step(escape)]);
    let mut cpu = sample_state();
    let before = cpu;
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: true,
        } => assert!(message.contains("guest escape"), "{message}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(cpu.gpr, before.gpr, "no state is returned from an escape");
    let mut s = step(ExitReason::SystemCall {
        instruction: SyscallInstruction::Syscall,
    });
    s.eip_lost = true;
    let mut t = accel(vec![s]);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: true,
        } => {
            assert!(
                message.starts_with("SYSCALL executed natively"),
                "{message}"
            )
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn an_executor_that_cannot_start_for_the_state_fails_before_anything_runs() {
    let mut t = accel(vec![]);
    let why = "the stub executor for 64-bit code cannot start: stub_base 0x… is taken";
    t.accel.backend.prepare = Some(Err(why.into()));
    let mut cpu = sample_state();
    let before = format!("{cpu:?}");
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => {
            assert_eq!(message, why);
            assert!(!lost_native_progress);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(format!("{cpu:?}"), before, "nothing changed");
    assert!(t.log.lock().unwrap().runs.is_empty(), "nothing sent");
    assert!(t.accel.is_disabled());
    let st = t.accel.stats();
    assert_eq!((st.failures, st.stub_starts, st.runs), (1, 0, 0));
}

#[test]
fn an_executor_started_for_the_state_is_logged_and_counted_with_its_runs() {
    let mut t = accel(vec![step(ExitReason::Privileged)]);
    let line = "64-bit code: started the stub executor (pid 7)";
    t.accel.backend.prepare = Some(Ok(Some(line.into())));
    let mut cpu = sample_state();
    assert!(matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }));
    let st = t.accel.stats();
    assert_eq!((st.stub_starts, st.backend_runs, st.runs), (1, [1, 0], 1));
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Info && m == line));
    let json = st.to_json(1);
    assert!(
        json.contains("\"backend_runs\":{\"executor\":1,\"stub\":0},\"stub_starts\":1"),
        "{json}"
    );
}
