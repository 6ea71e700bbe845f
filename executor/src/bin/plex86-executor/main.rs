//! The executor process: setup (jail), then the request loop.
//!
//! Setup order (each step has its own failure code, see `protocol::exit_code`):
//! 1. map the control region (fd 4; library part read-only) and check magic/version;
//! 2. PR_SET_PDEATHSIG(SIGKILL), then check that the parent is still the library;
//! 3. check /proc/self/maps: nothing of the executor below 4 GiB;
//! 4. close every fd except 3 (guest RAM) and 4 (control); PR_SET_NO_NEW_PRIVS;
//! 5. reserve [0x1000, 4 GiB) PROT_NONE; map guest RAM above 4 GiB; allocate the tables;
//! 6. learn the kernel's XSAVE signal-frame layout; install the handlers on an alternate stack;
//!    time a mirror-region fault; measure where the host reports RIP for ICEBP;
//! 7. check that the GDT TLS slots are empty; create the budget timer; block all signals;
//! 8. PR_SET_TSC(PR_TSC_SIGSEGV); CPUID faulting where the host has it; install the seccomp
//!    filter (built before);
//! 9. report READY and serve requests.

mod monitor;
mod sys;

use monitor::Monitor;
use plex86_executor::seccomp;
use plex86_protocol::{
    self as protocol, exit_code, req, status, ExecArea, LibArea, RawCommand, MSG_LEN,
};
use std::mem::offset_of;
use std::sync::atomic::Ordering;
use sys::{Control, MonitorCell, SignalAction, SignalContext};

static MONITOR: MonitorCell<Box<Monitor>> = MonitorCell::new();
static CONTROL: MonitorCell<Control> = MonitorCell::new();

const TIMER_SIGNAL: i32 = libc::SIGALRM;
const GUEST_SIGNALS: [i32; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
    TIMER_SIGNAL,
];

fn handler(ctx: &mut SignalContext<'_>) -> SignalAction {
    MONITOR.with(|m| m.on_signal(ctx))
}

/// Records a setup failure in the control region (when mapped) and exits with `code`.
fn fail(control: Option<&Control>, code: i32, msg: &str) -> ! {
    if let Some(c) = control {
        let mut buf = [0u8; MSG_LEN];
        let n = msg.len().min(MSG_LEN);
        buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
        c.write_exec(offset_of!(ExecArea, msg), &buf);
        c.write_exec(offset_of!(ExecArea, msg_len), &(n as u32).to_le_bytes());
        c.write_exec(
            offset_of!(ExecArea, fail_code),
            &(code as u32).to_le_bytes(),
        );
        c.write_exec(offset_of!(ExecArea, status), &status::FAILED.to_le_bytes());
        let w = c.exec_word(offset_of!(ExecArea, resp_seq));
        w.store(1, Ordering::Release);
        sys::futex_wake(w);
    }
    sys::exit_group(code)
}

fn check_low_mappings() -> Result<(), String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("read maps: {e}"))?;
    for line in maps.lines() {
        let start = line
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        match start {
            Some(s) if s < sys::MIRROR_END => return Err(format!("mapping below 4 GiB: {line}")),
            Some(_) => {}
            None => return Err(format!("unparsable maps line: {line}")),
        }
    }
    Ok(())
}

/// Entry point of `plex86-executor`.
fn main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--seccomp-selftest") {
        selftest(args.get(2).map(String::as_str).unwrap_or(""));
    }
    std::panic::set_hook(Box::new(|_| sys::exit_group(exit_code::PANIC)));
    let prog = seccomp::build_filter(seccomp::POLICY);

    // 1. Control region.
    let control = match Control::map() {
        Ok(c) => c,
        Err(_) => sys::exit_group(exit_code::BAD_SETUP_ARGS),
    };
    let lib: LibArea = sys::read_lib_value(&control, 0);
    if lib.magic != protocol::MAGIC || lib.version != protocol::VERSION {
        fail(
            Some(&control),
            exit_code::BAD_SETUP_ARGS,
            "bad control region magic/version",
        );
    }
    // 2. Parent death.
    if sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).is_err() {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            "PR_SET_PDEATHSIG failed",
        );
    }
    if sys::getppid() != lib.library_pid {
        fail(
            Some(&control),
            exit_code::PARENT_GONE,
            "parent is not the library",
        );
    }
    // 3. Nothing below 4 GiB.
    if let Err(m) = check_low_mappings() {
        fail(Some(&control), exit_code::LOW_MAPPING, &m);
    }
    if sys::hwcap2() & 2 == 0 {
        fail(
            Some(&control),
            exit_code::UNSUPPORTED_HOST,
            "FSGSBASE is not enabled by the kernel",
        );
    }
    // 4. File descriptors, privileges.
    if sys::close_other_fds().is_err() {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            "close_range failed",
        );
    }
    if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            "PR_SET_NO_NEW_PRIVS failed",
        );
    }
    // 5. Memory.
    if let Err(e) = sys::reserve_mirror_region() {
        fail(
            Some(&control),
            exit_code::LOW_MAPPING,
            &format!(
                "cannot reserve [4K, 4G) for the guest mirror: errno {e}{}",
                enomem_hint(e)
            ),
        );
    }
    let ram = match sys::RamMapping::new(lib.ram_size) {
        Ok(r) => r,
        Err(e) => fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            &format!("map guest RAM: errno {e}{}", enomem_hint(e)),
        ),
    };
    // 6. Signals.
    let Some(sw) = sys::probe_sigframe_xsave() else {
        fail(
            Some(&control),
            exit_code::UNSUPPORTED_HOST,
            "no XSAVE state in signal frames",
        )
    };
    if sw.xstate_size as usize + 4 > plex86_executor::frame::FPSTATE_ROOM || sw.xstate_size < 576 {
        fail(
            Some(&control),
            exit_code::UNSUPPORTED_HOST,
            "XSAVE signal-frame state too large",
        );
    }
    let altstack: &'static mut [u8] = Box::leak(vec![0u8; 256 * 1024].into_boxed_slice());
    if let Err(e) = sys::install_signal_handlers(handler, &GUEST_SIGNALS, altstack) {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            &format!("signal handlers: errno {e}"),
        );
    }
    // 7. Segments (check the GDT TLS slots are empty), timer, mask.
    // The GDT TLS slots (0x63/0x6b/0x73) are empty in a 64-bit process that never called
    // set_thread_area (the 64-bit set_thread_area is not even available); check it.
    for sel in [0x63u16, 0x6b, 0x73] {
        if sys::selector_loadable(sel) {
            fail(
                Some(&control),
                exit_code::UNSUPPORTED_HOST,
                "a GDT TLS slot is in use",
            );
        }
    }
    let clock = if lib.budget_clock == 1 {
        libc::CLOCK_THREAD_CPUTIME_ID
    } else {
        libc::CLOCK_MONOTONIC
    };
    let timer = match sys::timer_create(clock, TIMER_SIGNAL) {
        Ok(t) => t,
        Err(e) => fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            &format!("timer_create: errno {e}"),
        ),
    };
    let n_ranges = (lib.n_ram_ranges as usize).min(protocol::MAX_RAM_RANGES);
    let mon = Monitor::new(
        ram,
        lib.ram_size,
        &lib.ram_ranges[..n_ranges],
        sw,
        sys::current_altstack(),
        clock,
        timer,
    );
    MONITOR.set(mon);
    let fault_ns = sys::fault_round_trip_ns(clock);
    let icebp_rip = match sys::probe_icebp_rip() {
        Ok(r) => r,
        Err(off) => fail(
            Some(&control),
            exit_code::UNSUPPORTED_HOST,
            &match off {
                None => "ICEBP (F1) raised no SIGTRAP".to_string(),
                Some(d) => format!("ICEBP (F1) reported RIP {d:+} bytes from the F1"),
            },
        ),
    };
    MONITOR.with(|m| {
        m.max_fills = lib.max_fills;
        m.fault_ns = fault_ns;
        m.icebp_rip = icebp_rip;
    });
    sys::block_all_signals();
    // 8. TSC, CPUID and seccomp.
    if sys::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV as u64).is_err() {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            "PR_SET_TSC failed",
        );
    }
    // With CPUID faulting native CPUID exits and the emulator answers with the guest CPU
    // model; without it (ENODEV) native code reads the host's CPUID (docs/ARCHITECTURE.md).
    let cpuid_faulting: u32 = match sys::set_cpuid_faulting() {
        Ok(()) => 1,
        Err(libc::ENODEV) => 0,
        Err(e) => fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            &format!("arch_prctl(ARCH_SET_CPUID): errno {e}"),
        ),
    };
    if let Err(e) = sys::install_seccomp(&prog) {
        fail(
            Some(&control),
            exit_code::SETUP_SYSCALL,
            &format!("seccomp: errno {e}"),
        );
    }
    // 9. Ready.
    control.write_exec(
        offset_of!(ExecArea, xsave_size),
        &sw.xstate_size.to_le_bytes(),
    );
    let features = sw.xfeatures & 0xe7;
    control.write_exec(
        offset_of!(ExecArea, xsave_features),
        &features.to_le_bytes(),
    );
    control.write_exec(
        offset_of!(ExecArea, cpuid_faulting),
        &cpuid_faulting.to_le_bytes(),
    );
    control.write_exec(offset_of!(ExecArea, status), &status::READY.to_le_bytes());
    let resp = control.exec_word(offset_of!(ExecArea, resp_seq));
    resp.store(1, Ordering::Release);
    sys::futex_wake(resp);
    CONTROL.set(control);
    serve(lib.spin)
}

/// Why a setup mapping fails with ENOMEM, for the message the user sees.
fn enomem_hint(errno: i32) -> &'static str {
    if errno == libc::ENOMEM {
        " (ENOMEM: an address-space limit (ulimit -v) below the executor's 4 GiB mirror reservation plus guest RAM, or the host is out of memory)"
    } else {
        ""
    }
}

fn serve(spin: u32) -> ! {
    let mut last = 0u32;
    loop {
        let seq = CONTROL.with(|c| wait_request(c, last, spin));
        last = seq;
        let kind: u32 = CONTROL.with(|c| sys::read_lib_value(c, offset_of!(LibArea, req_kind)));
        match kind {
            req::SHUTDOWN => sys::exit_group(0),
            req::COMMANDS => {
                apply_commands();
                CONTROL.with(|c| publish(c, seq, status::COMMANDS_DONE, None));
            }
            req::RUN => {
                apply_commands();
                run_once();
                let escaped = MONITOR.with(|m| {
                    CONTROL.with(|c| publish(c, seq, status::EXITED, Some(m)));
                    m.escaped
                });
                if escaped {
                    sys::exit_group(exit_code::GUEST_ESCAPED);
                }
            }
            _ => sys::exit_group(exit_code::BAD_REQUEST),
        }
    }
}

fn wait_request(c: &Control, last: u32, spin: u32) -> u32 {
    let word = c.lib_word(offset_of!(LibArea, req_seq));
    for i in 0..spin {
        let v = word.load(Ordering::Acquire);
        if v != last {
            return v;
        }
        poll_pause(i, sys::sched_yield);
    }
    let sleeping = c.exec_word(offset_of!(ExecArea, exec_sleeping));
    loop {
        sleeping.store(1, Ordering::SeqCst);
        let v = word.load(Ordering::SeqCst);
        if v != last {
            sleeping.store(0, Ordering::Relaxed);
            return v;
        }
        sys::futex_wait(word, v);
        let v = word.load(Ordering::Acquire);
        if v != last {
            sleeping.store(0, Ordering::Relaxed);
            return v;
        }
    }
}

/// One polling step: PAUSE for the first polls, then yield, so that a poller sharing a CPU with
/// the other side hands it over instead of burning its time slice.
fn poll_pause(i: u32, yield_now: fn()) {
    if i < plex86_protocol::SPIN_PAUSES {
        std::hint::spin_loop();
    } else {
        yield_now();
    }
}

fn apply_commands() {
    let n: u32 = CONTROL.with(|c| sys::read_lib_value(c, offset_of!(LibArea, n_commands)));
    let n = (n as usize).min(protocol::MAX_COMMANDS);
    for i in 0..n {
        let off = offset_of!(LibArea, commands) + i * std::mem::size_of::<RawCommand>();
        let cmd: RawCommand = CONTROL.with(|c| sys::read_lib_value(c, off));
        if MONITOR.with(|m| m.command(cmd.kind, cmd.addr)).is_err() {
            sys::exit_group(exit_code::BAD_REQUEST);
        }
    }
}

fn run_once() {
    let budget: u64 = CONTROL.with(|c| sys::read_lib_value(c, offset_of!(LibArea, budget_ns)));
    let entry = CONTROL.with(|c| sys::read_lib_value(c, offset_of!(LibArea, state)));
    let frame_id = MONITOR.with(|m| {
        m.entry = entry;
        if m.prepare_entry().is_err() {
            sys::exit_group(exit_code::BAD_REQUEST);
        }
        m.budget_ns = budget;
        sys::timer_arm(m.timer, budget.max(1));
        m.start_ns = sys::clock_ns(m.clock);
        m.in_guest = true;
        (
            &m.frame as *const plex86_executor::frame::EntryFrame,
            m.entry_data_segs,
            u64::from(m.entry.eflags),
        )
    });
    let (frame, segs, eflags) = frame_id;
    // The frame lives in the monitor (a static); nothing touches the monitor until the signal
    // handler ends the run and control comes back here.
    sys::enter_guest_raw(frame, &segs, eflags);
    MONITOR.with(|m| {
        let end = sys::clock_ns(m.clock);
        sys::timer_arm(m.timer, 0);
        m.in_guest = false;
        m.exit.native_ns = end.wrapping_sub(m.start_ns);
        // The calibrated fault cost is an estimate: keep the sum within the run.
        m.exit.fill_ns = m.exit.fill_ns.min(m.exit.native_ns);
    });
}

fn publish(c: &Control, seq: u32, st: u32, m: Option<&mut Box<Monitor>>) {
    if let Some(m) = m {
        c.write_exec(offset_of!(ExecArea, exit), sys::bytes_of(&m.exit));
        c.write_exec(offset_of!(ExecArea, state), sys::bytes_of(&m.exit_state));
    }
    c.write_exec(offset_of!(ExecArea, status), &st.to_le_bytes());
    let w = c.exec_word(offset_of!(ExecArea, resp_seq));
    w.store(seq, Ordering::Release);
    sys::futex_wake(w);
}

/// Seccomp self-test: installs the real filter, then makes the named forbidden call. The
/// process must die with SIGSYS; surviving exits with SELFTEST_SURVIVED.
fn selftest(what: &str) -> ! {
    let prog = seccomp::build_filter(seccomp::POLICY);
    if !sys::selftest_prepare(what) {
        sys::exit_group(exit_code::SETUP_SYSCALL);
    }
    if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() || sys::install_seccomp(&prog).is_err() {
        sys::exit_group(exit_code::SETUP_SYSCALL);
    }
    sys::selftest_call(what);
    sys::exit_group(exit_code::SELFTEST_SURVIVED)
}
