//! Installation of the guest-signal handlers and the context the monitor sees for each signal.

use super::errno;
use super::trampoline::{
    plex86_resume_host, plex86_signal_entry, PLEX86_HOST_FSBASE, PLEX86_HOST_GSBASE,
};
use plex86_monitor::frame::{
    KStack, KUcontext, SignalAction, SignalContext, FP_XSTATE_MAGIC1, UC_FP_XSTATE,
};
use plex86_protocol::xsave::{fx, sw};
use std::sync::atomic::{AtomicU64, Ordering};

type Handler = fn(&mut SignalContext<'_>) -> SignalAction;
static HANDLER: AtomicU64 = AtomicU64::new(0);

pub(super) extern "C" fn plex86_signal_rust(
    sig: i32,
    info: *mut libc::siginfo_t,
    uc: *mut libc::c_void,
) {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        std::arch::asm!(
            "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags),
        );
    }
    // SAFETY: the kernel passes a valid siginfo and ucontext for an SA_SIGINFO handler; they
    // live on the alternate stack for the duration of the handler and nothing else accesses
    // them meanwhile. The SIGSYS fields are at fixed offsets of `siginfo_t` (16, 24, 28).
    let action = unsafe {
        let infob = info.cast::<u8>();
        let code = (*info).si_code;
        let call_addr = std::ptr::read_unaligned(infob.add(16).cast::<u64>());
        let syscall = std::ptr::read_unaligned(infob.add(24).cast::<i32>());
        let arch = std::ptr::read_unaligned(infob.add(28).cast::<u32>());
        let uc = &mut *uc.cast::<KUcontext>();
        let fpstate = if uc.mc.fpstate != 0 && uc.flags & UC_FP_XSTATE != 0 {
            let p = uc.mc.fpstate as *const u8;
            let magic1 = std::ptr::read_unaligned(p.add(sw::MAGIC1).cast::<u32>());
            let size = std::ptr::read_unaligned(p.add(sw::XSTATE_SIZE).cast::<u32>()) as usize;
            if magic1 == FP_XSTATE_MAGIC1 && size <= plex86_protocol::XSAVE_AREA_SIZE {
                Some(std::slice::from_raw_parts(p, size))
            } else {
                Some(std::slice::from_raw_parts(p, fx::SIZE))
            }
        } else {
            None
        };
        let mut ctx = SignalContext {
            sig,
            code,
            call_addr,
            syscall,
            arch,
            uc,
            data_segs: [ds, es, fs, gs],
            seg_bases: None,
            fpstate,
        };
        let h = HANDLER.load(Ordering::Relaxed);
        if h == 0 {
            SignalAction::Resume
        } else {
            let f: Handler = std::mem::transmute::<usize, Handler>(h as usize);
            f(&mut ctx)
        }
    };
    if action == SignalAction::ExitToHost {
        // SAFETY: only called while a run is in progress (the handler decides so only for
        // signals that interrupted guest code entered through plex86_enter), so the saved host
        // stack pointer and registers are valid. The frames being abandoned (this function and
        // the trampoline) hold nothing that needs dropping.
        unsafe { plex86_resume_host() }
    }
}

/// Installs `handler` for `signals` (SA_SIGINFO | SA_ONSTACK, all signals blocked while it
/// runs) on an alternate stack of `altstack_size` bytes; records the host FS/GS bases.
pub fn install_signal_handlers(
    handler: Handler,
    signals: &[i32],
    altstack: &'static mut [u8],
) -> Result<(), i32> {
    let base: u64;
    let gsb: u64;
    // SAFETY: reading the FS/GS bases has no side effects (FSGSBASE checked by the caller).
    unsafe {
        std::arch::asm!("rdfsbase {0}", "rdgsbase {1}", out(reg) base, out(reg) gsb, options(nomem, nostack));
    }
    PLEX86_HOST_FSBASE.store(base, Ordering::Relaxed);
    PLEX86_HOST_GSBASE.store(gsb, Ordering::Relaxed);
    HANDLER.store(handler as usize as u64, Ordering::Relaxed);
    let ss = libc::stack_t {
        ss_sp: altstack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: altstack.len(),
    };
    // SAFETY: the alternate stack is a 'static buffer that is never used for anything else.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(errno());
    }
    for &s in signals {
        // SAFETY: sigaction is plain data; the trampoline is a valid SA_SIGINFO handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = plex86_signal_entry as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigfillset(&mut sa.sa_mask);
            if libc::sigaction(s, &sa, std::ptr::null_mut()) != 0 {
                return Err(errno());
            }
        }
    }
    Ok(())
}

/// The current alternate stack (for the entry frame's uc_stack).
pub fn current_altstack() -> KStack {
    // SAFETY: stack_t is plain data; sigaltstack only writes into `old`.
    unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut old);
        KStack {
            sp: old.ss_sp as u64,
            flags: 0,
            pad: 0,
            size: old.ss_size as u64,
        }
    }
}

/// Blocks every signal in this thread (the executor's own code runs with signals blocked; the
/// guest's mask comes from the entry frame).
pub fn block_all_signals() {
    // SAFETY: sigset_t is plain data; changing this thread's mask affects no memory.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
