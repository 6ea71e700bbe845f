//! `plex86-executor --stub`: the launcher of the stub executor (issue 14's gate prototype,
//! docs/plans/issue14-gate.md). It runs a few of today's setup checks, builds S (code page,
//! the library's pages read-only, the stub's pages), installs the signal handlers and the
//! alternate stack in S, clones the mapper thread into S's code and jumps there: the guest
//! thread then unmaps everything outside S (this binary, libc, its stack, the vDSO) and
//! installs its filter. From then on the process holds only S, guest mirrors and
//! `[vsyscall]`; the monitor runs in the library.
//!
//! Exit codes: a failed step exits with its own code (70 + step: 84 a bad S base, 85 no
//! budget timer), or reports through `stub::READY` once S exists.

mod asm;

use crate::sys;
use plex86_executor::seccomp::{self, SockFilter};
use plex86_protocol::stub::{self as layout, by_stub as stub};
use plex86_protocol::{CONTROL_FD, RAM_FD};

const SIGNALS: [i32; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGALRM,
];
/// Highest user address + 1 on a 4-level host.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

fn fail(step: i32) -> ! {
    sys::exit_group(70 + step)
}

/// Where S goes: the library's `0x…` argument, checked as the library checked it.
fn stub_base(arg: Option<&str>) -> Option<u64> {
    let base = match arg {
        None => layout::DEFAULT_BASE,
        Some(a) => u64::from_str_radix(a.strip_prefix("0x")?, 16).ok()?,
    };
    layout::check_base(base).ok().map(|()| base)
}

/// Runs the launcher with S at `base_arg` (default: [`layout::DEFAULT_BASE`]); never returns
/// (the guest thread ends up in S's wait loop).
pub fn launch(base_arg: Option<&str>) -> ! {
    let Some(s) = stub_base(base_arg) else {
        fail(14)
    };
    if sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).is_err() || sys::getppid() == 1 {
        fail(1);
    }
    if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() {
        fail(2);
    }
    let Some(sw) = sys::probe_sigframe_xsave() else {
        fail(3)
    };
    // The host facts today's executor measures too, so that the library's monitor classifies
    // and times exactly as there: where ICEBP's #DB reports RIP, the cost of a fault round
    // trip (nothing is mapped at 0x1000 yet, as in the executor's reservation), and CPUID
    // faulting (kept by the guest thread, this one; ENODEV: the host has none).
    let icebp_at = match sys::probe_icebp_rip() {
        Ok(plex86_monitor::decode::IcebpRip::After) => 0,
        Ok(plex86_monitor::decode::IcebpRip::At) => 1,
        Err(_) => fail(11),
    };
    let fault_ns = sys::fault_round_trip_ns(libc::CLOCK_MONOTONIC);
    // RDTSC/RDTSCP fault (and exit): guest time is the emulator's. The stub reads the clock
    // with the clock_gettime system call, never RDTSC.
    if sys::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV as u64).is_err() {
        fail(13);
    }
    let cpuid_faulting = match sys::set_cpuid_faulting() {
        Ok(()) => 1,
        Err(libc::ENODEV) => 0,
        Err(_) => fail(12),
    };
    // The budget's timer: the guest thread (this one) arms it just before each entry, so a
    // run ends without the library waking (a wake-up here costs a context switch that
    // toggles CR4.TSD and CPUID faulting: docs/ARCHITECTURE.md, "Costs behind the constants").
    let Ok(timer) = sys::timer_create(libc::CLOCK_MONOTONIC, libc::SIGALRM) else {
        fail(15)
    };
    let code = asm::code();
    if code.bytes.len() > layout::CODE_LEN {
        fail(4);
    }
    let guest = seccomp::stub::guest_thread_filter(s + layout::CODE);
    let mapper = seccomp::stub::mapper_filter(s + layout::CODE);
    // SAFETY: maps S at a fixed address no Rust object uses (MAP_FIXED_NOREPLACE fails rather
    // than replace anything); writes only into those new mappings.
    unsafe {
        map_s(s, code.bytes).unwrap_or_else(|_| fail(5));
        let w = |off: usize, v: u64| write_stub_u64(s, off, v);
        w(stub::ALL_SIGNALS, u64::MAX);
        w(stub::UNMAP, 0x1000);
        w(stub::UNMAP + 8, s - 0x1000);
        w(stub::UNMAP + 16, s + layout::S_LEN);
        w(stub::UNMAP + 24, TASK_SIZE - (s + layout::S_LEN));
        w(
            stub::XSAVE_SW,
            u64::from(sw.extended_size) | (u64::from(sw.xstate_size) << 32),
        );
        w(stub::XSAVE_SW + 8, sw.xfeatures);
        w(stub::FAULT_NS, fault_ns);
        w(stub::CPUID_FAULTING, cpuid_faulting);
        w(stub::ICEBP_AT, icebp_at);
        w(stub::TIMER_ID, timer as u32 as u64);
        w(stub::VDSO_BASE, sys::vdso_base());
        put_filter(s, stub::FPROG_GUEST, stub::PROG_GUEST, &guest).unwrap_or_else(|()| fail(6));
        put_filter(s, stub::FPROG_MAPPER, stub::PROG_MAPPER, &mapper).unwrap_or_else(|()| fail(6));
    }
    if sys::close_other_fds().is_err() || (RAM_FD, CONTROL_FD) != (3, 4) {
        fail(7);
    }
    unregister_rseq().unwrap_or_else(|()| fail(8));
    // SAFETY: the handler and restorer are S's code; the alternate stack is S's stub pages,
    // which nothing else uses.
    unsafe { install_handlers(s, &code).unwrap_or_else(|()| fail(9)) };
    sys::block_all_signals();
    // SAFETY: S's code is mapped R-X at s; the mapper thread runs only S's code and touches
    // only S (it has no stack use and never returns into this binary).
    let tid = unsafe {
        let spawn: extern "C" fn() -> i64 = std::mem::transmute((s + code.spawn_mapper) as usize);
        spawn()
    };
    if tid <= 0 {
        fail(10);
    }
    // SAFETY: the stub pages are mapped writable (above).
    unsafe { write_stub_u64(s, stub::MAPPER_TID, tid as u64) };
    // SAFETY: the jump leaves Rust for good: S's start code unmaps this binary, its stack and
    // heap; nothing returns here.
    unsafe {
        let start: extern "C" fn() -> ! = std::mem::transmute((s + code.start) as usize);
        start()
    }
}

/// Maps S: the code page (copied, then R-X), the library's pages R--, the stub's RW-.
///
/// # Safety
/// `s` must be a free, page-aligned range of `S_LEN` bytes.
unsafe fn map_s(s: u64, code: &[u8]) -> Result<(), i32> {
    let fixed = libc::MAP_FIXED_NOREPLACE;
    let m = |addr: u64, len: usize, prot: i32, flags: i32, fd: i32, off: i64| {
        // SAFETY: a new mapping at a free fixed address (NOREPLACE).
        let p = unsafe { libc::mmap(addr as *mut _, len, prot, flags | fixed, fd, off) };
        if p as u64 == addr {
            Ok(())
        } else {
            Err(sys::errno())
        }
    };
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    m(
        s + layout::CODE,
        layout::CODE_LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        anon,
        -1,
        0,
    )?;
    // SAFETY: the page was just mapped writable and is CODE_LEN >= code.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), (s + layout::CODE) as *mut u8, code.len())
    };
    // SAFETY: changes the protection of the page mapped above only.
    if unsafe {
        libc::mprotect(
            (s + layout::CODE) as *mut _,
            layout::CODE_LEN,
            libc::PROT_READ | libc::PROT_EXEC,
        )
    } != 0
    {
        return Err(sys::errno());
    }
    let shared = libc::MAP_SHARED;
    m(
        s + layout::LIB,
        layout::LIB_LEN,
        libc::PROT_READ,
        shared,
        CONTROL_FD,
        0,
    )?;
    m(
        s + layout::STUB,
        layout::STUB_LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        shared,
        CONTROL_FD,
        layout::LIB_LEN as i64,
    )
}

/// # Safety
/// S's stub pages must be mapped writable.
unsafe fn write_stub_u64(s: u64, off: usize, v: u64) {
    // SAFETY: within the stub pages (the offsets are below STUB_LEN), 8-byte aligned.
    unsafe { std::ptr::write((s + layout::STUB + off as u64) as *mut u64, v) }
}

/// Writes a `sock_fprog` at `fprog` pointing at the program copied to `prog`.
///
/// # Safety
/// S's stub pages must be mapped writable.
unsafe fn put_filter(s: u64, fprog: usize, prog: usize, p: &[SockFilter]) -> Result<(), ()> {
    if std::mem::size_of_val(p) > stub::PROG_ROOM {
        return Err(());
    }
    let at = s + layout::STUB + prog as u64;
    // SAFETY: the program fits its room in the stub pages (checked above).
    unsafe {
        std::ptr::copy_nonoverlapping(p.as_ptr(), at as *mut SockFilter, p.len());
        write_stub_u64(s, fprog, p.len() as u64);
        write_stub_u64(s, fprog + 8, at);
    }
    Ok(())
}

/// glibc registered this thread's rseq area in the TLS the stub unmaps; the kernel would
/// write to it at the next preemption and kill the thread when it finds it gone.
fn unregister_rseq() -> Result<(), ()> {
    extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    const RSEQ_SIG: usize = 0x5305_3053;
    const RSEQ_FLAG_UNREGISTER: usize = 1;
    let tp: u64;
    // SAFETY: reads the thread pointer (FS base); glibc exports the two symbols (2.35+).
    let (off, size) = unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly));
        (__rseq_offset, __rseq_size)
    };
    if size == 0 {
        return Ok(()); // not registered (glibc.pthread.rseq=0)
    }
    let area = (tp as i64 + off as i64) as usize;
    for len in [32usize, size as usize] {
        // SAFETY: unregistering the calling thread's own area changes no memory.
        let r = unsafe {
            sys::syscall6(
                libc::SYS_rseq,
                [area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG, 0, 0],
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    Err(())
}

/// The kernel's `struct sigaction` (rt_sigaction's, not libc's).
#[repr(C)]
struct KSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

/// # Safety
/// S's code and stub pages must be mapped.
unsafe fn install_handlers(s: u64, code: &asm::StubCode) -> Result<(), ()> {
    let ss = libc::stack_t {
        ss_sp: (s + layout::STUB + stub::ALTSTACK as u64) as *mut _,
        ss_flags: 0,
        ss_size: stub::ALTSTACK_LEN,
    };
    // SAFETY: the alternate stack is S's stub pages, used for nothing else.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(());
    }
    const SA_RESTORER: u64 = 0x0400_0000;
    let sa = KSigaction {
        handler: s + code.handler,
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK) as u64 | SA_RESTORER,
        restorer: s + code.restorer,
        mask: u64::MAX,
    };
    for sig in SIGNALS {
        // SAFETY: rt_sigaction reads `sa` (valid) and writes nothing (no old action).
        let r = unsafe {
            sys::syscall6(
                libc::SYS_rt_sigaction,
                [sig as usize, &sa as *const KSigaction as usize, 0, 8, 0, 0],
            )
        };
        if r != 0 {
            return Err(());
        }
    }
    Ok(())
}
