//! The executor process: setup (the jail, `setup.rs`: a table of steps in their real order,
//! each with its exit code from `protocol::exit_code`), then READY and the request loop.

mod host;
mod setup;
mod sys;

use plex86_executor::seccomp;
use plex86_protocol::{
    self as protocol, exit_code, req, status, ExecArea, LibArea, RawCommand, RawExit,
};
use std::mem::offset_of;
use std::sync::atomic::Ordering;
use sys::{Control, MonitorCell, SignalAction, SignalContext};

/// The monitor over this process's guest RAM mapping and system calls.
type Monitor = plex86_executor::monitor::Monitor<sys::RamMapping, host::SysHost>;

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

/// Entry point of `plex86-executor`.
fn main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--seccomp-selftest") {
        selftest(args.get(2).map(String::as_str).unwrap_or(""));
    }
    std::panic::set_hook(Box::new(|_| sys::exit_group(exit_code::PANIC)));
    let s = setup::run();
    let (Some(control), Some(lib)) = (s.control, s.lib) else {
        sys::exit_group(exit_code::PANIC)
    };
    // Ready.
    control.write_exec(
        offset_of!(ExecArea, xsave_size),
        &s.sw.xstate_size.to_le_bytes(),
    );
    let features = s.sw.xfeatures & 0xe7;
    control.write_exec(
        offset_of!(ExecArea, xsave_features),
        &features.to_le_bytes(),
    );
    control.write_exec(
        offset_of!(ExecArea, cpuid_faulting),
        &s.cpuid_faulting.to_le_bytes(),
    );
    control.write_exec(offset_of!(ExecArea, status), &status::READY.to_le_bytes());
    let resp = control.exec_word(offset_of!(ExecArea, resp_seq));
    resp.store(1, Ordering::Release);
    sys::futex_wake(resp);
    CONTROL.set(control);
    serve(lib.spin)
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
        // A record without a reason goes out with reason 0, which the library rejects.
        let mut raw = RawExit::ZERO;
        if m.exit_set {
            m.exit.encode(&mut raw);
        }
        raw.native_ns = m.exit.native_ns;
        raw.fill_ns = m.exit.fill_ns;
        // Only the logged code pages: the rest of the log is not read.
        let used = offset_of!(RawExit, code_pages) + 8 * raw.n_code_pages as usize;
        c.write_exec(offset_of!(ExecArea, exit), &sys::bytes_of(&raw)[..used]);
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
