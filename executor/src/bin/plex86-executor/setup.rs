//! Setup: the steps between the start of the process and READY, run in this order by [`run`]
//! (the table is [`STEPS`]; a unit test holds it to this list). Each step has a name and the
//! exit code it fails with (`protocol::exit_code`); a failing step's message goes to the control
//! region (once it is mapped) and the process exits with the step's code ([`fail`]).
//!
//! The seccomp program is built before step 1 (it allocates).
//!
//! 1. `control` (BAD_SETUP_ARGS): map the control region (fd 4; library part read-only) and
//!    check magic/version;
//! 2. `parent death signal` (SETUP_SYSCALL): PR_SET_PDEATHSIG(SIGKILL);
//! 3. `parent` (PARENT_GONE): the parent is still the library (it may have died before step 2);
//! 4. `low mappings` (LOW_MAPPING): /proc/self/maps shows nothing of the executor below 4 GiB;
//! 5. `fsgsbase` (UNSUPPORTED_HOST): the kernel enabled FSGSBASE (the trampolines need it);
//! 6. `close fds` (SETUP_SYSCALL): close every fd except 3 (guest RAM) and 4 (control);
//! 7. `no new privs` (SETUP_SYSCALL): PR_SET_NO_NEW_PRIVS;
//! 8. `reserve mirror` (LOW_MAPPING): reserve [0x1000, 4 GiB) PROT_NONE;
//! 9. `map guest ram` (SETUP_SYSCALL): map guest RAM above 4 GiB;
//! 10. `signal-frame xsave` (UNSUPPORTED_HOST): learn the kernel's XSAVE signal-frame layout;
//! 11. `signal handlers` (SETUP_SYSCALL): install the handlers on an alternate stack;
//! 12. `gdt tls slots` (UNSUPPORTED_HOST): the GDT TLS slots 0x63/0x6b/0x73 are empty;
//! 13. `budget timer` (SETUP_SYSCALL): create the budget timer, then build the monitor (its
//!     tables are allocated here) and install it for the signal handler;
//! 14. `host probes` (UNSUPPORTED_HOST): time a mirror-region fault; measure where the host
//!     reports RIP for ICEBP (both with the handlers of step 11 installed);
//! 15. `tsc` (SETUP_SYSCALL): block all signals; PR_SET_TSC(PR_TSC_SIGSEGV);
//! 16. `cpuid faulting` (SETUP_SYSCALL): CPUID faulting where the host has it;
//! 17. `seccomp` (SETUP_SYSCALL): install the seccomp filter.
//!
//! Then `main` reports READY and serves requests.

use super::host::SysHost;
use super::sys::{self, Control};
use super::{handler, Monitor, GUEST_SIGNALS, MONITOR, TIMER_SIGNAL};
use plex86_executor::seccomp::{self, SockFilter};
use plex86_monitor::frame::{FpxSwBytes, FPSTATE_ROOM};
use plex86_monitor::monitor::HostParams;
use plex86_protocol::xsave;
use plex86_protocol::{self as protocol, exit_code, LibArea};
use std::sync::atomic::Ordering;

/// What setup has built so far; after the last step, everything READY reports and the request
/// loop needs.
pub struct Setup {
    prog: Vec<SockFilter>,
    /// The control region (step 1).
    pub control: Option<Control>,
    /// The library's setup arguments, read once (step 1).
    pub lib: Option<LibArea>,
    ram: Option<sys::RamMapping>,
    /// The kernel's XSAVE signal-frame parameters (step 10).
    pub sw: FpxSwBytes,
    clock: i32,
    timer: i32,
    /// 1 when native CPUID faults (and exits), 0 when it reads the host's (step 16).
    pub cpuid_faulting: u32,
}

impl Setup {
    fn lib(&self) -> &LibArea {
        self.lib.as_ref().expect("step 1 read the library area")
    }
}

/// One setup step.
pub struct Step {
    /// Name, as listed in the module documentation (which the unit test holds the table to).
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: &'static str,
    /// The exit code (`protocol::exit_code`) the process ends with when the step fails.
    pub code: i32,
    /// The step; `Err` carries the message for the library.
    pub run: fn(&mut Setup) -> Result<(), String>,
}

/// The setup steps, in order (see the module documentation).
pub const STEPS: &[Step] = &[
    Step {
        name: "control",
        code: exit_code::BAD_SETUP_ARGS,
        run: map_control,
    },
    Step {
        name: "parent death signal",
        code: exit_code::SETUP_SYSCALL,
        run: |_| {
            prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as u64,
                "PR_SET_PDEATHSIG failed",
            )
        },
    },
    Step {
        name: "parent",
        code: exit_code::PARENT_GONE,
        run: |s| {
            ok_or(
                sys::getppid() == s.lib().library_pid,
                "parent is not the library",
            )
        },
    },
    Step {
        name: "low mappings",
        code: exit_code::LOW_MAPPING,
        run: |_| check_low_mappings(),
    },
    Step {
        name: "fsgsbase",
        code: exit_code::UNSUPPORTED_HOST,
        run: |_| {
            ok_or(
                sys::hwcap2() & 2 != 0,
                "FSGSBASE is not enabled by the kernel",
            )
        },
    },
    Step {
        name: "close fds",
        code: exit_code::SETUP_SYSCALL,
        run: |_| sys::close_other_fds().map_err(|_| "close_range failed".to_string()),
    },
    Step {
        name: "no new privs",
        code: exit_code::SETUP_SYSCALL,
        run: |_| prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS failed"),
    },
    Step {
        name: "reserve mirror",
        code: exit_code::LOW_MAPPING,
        run: |_| {
            sys::reserve_mirror_region().map_err(|e| {
                format!(
                    "cannot reserve [4K, 4G) for the guest mirror: errno {e}{}",
                    enomem_hint(e)
                )
            })
        },
    },
    Step {
        name: "map guest ram",
        code: exit_code::SETUP_SYSCALL,
        run: |s| {
            let ram = sys::RamMapping::new(s.lib().ram_size)
                .map_err(|e| format!("map guest RAM: errno {e}{}", enomem_hint(e)))?;
            s.ram = Some(ram);
            Ok(())
        },
    },
    Step {
        name: "signal-frame xsave",
        code: exit_code::UNSUPPORTED_HOST,
        run: sigframe_xsave,
    },
    Step {
        name: "signal handlers",
        code: exit_code::SETUP_SYSCALL,
        run: |_| {
            let altstack: &'static mut [u8] = Box::leak(vec![0u8; 256 * 1024].into_boxed_slice());
            sys::install_signal_handlers(handler, &GUEST_SIGNALS, altstack)
                .map_err(|e| format!("signal handlers: errno {e}"))
        },
    },
    Step {
        name: "gdt tls slots",
        code: exit_code::UNSUPPORTED_HOST,
        // Empty in a 64-bit process that never called set_thread_area (the 64-bit
        // set_thread_area is not even available); the native selectors rely on it.
        run: |_| {
            let used = [0x63u16, 0x6b, 0x73]
                .into_iter()
                .any(sys::selector_loadable);
            ok_or(!used, "a GDT TLS slot is in use")
        },
    },
    Step {
        name: "budget timer",
        code: exit_code::SETUP_SYSCALL,
        run: budget_timer,
    },
    Step {
        name: "host probes",
        code: exit_code::UNSUPPORTED_HOST,
        run: host_probes,
    },
    Step {
        name: "tsc",
        code: exit_code::SETUP_SYSCALL,
        run: |_| {
            sys::block_all_signals();
            prctl(
                libc::PR_SET_TSC,
                libc::PR_TSC_SIGSEGV as u64,
                "PR_SET_TSC failed",
            )
        },
    },
    Step {
        name: "cpuid faulting",
        code: exit_code::SETUP_SYSCALL,
        // With CPUID faulting native CPUID exits and the emulator answers with the guest CPU
        // model; without it (ENODEV) native code reads the host's CPUID (docs/ARCHITECTURE.md).
        run: |s| {
            s.cpuid_faulting = match sys::set_cpuid_faulting() {
                Ok(()) => 1,
                Err(libc::ENODEV) => 0,
                Err(e) => return Err(format!("arch_prctl(ARCH_SET_CPUID): errno {e}")),
            };
            Ok(())
        },
    },
    Step {
        name: "seccomp",
        code: exit_code::SETUP_SYSCALL,
        run: |s| sys::install_seccomp(&s.prog).map_err(|e| format!("seccomp: errno {e}")),
    },
];

/// Runs [`STEPS`] in order; the first failure ends the process through [`fail`].
pub fn run() -> Setup {
    let mut s = Setup {
        prog: seccomp::build_filter(seccomp::POLICY),
        control: None,
        lib: None,
        ram: None,
        sw: FpxSwBytes::default(),
        clock: 0,
        timer: 0,
        cpuid_faulting: 0,
    };
    for step in STEPS {
        if let Err(msg) = (step.run)(&mut s) {
            fail(s.control.as_ref(), step.code, &msg);
        }
    }
    s
}

/// Records a setup failure in the control region (when mapped) and exits with `code`.
pub fn fail(control: Option<&Control>, code: i32, msg: &str) -> ! {
    if let Some(c) = control {
        let view = c.view();
        view.fail(code, msg);
        let w = view.resp_seq();
        w.store(1, Ordering::Release);
        sys::futex_wake(w);
    }
    sys::exit_group(code)
}

fn ok_or(ok: bool, msg: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg.to_string())
    }
}

fn prctl(op: i32, arg: u64, msg: &str) -> Result<(), String> {
    sys::prctl(op, arg).map(|_| ()).map_err(|_| msg.to_string())
}

/// Step 1. An unmappable region leaves nowhere to report to: the exit code says it alone.
fn map_control(s: &mut Setup) -> Result<(), String> {
    let control = Control::map().map_err(|_| "cannot map the control region".to_string())?;
    let lib = control.view().header();
    s.control = Some(control);
    s.lib = Some(lib);
    ok_or(
        lib.magic == protocol::MAGIC && lib.version == protocol::VERSION,
        "bad control region magic/version",
    )
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

/// Why a setup mapping fails with ENOMEM, for the message the user sees.
fn enomem_hint(errno: i32) -> &'static str {
    if errno == libc::ENOMEM {
        " (ENOMEM: an address-space limit (ulimit -v) below the executor's 4 GiB mirror reservation plus guest RAM, or the host is out of memory)"
    } else {
        ""
    }
}

fn sigframe_xsave(s: &mut Setup) -> Result<(), String> {
    let sw = sys::probe_sigframe_xsave().ok_or("no XSAVE state in signal frames")?;
    if sw.xstate_size as usize + 4 > FPSTATE_ROOM || sw.xstate_size < xsave::header::END as u32 {
        return Err("XSAVE signal-frame state too large".to_string());
    }
    s.sw = sw;
    Ok(())
}

fn budget_timer(s: &mut Setup) -> Result<(), String> {
    let lib = *s.lib();
    s.clock = if lib.budget_clock == 1 {
        libc::CLOCK_THREAD_CPUTIME_ID
    } else {
        libc::CLOCK_MONOTONIC
    };
    s.timer =
        sys::timer_create(s.clock, TIMER_SIGNAL).map_err(|e| format!("timer_create: errno {e}"))?;
    let n_ranges = (lib.n_ram_ranges as usize).min(protocol::MAX_RAM_RANGES);
    let ram = s.ram.take().expect("step 9 mapped guest RAM");
    let params = HostParams {
        sw: s.sw,
        altstack: sys::current_altstack(),
        clock: s.clock,
        timer: s.timer,
        vdso: sys::vdso_base(),
        amd: is_amd(),
    };
    let mon = Monitor::new(
        ram,
        SysHost,
        lib.ram_size,
        &lib.ram_ranges[..n_ranges],
        params,
    );
    MONITOR.set(mon);
    Ok(())
}

fn host_probes(s: &mut Setup) -> Result<(), String> {
    let fault_ns = sys::fault_round_trip_ns(s.clock);
    let icebp_rip = sys::probe_icebp_rip().map_err(|off| match off {
        None => "ICEBP (F1) raised no SIGTRAP".to_string(),
        Some(d) => format!("ICEBP (F1) reported RIP {d:+} bytes from the F1"),
    })?;
    let max_fills = s.lib().max_fills;
    MONITOR.with(|m| {
        m.max_fills = max_fills;
        m.fault_ns = fault_ns;
        m.icebp_rip = icebp_rip;
    });
    Ok(())
}

/// The host CPU is AMD (or Hygon), by its CPUID vendor string.
fn is_amd() -> bool {
    // CPUID leaf 0 vendor "AuthenticAMD" (EBX, EDX, ECX) — also Hygon.
    let r = std::arch::x86_64::__cpuid(0);
    (r.ebx, r.edx, r.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
        || (r.ebx, r.edx, r.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbered list of the module documentation: (number, name, exit-code name).
    fn documented_steps() -> Vec<(usize, String, String)> {
        include_str!("setup.rs")
            .lines()
            .filter_map(|l| {
                let l = l.strip_prefix("//! ")?;
                let (num, rest) = l.split_once(". `")?;
                let num: usize = num.trim().parse().ok()?;
                let (name, rest) = rest.split_once("` (")?;
                let (code, _) = rest.split_once(')')?;
                Some((num, name.to_string(), code.to_string()))
            })
            .collect()
    }

    fn code_value(name: &str) -> i32 {
        match name {
            "BAD_SETUP_ARGS" => exit_code::BAD_SETUP_ARGS,
            "PARENT_GONE" => exit_code::PARENT_GONE,
            "LOW_MAPPING" => exit_code::LOW_MAPPING,
            "SETUP_SYSCALL" => exit_code::SETUP_SYSCALL,
            "UNSUPPORTED_HOST" => exit_code::UNSUPPORTED_HOST,
            other => panic!("unknown exit code name {other}"),
        }
    }

    #[test]
    fn setup_steps_are_in_the_documented_order_with_their_codes() {
        let doc = documented_steps();
        assert_eq!(doc.len(), STEPS.len(), "documented: {doc:?}");
        for (i, ((num, name, code), step)) in doc.iter().zip(STEPS).enumerate() {
            assert_eq!(*num, i + 1, "numbering of {name}");
            assert_eq!(name, step.name, "step {num}");
            assert_eq!(code_value(code), step.code, "code of step {num} ({name})");
        }
        // The steps the original order pinned down: the probes need the timer's clock and the
        // monitor, and run before signals are blocked; the filter goes in last.
        let pos = |n: &str| STEPS.iter().position(|s| s.name == n).unwrap();
        assert!(pos("budget timer") < pos("host probes"));
        assert!(pos("host probes") < pos("tsc"));
        assert_eq!(STEPS.last().unwrap().name, "seccomp");
    }
}
