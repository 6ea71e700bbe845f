//! Executor faults and bad executors: every one is a clear error, and a failed run says
//! whether guest code may have run in it (`Executor::failed_run_may_have_executed`).

use host_driver::{DriverError, ExecutorConfig, GuestRam, NativeExecutor};
use iced_x86::code_asm::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::both_executors;
use test_support::vm::*;

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plex86-faults-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spawn_with(path: &Path) -> Result<Box<dyn NativeExecutor>, DriverError> {
    let ram = GuestRam::new(1 << 20).unwrap();
    let mut cfg = ExecutorConfig::new(ram.fd(), 1 << 20);
    cfg.executor_path = Some(path.to_path_buf());
    try_spawn(cfg)
}

fn cannot_start(path: &Path, want: &str) {
    match spawn_with(path) {
        Err(e @ DriverError::CannotStart(_)) => {
            let m = e.to_string();
            assert!(
                m.contains(&path.display().to_string()) && m.contains(want),
                "{m}"
            );
        }
        Err(other) => panic!("{}: expected CannotStart, got {other:?}", path.display()),
        Ok(_) => panic!("{}: expected CannotStart, it started", path.display()),
    }
}

both_executors! {
    #[test]
    fn bad_executor_binaries_are_named_with_the_cause() {
        let d = scratch_dir("bad");
        cannot_start(&d, "is not a regular file");
        let noexec = d.join("noexec");
        std::fs::copy(executor_path(), &noexec).unwrap();
        std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
        cannot_start(&noexec, "is not executable");
        // Programs that are no executor: they end before reporting ready.
        cannot_start(Path::new("/bin/true"), "ended before it was ready");
        let garbage = d.join("garbage");
        std::fs::write(&garbage, "this is no program\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
        cannot_start(&garbage, "ended before it was ready");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A guest that increments a counter in memory forever.
fn counting_vm() -> Vm {
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.code(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.inc(dword_ptr(DATA))?;
        a.jmp(l)
    });
    vm
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status();
    assert!(st.expect("kill(1)").success());
}

/// Waits until the executor has stopped polling for the next request and sleeps on the request
/// word: how long its polls take depends on the machine's load, so no fixed delay will do.
fn wait_until_asleep(exe: &dyn NativeExecutor) {
    let t0 = Instant::now();
    while !exe.asleep_waiting_for_request() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the executor never went to sleep waiting for a request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

both_executors! {
    #[test]
    fn an_executor_killed_while_waiting_for_a_request_lost_nothing() {
        let mut vm = counting_vm();
        vm.exe
            .run(&mut vm.state, Duration::from_millis(2), &[])
            .unwrap();
        let before = vm.state;
        wait_until_asleep(&*vm.exe);
        signal(vm.exe.pid().unwrap(), "-KILL");
        std::thread::sleep(Duration::from_millis(50));
        match vm.exe.run(&mut vm.state, Duration::from_millis(2), &[]) {
            Err(e @ DriverError::ExecutorDied(_)) => {
                assert!(e.to_string().contains("signal 9 (SIGKILL"), "{e}")
            }
            other => panic!("expected ExecutorDied, got {other:?}"),
        }
        assert!(!vm.exe.failed_run_may_have_executed());
        assert!(vm.state == before, "the entry state is left as it was");
    }
}

both_executors! {
    #[test]
    fn an_executor_killed_during_a_run_may_have_run_guest_code() {
        let mut vm = counting_vm();
        let pid = vm.exe.pid().unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            signal(pid, "-KILL");
        });
        assert!(matches!(
            vm.exe.run(&mut vm.state, Duration::from_secs(30), &[]),
            Err(DriverError::ExecutorDied(_))
        ));
        killer.join().unwrap();
        assert!(vm.exe.failed_run_may_have_executed());
    }
}

both_executors! {
    #[test]
    fn an_executor_stopped_while_waiting_is_killed_and_lost_nothing() {
        let mut vm = counting_vm();
        vm.exe
            .run(&mut vm.state, Duration::from_millis(2), &[])
            .unwrap();
        wait_until_asleep(&*vm.exe);
        let pid = vm.exe.pid().unwrap();
        signal(pid, "-STOP");
        let t0 = Instant::now();
        match vm.exe.run(&mut vm.state, Duration::from_millis(2), &[]) {
            Err(DriverError::ExecutorUnresponsive(_)) => {}
            other => panic!("expected ExecutorUnresponsive, got {other:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "reported after {:?}",
            t0.elapsed()
        );
        assert!(!vm.exe.failed_run_may_have_executed());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the stopped executor was killed and reaped"
        );
    }
}
