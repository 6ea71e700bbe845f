//! Setup-time measurements of the host: the kernel's XSAVE signal-frame layout, the cost of a
//! mirror-region fault, and where ICEBP's #DB reports RIP.

use super::{clock_ns, MIRROR_START};
use plex86_monitor::decode::IcebpRip;
use plex86_monitor::frame::{FpxSwBytes, KUcontext, FP_XSTATE_MAGIC1};
use plex86_protocol::xsave::sw;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

static PROBE_EXT: AtomicU32 = AtomicU32::new(0);
static PROBE_XF: AtomicU64 = AtomicU64::new(0);
static PROBE_SIZE: AtomicU32 = AtomicU32::new(0);

extern "C" fn probe_handler(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext; the fpstate pointer (when non-null) points to
    // its XSAVE area with the software bytes at `sw::START`.
    unsafe {
        let uc = &*uc.cast::<KUcontext>();
        if uc.mc.fpstate == 0 {
            return;
        }
        let p = uc.mc.fpstate as *const u8;
        if std::ptr::read_unaligned(p.add(sw::MAGIC1).cast::<u32>()) != FP_XSTATE_MAGIC1 {
            return;
        }
        PROBE_EXT.store(
            std::ptr::read_unaligned(p.add(sw::EXTENDED_SIZE).cast::<u32>()),
            Ordering::Relaxed,
        );
        PROBE_XF.store(
            std::ptr::read_unaligned(p.add(sw::XFEATURES).cast::<u64>()),
            Ordering::Relaxed,
        );
        PROBE_SIZE.store(
            std::ptr::read_unaligned(p.add(sw::XSTATE_SIZE).cast::<u32>()),
            Ordering::Relaxed,
        );
    }
}

/// Raises one signal to learn how the kernel lays out XSAVE state in signal frames.
pub fn probe_sigframe_xsave() -> Option<FpxSwBytes> {
    // SAFETY: installs a handler that only reads its own frame, raises SIGUSR1 once, then
    // restores the default disposition.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = probe_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        libc::raise(libc::SIGUSR1);
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let s = FpxSwBytes {
        extended_size: PROBE_EXT.load(Ordering::Relaxed),
        xfeatures: PROBE_XF.load(Ordering::Relaxed),
        xstate_size: PROBE_SIZE.load(Ordering::Relaxed),
    };
    (s.xstate_size != 0).then_some(s)
}

extern "C" fn calibration_handler(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO handler; the fault is the
    // 2-byte `mov eax, [rdi]` of `fault_round_trip_ns`, which this skips.
    unsafe { (*uc.cast::<KUcontext>()).mc.rip += 2 };
}

/// Host cost of a page fault in the mirror region delivered to a handler on the alternate
/// stack, and of the return from it: the median of 31 rounds on `clock` (figures:
/// docs/ARCHITECTURE.md, "Costs behind the constants"). A demand fill pays this on top of its handler's work, which the handler
/// cannot time itself. Setup time only, after `reserve_mirror_region` and before the first
/// fill: installs its own SIGSEGV handler and restores the one installed before.
pub fn fault_round_trip_ns(clock: i32) -> u64 {
    let mut samples = [0u64; 31];
    // SAFETY: swaps in a SIGSEGV handler that skips the faulting instruction, loads from the
    // reserved, inaccessible start of the mirror region (nothing is mirrored yet), then puts the
    // previous disposition back.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = calibration_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, &mut old);
        for s in samples.iter_mut() {
            let t0 = clock_ns(clock);
            std::arch::asm!(
                "mov eax, dword ptr [rdi]",
                in("rdi") MIRROR_START,
                out("eax") _,
                options(nostack, readonly)
            );
            *s = clock_ns(clock).wrapping_sub(t0);
        }
        libc::sigaction(libc::SIGSEGV, &old, std::ptr::null_mut());
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Address of the F1 byte `probe_icebp_rip` executes, and the RIP its SIGTRAP reported.
static ICEBP_AT: AtomicU64 = AtomicU64::new(0);
static ICEBP_REPORTED: AtomicU64 = AtomicU64::new(0);

std::arch::global_asm!(
    ".pushsection .text.plex86_icebp_probe,\"ax\",@progbits",
    // fn plex86_icebp_probe(): ICEBP, then return.
    ".globl plex86_icebp_probe",
    ".type plex86_icebp_probe,@function",
    "plex86_icebp_probe:",
    ".byte 0xf1",
    "ret",
    ".size plex86_icebp_probe, . - plex86_icebp_probe",
    ".popsection",
);

extern "C" {
    fn plex86_icebp_probe();
}

extern "C" fn icebp_handler(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO handler. Resuming at the
    // `ret` after the F1, whatever RIP was reported, makes the probe return.
    unsafe {
        let mc = &mut (*uc.cast::<KUcontext>()).mc;
        ICEBP_REPORTED.store(mc.rip, Ordering::Relaxed);
        mc.rip = ICEBP_AT.load(Ordering::Relaxed) + 1;
    }
}

/// Where this host reports RIP for the #DB of ICEBP (F1), by executing one in the executor's
/// own code under a temporary SIGTRAP handler; `Err` with the reported RIP relative to the F1
/// (`None`: no SIGTRAP came) when it is neither at nor after it. x86 makes ICEBP a trap, but
/// hypervisors that intercept it differ (docs/ARCHITECTURE.md, "Entry and exit"). Setup time
/// only, before the seccomp filter; restores the SIGTRAP disposition installed before.
pub fn probe_icebp_rip() -> Result<IcebpRip, Option<i64>> {
    let at = plex86_icebp_probe as *const () as u64;
    ICEBP_AT.store(at, Ordering::Relaxed);
    ICEBP_REPORTED.store(0, Ordering::Relaxed);
    // SAFETY: swaps in a SIGTRAP handler that only records RIP and moves it to the `ret` after
    // the F1, runs the probe (an F1 and a `ret`: no memory effects), then puts the previous
    // disposition back.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = icebp_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTRAP, &sa, &mut old);
        plex86_icebp_probe();
        libc::sigaction(libc::SIGTRAP, &old, std::ptr::null_mut());
    }
    match ICEBP_REPORTED.load(Ordering::Relaxed) {
        0 => Err(None),
        r if r == at + 1 => Ok(IcebpRip::After),
        r if r == at => Ok(IcebpRip::At),
        r => Err(Some(r.wrapping_sub(at) as i64)),
    }
}
