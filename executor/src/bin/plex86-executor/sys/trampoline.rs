//! The guest entry (`plex86_enter`: `rt_sigreturn` into compatibility mode), the way back to
//! the host (`plex86_resume_host`) and the signal-handler entry (`plex86_signal_entry`), which
//! switch the FS/GS bases between host and guest.

use plex86_monitor::frame::{EntryFrame, EntrySegs, KUcontext};
use std::sync::atomic::AtomicU64;
/// Host FS/GS bases and the stack pointer saved at entry (read by the trampolines).
pub(super) static PLEX86_HOST_FSBASE: AtomicU64 = AtomicU64::new(0);
pub(super) static PLEX86_HOST_GSBASE: AtomicU64 = AtomicU64::new(0);
static PLEX86_HOST_RSP: AtomicU64 = AtomicU64::new(0);

std::arch::global_asm!(
    ".pushsection .text.plex86_trampolines,\"ax\",@progbits",
    // fn plex86_enter(uc: *const KUcontext /*rdi*/, segs: *const EntrySegs /*rsi*/, id: u64 /*rdx*/)
    // Saves the callee-saved registers and RSP, loads DS/ES/FS/GS with the guest's native
    // selectors, then writes the FS and GS bases explicitly: loading a null selector need not
    // clear the base (CPUs without NullSelectorClearsBase, e.g. older AMD, keep it), and the
    // base left here is the executor's thread pointer, which 64-bit code reached by a far jump
    // could read with rdfsbase (rt_sigreturn does not touch either base). Sets EFLAGS.ID as the
    // guest has it (rt_sigreturn keeps ID from the syscall's RFLAGS), points RSP at the frame
    // and calls rt_sigreturn. Returns (via plex86_resume_host) when the signal handler ends
    // the run.
    ".globl plex86_enter",
    ".type plex86_enter,@function",
    "plex86_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + {host_rsp}], rsp",
    "pushfq",
    "and dword ptr [rsp], 0xffdfffff",
    "or [rsp], rdx",
    "popfq",
    "mov ax, [rsi]",
    "mov ds, ax",
    "mov ax, [rsi + 2]",
    "mov es, ax",
    "mov ax, [rsi + 4]",
    "mov fs, ax",
    "mov ax, [rsi + 6]",
    "mov gs, ax",
    "mov rax, [rsi + 8]",
    "wrfsbase rax",
    "mov rax, [rsi + 16]",
    "wrgsbase rax",
    "mov rsp, rdi",
    "mov eax, 15",
    "syscall",
    "ud2",
    ".size plex86_enter, . - plex86_enter",
    // fn plex86_resume_host() -> ! : called from the signal handler (on the alternate stack)
    // to end a run: restores the host segment state and returns from plex86_enter.
    ".globl plex86_resume_host",
    ".type plex86_resume_host,@function",
    "plex86_resume_host:",
    "xor eax, eax",
    "mov ds, ax",
    "mov es, ax",
    "mov fs, ax",
    "mov gs, ax",
    "mov rax, [rip + {host_fs}]",
    "wrfsbase rax",
    "mov rax, [rip + {host_gs}]",
    "wrgsbase rax",
    "mov rsp, [rip + {host_rsp}]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size plex86_resume_host, . - plex86_resume_host",
    // The signal handler entry: switches FS/GS base to the host's (guest code may have loaded
    // FS/GS with its own segments, and Rust uses FS for thread-local storage), calls
    // plex86_signal_rust, and restores the guest's bases when it returns.
    ".globl plex86_signal_entry",
    ".type plex86_signal_entry,@function",
    "plex86_signal_entry:",
    // The kernel leaves EFLAGS.AC as the guest had it, and the host runs with CR0.AM=1:
    // clear AC before running any compiled code (sigreturn restores the guest's flags).
    "pushfq",
    "and dword ptr [rsp], 0xfffbffff",
    "popfq",
    "push rbx",
    "push r12",
    "push r13",
    "rdfsbase r12",
    "rdgsbase r13",
    "mov rax, [rip + {host_fs}]",
    "wrfsbase rax",
    "mov rax, [rip + {host_gs}]",
    "wrgsbase rax",
    "call {handler}",
    "wrfsbase r12",
    "wrgsbase r13",
    "pop r13",
    "pop r12",
    "pop rbx",
    "ret",
    ".size plex86_signal_entry, . - plex86_signal_entry",
    ".popsection",
    handler = sym super::signal::plex86_signal_rust,
    host_rsp = sym PLEX86_HOST_RSP,
    host_fs = sym PLEX86_HOST_FSBASE,
    host_gs = sym PLEX86_HOST_GSBASE,
);

extern "C" {
    fn plex86_enter(uc: *const KUcontext, segs: *const EntrySegs, id: u64);
    pub(super) fn plex86_resume_host() -> !;
    pub(super) fn plex86_signal_entry(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void);
}

/// Enters the guest from `frame` with data segments `segs` (DS, ES, FS, GS native selectors,
/// FS and GS bases) and the guest's EFLAGS (only ID is taken from it here; the frame carries
/// the rest). Returns when the signal handler ends the run.
pub fn enter_guest_raw(frame: *const EntryFrame, segs: &EntrySegs, eflags: u64) {
    // SAFETY: `frame` points to the monitor's entry frame, which lives (in a static) for the
    // whole process and is not accessed by Rust code until the run ends; it is a complete
    // rt_sigframe image whose XSAVE part was checked by the library (a bad frame makes the
    // kernel kill the process, it cannot corrupt memory). The trampoline saves all callee-saved
    // registers and the stack pointer, and control comes back only through
    // plex86_resume_host, which restores them: to the caller this is an ordinary call.
    unsafe {
        let uc = std::ptr::addr_of!((*frame).uc);
        plex86_enter(uc, segs, eflags & (1 << 21))
    };
}
