//! The executor process: setup (the jail, `setup.rs`: a table of steps in their real order,
//! each with its exit code from `protocol::exit_code`), then READY and the request loop.

mod host;
mod setup;
mod stub;
mod sys;

use plex86_executor::seccomp;
use plex86_protocol::xsave::xfeature;
use plex86_protocol::{exit_code, Request, Status, SPIN_PAUSES};
use std::sync::atomic::Ordering;
use sys::{Control, MonitorCell, SignalAction, SignalContext};

/// The monitor over this process's guest RAM mapping and system calls.
type Monitor = plex86_monitor::monitor::Monitor<sys::RamMapping, host::SysHost>;

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
    if args.get(1).map(String::as_str) == Some("--stub") {
        stub::launch(args.get(2).map(String::as_str));
    }
    std::panic::set_hook(Box::new(|_| sys::exit_group(exit_code::PANIC)));
    let s = setup::run();
    let (Some(control), Some(lib)) = (s.control, s.lib) else {
        sys::exit_group(exit_code::PANIC)
    };
    let view = control.view();
    view.ready(
        s.sw.xstate_size,
        s.sw.xfeatures & xfeature::TRANSFERRED,
        s.cpuid_faulting != 0,
    );
    let resp = view.resp_seq();
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
        let kind = CONTROL.with(|c| Request::try_from(c.view().request_kind()));
        match kind {
            Ok(Request::Shutdown) => sys::exit_group(0),
            Ok(Request::Commands) => {
                apply_commands();
                CONTROL.with(|c| publish(c, seq, Status::CommandsDone, None));
            }
            Ok(Request::Run) => {
                apply_commands();
                run_once();
                let escaped = MONITOR.with(|m| {
                    CONTROL.with(|c| publish(c, seq, Status::Exited, Some(m)));
                    m.escaped
                });
                if escaped {
                    sys::exit_group(exit_code::GUEST_ESCAPED);
                }
            }
            Err(_) => sys::exit_group(exit_code::BAD_REQUEST),
        }
    }
}

fn wait_request(c: &Control, last: u32, spin: u32) -> u32 {
    let view = c.view();
    let word = view.req_seq();
    for i in 0..spin {
        let v = word.load(Ordering::Acquire);
        if v != last {
            return v;
        }
        poll_pause(i, sys::sched_yield);
    }
    let sleeping = view.exec_sleeping();
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
    if i < SPIN_PAUSES {
        std::hint::spin_loop();
    } else {
        yield_now();
    }
}

fn apply_commands() {
    CONTROL.with(|c| {
        for cmd in c.view().commands() {
            if MONITOR.with(|m| m.command(cmd.kind, cmd.addr)).is_err() {
                sys::exit_group(exit_code::BAD_REQUEST);
            }
        }
    });
}

fn run_once() {
    let (budget, entry) = CONTROL.with(|c| (c.view().budget_ns(), c.view().state()));
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
            &m.frame as *const plex86_monitor::frame::EntryFrame,
            m.entry_data_segs,
            m.entry.rflags,
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

fn publish(c: &Control, seq: u32, st: Status, m: Option<&mut Box<Monitor>>) {
    let view = c.view();
    if let Some(m) = m {
        m.exit.encode(&mut m.wire);
        if !m.exit_set {
            // No reason was set: reason 0, which the library rejects.
            m.wire.reason = 0;
        }
        view.set_exit(&m.wire, &m.exit_state);
    }
    view.set_status(st);
    let w = view.resp_seq();
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
