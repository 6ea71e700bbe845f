//! The seccomp filter in a real process: each forbidden call kills the executor with SIGSYS,
//! an allowed one does not; the library reports executor deaths by cause. The self-tests are
//! today's executor's filter (the stub's two filters are tested by the interpreter in
//! `executor/src/seccomp/stub.rs` and in a live stub by tests/stub.rs); death reports and
//! signals from other processes are tested on both executors.

use host_driver::{DeathCause, DriverError, ExitReason};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use test_support::both_executors;
use test_support::vm::*;

fn selftest(what: &str) -> std::process::ExitStatus {
    Command::new(executor_path())
        .args(["--seccomp-selftest", what])
        .status()
        .expect("spawn")
}

#[test]
fn forbidden_calls_are_killed() {
    for what in [
        "getpid",
        "openat",
        "socket",
        "fork",
        "clone",
        "execve",
        "write",
        "kill",
        "x32_futex",
        "mmap_high",
        "mprotect_high",
        "modify_ldt_read",
        "mmap_control_fd",
        "mmap_past_4g",
        "mmap_wrap",
        "mprotect_past_4g",
    ] {
        let st = selftest(what);
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{what}: {st:?}");
    }
}

#[test]
fn allowed_call_survives() {
    let st = selftest("clock_gettime");
    assert_eq!(
        st.code(),
        Some(host_driver::protocol::exit_code::SELFTEST_SURVIVED)
    );
}

#[test]
fn mapping_ending_at_4g_is_allowed() {
    let st = selftest("mmap_end_4g");
    assert_eq!(
        st.code(),
        Some(host_driver::protocol::exit_code::SELFTEST_SURVIVED)
    );
}

/// An allowed system call (sched_yield) made by an instruction that starts below 4 GiB is
/// trapped whatever address the kernel reports after it; one starting above 4 GiB runs.
#[test]
fn syscall_instructions_ending_just_above_4g_are_trapped() {
    for what in [
        "syscall_ip_4g",
        "syscall_ip_4g_plus_1",
        "syscall_ip_4g_plus_14",
    ] {
        let st = selftest(what);
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{what}: {st:?}");
    }
    let st = selftest("syscall_ip_4g_plus_15");
    assert_eq!(
        st.code(),
        Some(host_driver::protocol::exit_code::SELFTEST_SURVIVED),
        "{st:?}"
    );
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

both_executors! {
    #[test]
    fn executor_death_is_reported_with_its_cause() {
        for (sig, cause) in [
            ("-KILL", DeathCause::Signal(libc::SIGKILL)),
            ("-TERM", DeathCause::Signal(libc::SIGTERM)),
        ] {
            let mut vm = Vm::new(Mode::TwoLevel);
            vm.code(|a| a.hlt());
            assert_eq!(vm.run().reason, ExitReason::Privileged);
            kill(vm.exe.pid().unwrap(), sig);
            match vm
                .exe
                .run(&mut vm.state, std::time::Duration::from_millis(10), &[])
            {
                Err(DriverError::ExecutorDied(c)) => assert_eq!(c, cause),
                other => panic!("{other:?}"),
            }
            let msg = format!(
                "{}",
                vm.exe
                    .run(&mut vm.state, std::time::Duration::from_millis(10), &[])
                    .unwrap_err()
            );
            assert!(msg.starts_with("executor died"), "{msg}");
        }
    }
}

both_executors! {
    #[test]
    fn missing_executor_binary_is_reported() {
        let ram = host_driver::GuestRam::new(1 << 20).unwrap();
        let mut cfg = host_driver::ExecutorConfig::new(ram.fd(), 1 << 20);
        cfg.executor_path = Some("/nonexistent/plex86-executor".into());
        assert!(matches!(try_spawn(cfg), Err(DriverError::ExecutorNotFound(_))));
    }
}

both_executors! {
    #[test]
    fn signals_from_other_processes_are_not_guest_events() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.code(|a| {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.jmp(l)
        });
        let pid = vm.exe.pid().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            for s in ["-SEGV", "-SYS", "-ILL", "-ALRM"] {
                let _ = Command::new("kill").args([s, &pid.to_string()]).status();
            }
        });
        let exit = vm
            .exe
            .run(&mut vm.state, std::time::Duration::from_millis(300), &[])
            .unwrap();
        t.join().unwrap();
        assert_eq!(exit.reason, ExitReason::BudgetExpired);
    }
}
