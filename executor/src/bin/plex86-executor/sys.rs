//! Executor-side system glue: raw system calls, the guest entry (`rt_sigreturn` into
//! compatibility mode), the signal-handler trampoline, the LDT, and the mapping of guest RAM.
//! Every `unsafe` block of the executor lives here.
//!
//! Raw system calls use inline `syscall` rather than libc: after setup the executor must not
//! touch `errno` (thread-local storage) from the signal handler, nor the vDSO (RDTSC is
//! disabled with PR_SET_TSC).

use guest_paging::PhysMemory;
use plex86_executor::decode::IcebpRip;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// x86-64 system call numbers used by the executor.
pub mod nr {
    /// mmap
    pub const MMAP: usize = 9;
    /// sched_yield
    pub const SCHED_YIELD: usize = 24;
    /// mprotect
    pub const MPROTECT: usize = 10;
    /// modify_ldt
    pub const MODIFY_LDT: usize = 154;
    /// futex
    pub const FUTEX: usize = 202;
    /// timer_create
    pub const TIMER_CREATE: usize = 222;
    /// timer_settime
    pub const TIMER_SETTIME: usize = 223;
    /// timer_gettime
    pub const TIMER_GETTIME: usize = 224;
    /// clock_gettime
    pub const CLOCK_GETTIME: usize = 228;
    /// exit_group
    pub const EXIT_GROUP: usize = 231;
    /// seccomp
    pub const SECCOMP: usize = 317;
    /// close_range
    pub const CLOSE_RANGE: usize = 436;
}

/// A raw system call with up to six arguments; returns the kernel's value (negative errno).
///
/// # Safety
/// The caller must make sure the call with these arguments does not violate memory safety
/// (e.g. does not unmap or overwrite memory that Rust code still uses).
#[inline(always)]
pub unsafe fn syscall6(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the call's effects are sound; the syscall instruction
    // clobbers only rcx and r11, declared below.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Leaves the process immediately with `code`.
pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group does not return and affects no memory.
        unsafe { syscall6(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

/// Reads a clock with the raw system call (not the vDSO, which uses RDTSC).
pub fn clock_ns(clock: i32) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, a valid local.
    unsafe {
        syscall6(
            nr::CLOCK_GETTIME,
            [clock as usize, &mut ts as *mut _ as usize, 0, 0, 0, 0],
        )
    };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// FUTEX_WAIT (shared) on `word` while it equals `val`.
pub fn futex_wait(word: &AtomicU32, val: u32) {
    // SAFETY: `word` is a valid aligned u32; no timeout; the kernel only reads it.
    unsafe {
        syscall6(
            nr::FUTEX,
            [
                word.as_ptr() as usize,
                libc::FUTEX_WAIT as usize,
                val as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Yields the CPU.
pub fn sched_yield() {
    // SAFETY: no arguments, no memory effects.
    unsafe { syscall6(nr::SCHED_YIELD, [0; 6]) };
}

/// FUTEX_WAKE (shared) on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid aligned u32.
    unsafe {
        syscall6(
            nr::FUTEX,
            [
                word.as_ptr() as usize,
                libc::FUTEX_WAKE as usize,
                i32::MAX as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Arms (or with 0 disarms) the budget timer for `ns` nanoseconds from now.
pub fn timer_arm(timer: i32, ns: u64) {
    let its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: timer_settime reads one itimerspec from a valid local; old value not requested.
    unsafe {
        syscall6(
            nr::TIMER_SETTIME,
            [timer as usize, 0, &its as *const _ as usize, 0, 0, 0],
        )
    };
}

/// True while `timer` is armed (its expiry is still ahead).
pub fn timer_pending(timer: i32) -> bool {
    let mut its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: timer_gettime writes one itimerspec into a valid local.
    let r = unsafe {
        syscall6(
            nr::TIMER_GETTIME,
            [timer as usize, &mut its as *mut _ as usize, 0, 0, 0, 0],
        )
    };
    r == 0 && (its.it_value.tv_sec != 0 || its.it_value.tv_nsec != 0)
}

// ---------------------------------------------------------------------------------------------
// Guest mirror mappings (the only MAP_FIXED users).

/// Lowest guest page that can be mirrored (mmap_min_addr).
pub const MIRROR_START: u64 = 0x1000;
/// End of the guest mirror region.
pub const MIRROR_END: u64 = 1 << 32;

static RESERVED: AtomicBool = AtomicBool::new(false);

fn check_mirror_range(addr: u64, len: u64) {
    assert!(
        RESERVED.load(Ordering::Relaxed),
        "mirror region not reserved"
    );
    assert!(
        addr >= MIRROR_START && addr % 4096 == 0 && len % 4096 == 0 && addr + len <= MIRROR_END
    );
}

/// Reserves `[0x1000, 4 GiB)` with one PROT_NONE mapping (MAP_FIXED_NOREPLACE). Fails if
/// anything is mapped there. After this, nothing of the executor can be placed below 4 GiB.
pub fn reserve_mirror_region() -> Result<(), i32> {
    let len = MIRROR_END - MIRROR_START;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory in use can
    // be affected; the range is checked to be free by the kernel.
    let r = unsafe {
        syscall6(
            nr::MMAP,
            [
                MIRROR_START as usize,
                len as usize,
                libc::PROT_NONE as usize,
                (libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r < 0 {
        return Err(-r as i32);
    }
    if r as u64 != MIRROR_START {
        return Err(libc::EEXIST);
    }
    RESERVED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Maps the guest-physical page `phys` of the RAM memfd at linear `page` with `prot`, with its
/// page-table entry populated: the access that needed the fill follows at once, and a second
/// (minor) host fault for it would cost more than populating here, unseen by the fill's timing.
pub fn mirror_map(page: u32, phys: u64, prot: i32) -> Result<(), i32> {
    check_mirror_range(u64::from(page), 4096);
    // SAFETY: the target lies inside the reserved mirror region (checked), which holds only
    // guest mirrors: no Rust object lives there, so replacing the page is sound.
    let r = unsafe {
        syscall6(
            nr::MMAP,
            [
                page as usize,
                4096,
                prot as usize,
                (libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE) as usize,
                plex86_protocol::RAM_FD as usize,
                phys as usize,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// Returns `[addr, addr+len)` to the PROT_NONE reservation.
pub fn mirror_unmap(addr: u64, len: u64) -> Result<(), i32> {
    check_mirror_range(addr, len);
    // SAFETY: as `mirror_map`: the range holds only guest mirrors.
    let r = unsafe {
        syscall6(
            nr::MMAP,
            [
                addr as usize,
                len as usize,
                libc::PROT_NONE as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED)
                    as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// Changes the protection of one mirrored page.
pub fn mirror_protect(page: u32, prot: i32) -> Result<(), i32> {
    check_mirror_range(u64::from(page), 4096);
    // SAFETY: as `mirror_map`: the page holds only a guest mirror.
    let r = unsafe { syscall6(nr::MPROTECT, [page as usize, 4096, prot as usize, 0, 0, 0]) };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Guest RAM above 4 GiB.

/// The executor's own mapping of all of guest RAM (for page walks, A/D updates and reading
/// instruction bytes).
#[derive(Debug)]
pub struct RamMapping {
    base: *mut u8,
    size: u64,
}

// SAFETY: RamMapping is only used by the executor's single thread; the pointer refers to a
// shared file mapping that lives for the whole process.
unsafe impl Send for RamMapping {}

impl RamMapping {
    /// Maps `size` bytes of the RAM memfd read/write at a kernel-chosen (high) address.
    pub fn new(size: u64) -> Result<RamMapping, i32> {
        // SAFETY: a fresh mapping at a kernel-chosen address affects no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                plex86_protocol::RAM_FD,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        if (p as u64) < MIRROR_END {
            return Err(libc::EFAULT);
        }
        Ok(RamMapping {
            base: p.cast(),
            size,
        })
    }

    fn ptr(&self, pa: u64, len: u64, align: u64) -> Option<*mut u8> {
        if pa % align != 0 || pa.checked_add(len)? > self.size {
            return None;
        }
        // SAFETY: `pa + len <= size` (checked), so the result is inside the mapping.
        Some(unsafe { self.base.add(pa as usize) })
    }

    /// Copies guest-physical bytes into `buf`; `false` if out of range.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(p) = self.ptr(pa, buf.len() as u64, 1) else {
            return false;
        };
        // SAFETY: the source range is inside the mapping (checked); the memory may change
        // concurrently (guest code, Bochs), which a byte copy tolerates.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

impl PhysMemory for RamMapping {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let p = self.ptr(pa, 4, 4)?;
        // SAFETY: aligned and inside the mapping (checked); atomic because others write it.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::Acquire))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let p = self.ptr(pa, 8, 8)?;
        // SAFETY: as read_u32.
        Some(unsafe { AtomicU64::from_ptr(p.cast()) }.load(Ordering::Acquire))
    }
    fn cmpxchg_u32(&self, pa: u64, old: u32, new: u32) -> Option<bool> {
        let p = self.ptr(pa, 4, 4)?;
        // SAFETY: as read_u32; `lock cmpxchg` like the hardware's A/D update.
        let a = unsafe { AtomicU32::from_ptr(p.cast()) };
        Some(
            a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        )
    }
    fn cmpxchg_u64(&self, pa: u64, old: u64, new: u64) -> Option<bool> {
        let p = self.ptr(pa, 8, 8)?;
        // SAFETY: as read_u32.
        let a = unsafe { AtomicU64::from_ptr(p.cast()) };
        Some(
            a.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The control region, as mapped in the executor.

/// The control region: the library part read-only, the executor part read/write.
#[derive(Debug)]
pub struct Control {
    lib: *const u8,
    exec: *mut u8,
}

impl Control {
    /// Maps the control memfd (fd 4). The library part is mapped PROT_READ.
    pub fn map() -> Result<Control, i32> {
        use plex86_protocol::{CONTROL_FD, EXEC_AREA_OFFSET, REGION_SIZE};
        // SAFETY: fresh mappings at kernel-chosen addresses.
        let lib = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                EXEC_AREA_OFFSET,
                libc::PROT_READ,
                libc::MAP_SHARED,
                CONTROL_FD,
                0,
            )
        };
        // SAFETY: as above.
        let exec = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE - EXEC_AREA_OFFSET,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                CONTROL_FD,
                EXEC_AREA_OFFSET as libc::off_t,
            )
        };
        if lib == libc::MAP_FAILED || exec == libc::MAP_FAILED {
            return Err(libc::EBADF);
        }
        Ok(Control {
            lib: lib.cast(),
            exec: exec.cast(),
        })
    }

    /// Copies `len` bytes at `off` of the library part into `dst`.
    pub fn read_lib(&self, off: usize, dst: &mut [u8]) {
        assert!(off + dst.len() <= plex86_protocol::EXEC_AREA_OFFSET);
        // SAFETY: inside the read-only mapping (checked); a byte copy tolerates concurrent
        // writes by the library (which it does not make while a request is pending).
        unsafe { std::ptr::copy_nonoverlapping(self.lib.add(off), dst.as_mut_ptr(), dst.len()) };
    }

    /// Copies `src` into the executor part at `off`.
    pub fn write_exec(&self, off: usize, src: &[u8]) {
        assert!(
            off + src.len() <= plex86_protocol::REGION_SIZE - plex86_protocol::EXEC_AREA_OFFSET
        );
        // SAFETY: inside the writable mapping (checked).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.exec.add(off), src.len()) };
    }

    /// An atomic u32 of the library part (the request sequence word).
    pub fn lib_word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= plex86_protocol::EXEC_AREA_OFFSET);
        // SAFETY: aligned, inside the mapping for the life of the process; only loads are made
        // (the mapping is read-only).
        unsafe { AtomicU32::from_ptr(self.lib.add(off) as *mut u32) }
    }

    /// An atomic u32 of the executor part.
    pub fn exec_word(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0
                && off + 4 <= plex86_protocol::REGION_SIZE - plex86_protocol::EXEC_AREA_OFFSET
        );
        // SAFETY: aligned, inside the writable mapping for the life of the process.
        unsafe { AtomicU32::from_ptr(self.exec.add(off).cast()) }
    }
}

/// Bytes of a protocol value (for copying into the control region).
pub fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the protocol types are repr(C) plain data with explicit padding fields; reading
    // their bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Reads a protocol value out of the library part.
pub fn read_lib_value<T: Copy>(c: &Control, off: usize) -> T {
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the slice covers exactly the (zero-initialised) bytes of `v`.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>())
    };
    c.read_lib(off, buf);
    // SAFETY: only used for protocol types (integers and arrays of integers), for which any
    // byte pattern is valid.
    unsafe { v.assume_init() }
}

// ---------------------------------------------------------------------------------------------
// Kernel signal frame layout (x86-64).

/// `struct sigcontext` (64-bit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KSigcontext {
    /// r8..r15
    pub r: [u64; 8],
    /// rdi
    pub rdi: u64,
    /// rsi
    pub rsi: u64,
    /// rbp
    pub rbp: u64,
    /// rbx
    pub rbx: u64,
    /// rdx
    pub rdx: u64,
    /// rax
    pub rax: u64,
    /// rcx
    pub rcx: u64,
    /// rsp
    pub rsp: u64,
    /// rip
    pub rip: u64,
    /// rflags
    pub eflags: u64,
    /// cs
    pub cs: u16,
    /// gs (unused by the kernel)
    pub gs: u16,
    /// fs (unused by the kernel)
    pub fs: u16,
    /// ss
    pub ss: u16,
    /// error code
    pub err: u64,
    /// trap number
    pub trapno: u64,
    /// old mask
    pub oldmask: u64,
    /// cr2
    pub cr2: u64,
    /// pointer to the XSAVE area
    pub fpstate: u64,
    /// reserved
    pub reserved: [u64; 8],
}

/// `stack_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KStack {
    /// ss_sp
    pub sp: u64,
    /// ss_flags
    pub flags: i32,
    /// padding
    pub pad: i32,
    /// ss_size
    pub size: u64,
}

/// The kernel's `struct ucontext` (64-bit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KUcontext {
    /// uc_flags
    pub flags: u64,
    /// uc_link
    pub link: u64,
    /// uc_stack
    pub stack: KStack,
    /// uc_mcontext
    pub mc: KSigcontext,
    /// uc_sigmask (kernel sigset, 64 bits)
    pub sigmask: u64,
}

/// uc_flags: the frame has an XSAVE area.
pub const UC_FP_XSTATE: u64 = 1;
/// uc_flags: sigcontext.ss is valid.
pub const UC_SIGCONTEXT_SS: u64 = 2;
/// uc_flags: restore SS exactly.
pub const UC_STRICT_RESTORE_SS: u64 = 4;
/// `_fpx_sw_bytes.magic1`.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Trailer after the XSAVE area.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Room for the XSAVE area of an entry frame (image + MAGIC2 trailer).
pub const FPSTATE_ROOM: usize = plex86_protocol::XSAVE_AREA_SIZE + 64;

/// A hand-made `rt_sigframe` used to enter the guest with `rt_sigreturn`: the kernel loads all
/// registers, CS/SS, the signal mask and the XSAVE state from it atomically.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct EntryFrame {
    pretcode: u64,
    /// The ucontext the kernel restores (RSP points here at the `syscall`).
    pub uc: KUcontext,
    info: [u8; 128],
    pad: [u8; 8],
    /// The XSAVE area (64-byte aligned).
    pub fpstate: [u8; FPSTATE_ROOM],
}

impl EntryFrame {
    /// A zeroed frame.
    pub const fn new() -> Self {
        EntryFrame {
            pretcode: 0,
            uc: KUcontext {
                flags: 0,
                link: 0,
                stack: KStack {
                    sp: 0,
                    flags: 0,
                    pad: 0,
                    size: 0,
                },
                mc: KSigcontext {
                    r: [0; 8],
                    rdi: 0,
                    rsi: 0,
                    rbp: 0,
                    rbx: 0,
                    rdx: 0,
                    rax: 0,
                    rcx: 0,
                    rsp: 0,
                    rip: 0,
                    eflags: 0,
                    cs: 0,
                    gs: 0,
                    fs: 0,
                    ss: 0,
                    err: 0,
                    trapno: 0,
                    oldmask: 0,
                    cr2: 0,
                    fpstate: 0,
                    reserved: [0; 8],
                },
                sigmask: 0,
            },
            info: [0; 128],
            pad: [0; 8],
            fpstate: [0; FPSTATE_ROOM],
        }
    }
    /// Address of the XSAVE area, for `uc.mc.fpstate`.
    pub fn fpstate_addr(&self) -> u64 {
        self.fpstate.as_ptr() as u64
    }
}

impl Default for EntryFrame {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Entry and exit trampolines.

/// Host FS/GS bases and the stack pointer saved at entry (read by the trampolines).
static PLEX86_HOST_FSBASE: AtomicU64 = AtomicU64::new(0);
static PLEX86_HOST_GSBASE: AtomicU64 = AtomicU64::new(0);
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
    handler = sym plex86_signal_rust,
    host_rsp = sym PLEX86_HOST_RSP,
    host_fs = sym PLEX86_HOST_FSBASE,
    host_gs = sym PLEX86_HOST_GSBASE,
);

/// The data segments of an entry, as `plex86_enter` reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntrySegs {
    /// Native selectors for DS, ES, FS, GS (offset 0).
    pub sel: [u16; 4],
    /// FS base (offset 8): the guest segment's base, 0 for a null selector.
    pub fs_base: u64,
    /// GS base (offset 16), likewise.
    pub gs_base: u64,
}

// The offsets plex86_enter reads.
const _: () = assert!(
    std::mem::offset_of!(EntrySegs, sel) == 0
        && std::mem::offset_of!(EntrySegs, fs_base) == 8
        && std::mem::offset_of!(EntrySegs, gs_base) == 16
);

extern "C" {
    fn plex86_enter(uc: *const KUcontext, segs: *const EntrySegs, id: u64);
    fn plex86_resume_host() -> !;
    fn plex86_signal_entry(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void);
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

/// Start of the self-test's code page pair, which straddles 4 GiB.
const SELFTEST_CODE: u64 = MIRROR_END - 0x1000;

/// Where the self-test's `syscall` cases put their instruction bytes (a `ret` follows): the
/// system call reports the address after the instruction, here 4 GiB, 4 GiB + 1, 4 GiB + 14
/// (the longest instruction starting in guest memory: 13 ignored CS prefixes, `0f 05`) and
/// 4 GiB + 15 (an instruction starting above 4 GiB, which the filter must let through).
fn selftest_syscall_code(what: &str) -> Option<(u64, &'static [u8])> {
    const PREFIXED: [u8; 15] = [
        0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x0f, 0x05,
    ];
    Some(match what {
        "syscall_ip_4g" => (MIRROR_END - 2, &[0x0f, 0x05]),
        "syscall_ip_4g_plus_1" => (MIRROR_END - 1, &[0x0f, 0x05]),
        "syscall_ip_4g_plus_14" => (MIRROR_END - 1, &PREFIXED),
        "syscall_ip_4g_plus_15" => (MIRROR_END + 13, &[0x0f, 0x05]),
        _ => return None,
    })
}

/// Set-up of a seccomp self-test case before the filter goes in: the `syscall` cases map two
/// pages around 4 GiB and write their instruction there. Returns false if that failed.
pub fn selftest_prepare(what: &str) -> bool {
    let Some((at, bytes)) = selftest_syscall_code(what) else {
        return true;
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the self-test process
    // runs no guest and uses nothing near 4 GiB.
    let r = unsafe {
        syscall6(
            nr::MMAP,
            [
                SELFTEST_CODE as usize,
                0x2000,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as usize,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        )
    };
    if r as u64 != SELFTEST_CODE {
        return false;
    }
    let end = at + bytes.len() as u64;
    // SAFETY: `[at, end]` lies inside the fresh 8 KiB mapping (every case ends below
    // SELFTEST_CODE + 0x2000), which nothing else uses.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
        *(end as *mut u8) = 0xc3;
    }
    true
}

/// Makes one forbidden (or, for "clock_gettime" and "mmap_end_4g", allowed) system call for
/// the seccomp self-test. The `syscall` cases make an allowed call (`sched_yield`) from an
/// instruction near 4 GiB, prepared by [`selftest_prepare`].
pub fn selftest_call(what: &str) {
    if let Some((at, _)) = selftest_syscall_code(what) {
        // SAFETY: the code at `at` (written by selftest_prepare) is one `syscall` and a `ret`;
        // sched_yield has no memory effects, and the call clobbers only rax, rcx and r11.
        unsafe {
            std::arch::asm!(
                "call {code}",
                code = in(reg) at,
                inlateout("rax") nr::SCHED_YIELD => _,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        return;
    }
    let hi = 0x7f00_0000_0000usize;
    let low_fixed = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize;
    let (n, a): (usize, [usize; 6]) = match what {
        "getpid" => (39, [0; 6]),
        "openat" => (
            257,
            [
                libc::AT_FDCWD as usize,
                c"/etc/passwd".as_ptr() as usize,
                0,
                0,
                0,
                0,
            ],
        ),
        "socket" => (
            41,
            [
                libc::AF_INET as usize,
                libc::SOCK_STREAM as usize,
                0,
                0,
                0,
                0,
            ],
        ),
        "fork" => (57, [0; 6]),
        "clone" => (56, [libc::SIGCHLD as usize, 0, 0, 0, 0, 0]),
        "execve" => (59, [c"/bin/true".as_ptr() as usize, 0, 0, 0, 0, 0]),
        "write" => (1, [2, c"x".as_ptr() as usize, 1, 0, 0, 0]),
        "kill" => (62, [1, 0, 0, 0, 0, 0]),
        "x32_futex" => (0x4000_0000 + 202, [0; 6]),
        "mmap_high" => (
            9,
            [
                hi,
                4096,
                7,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as usize,
                usize::MAX,
                0,
            ],
        ),
        "mprotect_high" => (10, [hi, 4096, 7, 0, 0, 0]),
        // Start and length below 4 GiB each, the end above it.
        "mmap_past_4g" => (9, [0xffff_f000, 0x2000, 0, low_fixed, usize::MAX, 0]),
        "mmap_wrap" => (9, [0xffff_f000, 0xffff_f000, 0, low_fixed, usize::MAX, 0]),
        "mprotect_past_4g" => (10, [0xffff_f000, 0x2000, 1, 0, 0, 0]),
        // Allowed: ends exactly at 4 GiB.
        "mmap_end_4g" => (9, [0xffff_f000, 0x1000, 0, low_fixed, usize::MAX, 0]),
        "modify_ldt_read" => (154, [0, 0, 0, 0, 0, 0]),
        "mmap_control_fd" => (9, [0x10000, 4096, 3, libc::MAP_SHARED as usize, 4, 0]),
        "clock_gettime" => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            (228, [1, &mut ts as *mut _ as usize, 0, 0, 0, 0])
        }
        _ => return,
    };
    // SAFETY: every call here is either killed by the filter before it runs or harmless
    // (clock_gettime into a local; the others fail on bad arguments if ever allowed).
    unsafe { syscall6(n, a) };
}

/// What the signal handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// Return to the interrupted code (the kernel restores it from the frame).
    Resume,
    /// End the run: jump back into the executor loop.
    ExitToHost,
}

/// The data of one delivered signal, borrowed from the kernel's frame on the alternate stack.
#[derive(Debug)]
pub struct SignalContext<'a> {
    /// Signal number.
    pub sig: i32,
    /// si_code.
    pub code: i32,
    /// SIGSYS: address after the system-call instruction.
    pub call_addr: u64,
    /// SIGSYS: system call number.
    pub syscall: i32,
    /// SIGSYS: AUDIT_ARCH value.
    pub arch: u32,
    /// The interrupted context.
    pub uc: &'a mut KUcontext,
    /// The data segment registers at the time of the signal: DS, ES, FS, GS.
    pub data_segs: [u16; 4],
    /// The XSAVE area of the frame (standard format), `None` if absent.
    pub fpstate: Option<&'a [u8]>,
}

type Handler = fn(&mut SignalContext<'_>) -> SignalAction;
static HANDLER: AtomicU64 = AtomicU64::new(0);

extern "C" fn plex86_signal_rust(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
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
            let magic1 = std::ptr::read_unaligned(p.add(464).cast::<u32>());
            let size = std::ptr::read_unaligned(p.add(464 + 16).cast::<u32>()) as usize;
            if magic1 == FP_XSTATE_MAGIC1 && size <= plex86_protocol::XSAVE_AREA_SIZE {
                Some(std::slice::from_raw_parts(p, size))
            } else {
                Some(std::slice::from_raw_parts(p, 512))
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

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
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

/// The kernel's XSAVE signal-frame parameters (`_fpx_sw_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpxSwBytes {
    /// extended_size
    pub extended_size: u32,
    /// xfeatures
    pub xfeatures: u64,
    /// xstate_size
    pub xstate_size: u32,
}

static PROBE_EXT: AtomicU32 = AtomicU32::new(0);
static PROBE_XF: AtomicU64 = AtomicU64::new(0);
static PROBE_SIZE: AtomicU32 = AtomicU32::new(0);

extern "C" fn probe_handler(_sig: i32, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext; the fpstate pointer (when non-null) points to
    // its XSAVE area with the software bytes at offset 464.
    unsafe {
        let uc = &*uc.cast::<KUcontext>();
        if uc.mc.fpstate == 0 {
            return;
        }
        let p = uc.mc.fpstate as *const u8;
        if std::ptr::read_unaligned(p.add(464).cast::<u32>()) != FP_XSTATE_MAGIC1 {
            return;
        }
        PROBE_EXT.store(
            std::ptr::read_unaligned(p.add(468).cast::<u32>()),
            Ordering::Relaxed,
        );
        PROBE_XF.store(
            std::ptr::read_unaligned(p.add(472).cast::<u64>()),
            Ordering::Relaxed,
        );
        PROBE_SIZE.store(
            std::ptr::read_unaligned(p.add(480).cast::<u32>()),
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
/// stack, and of the return from it: the median of 31 rounds on `clock` (3.2-4.0 µs on the
/// project's VMs). A demand fill pays this on top of its handler's work, which the handler
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

// ---------------------------------------------------------------------------------------------
// Descriptors.

/// `struct user_desc` for modify_ldt / set_thread_area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserDesc {
    /// Entry number.
    pub entry_number: u32,
    /// Base.
    pub base_addr: u32,
    /// Raw limit.
    pub limit: u32,
    /// seg_32bit:1, contents:2, read_exec_only:1, limit_in_pages:1, seg_not_present:1,
    /// useable:1, lm:1
    pub flags: u32,
}

impl UserDesc {
    /// The "empty" descriptor (clears an entry).
    pub fn empty(entry: u32) -> Self {
        UserDesc {
            entry_number: entry,
            base_addr: 0,
            limit: 0,
            flags: (1 << 3) | (1 << 5),
        }
    }
}

/// Writes one LDT entry (modify_ldt mode 0x11).
pub fn write_ldt(d: &UserDesc) -> Result<(), i32> {
    // SAFETY: modify_ldt reads one user_desc from a valid reference; changing the LDT affects
    // no memory of this process.
    let r = unsafe {
        syscall6(
            nr::MODIFY_LDT,
            [
                0x11,
                d as *const UserDesc as usize,
                std::mem::size_of::<UserDesc>(),
                0,
                0,
                0,
            ],
        )
    };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

/// True if `sel` names a descriptor that CPL 3 code could load (LAR succeeds).
pub fn selector_loadable(sel: u16) -> bool {
    let ok: u8;
    // SAFETY: LAR only reads the descriptor tables and sets ZF; no memory is written.
    unsafe {
        std::arch::asm!(
            "lar {tmp:e}, {sel:e}",
            "setz {ok}",
            sel = in(reg) u32::from(sel),
            tmp = out(reg) _,
            ok = out(reg_byte) ok,
            options(nomem, nostack),
        );
    }
    ok != 0
}

// ---------------------------------------------------------------------------------------------
// Setup-time process controls.

/// prctl with integer arguments.
pub fn prctl(op: i32, a: u64) -> Result<i32, i32> {
    // SAFETY: the prctl operations used by the executor take integer arguments only.
    let r = unsafe { libc::prctl(op, a, 0u64, 0u64, 0u64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `arch_prctl(ARCH_SET_CPUID, 0)`: CPUID raises #GP in this thread (CPUID faulting).
/// `Err(ENODEV)` when the CPU or hypervisor has no CPUID faulting.
pub fn set_cpuid_faulting() -> Result<(), i32> {
    const ARCH_SET_CPUID: u64 = 0x1012;
    // SAFETY: ARCH_SET_CPUID takes an integer argument and only changes this thread's CPUID
    // behaviour; the kernel resets it at execve, which the executor never calls.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 0u64) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// getppid.
pub fn getppid() -> u32 {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::getppid() as u32 }
}

/// Closes every file descriptor except 3 and 4.
pub fn close_other_fds() -> Result<(), i32> {
    for (a, b) in [(0usize, 2usize), (5, u32::MAX as usize)] {
        // SAFETY: closing descriptors this process does not use afterwards (Rust's std holds no
        // descriptors open in the executor).
        let r = unsafe { syscall6(nr::CLOSE_RANGE, [a, b, 0, 0, 0, 0]) };
        if r < 0 {
            return Err(-r as i32);
        }
    }
    Ok(())
}

/// The address of the vDSO (the AT_SYSINFO_EHDR auxiliary vector entry; 0 without one).
pub fn vdso_base() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) }
}

/// The AT_HWCAP2 auxiliary vector entry.
pub fn hwcap2() -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP2) }
}

/// The caller's thread id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::gettid() }
}

/// Creates the budget timer on `clock`, delivering `signal` to this thread.
pub fn timer_create(clock: i32, signal: i32) -> Result<i32, i32> {
    // SAFETY: sigevent is plain data; timer_create writes the id into a valid local.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = signal;
        sev.sigev_notify_thread_id = gettid();
        let mut id: i32 = 0;
        let r = syscall6(
            nr::TIMER_CREATE,
            [
                clock as usize,
                &mut sev as *mut _ as usize,
                &mut id as *mut i32 as usize,
                0,
                0,
                0,
            ],
        );
        if r < 0 {
            Err(-r as i32)
        } else {
            Ok(id)
        }
    }
}

/// Installs the seccomp filter (needs PR_SET_NO_NEW_PRIVS).
pub fn install_seccomp(prog: &[plex86_executor::seccomp::SockFilter]) -> Result<(), i32> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const plex86_executor::seccomp::SockFilter,
    }
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads the program from valid memory.
    let r = unsafe { syscall6(nr::SECCOMP, [1, 0, &fprog as *const _ as usize, 0, 0, 0]) };
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The monitor cell shared by the executor loop and the signal handler.

/// A cell for the executor's monitor state, shared by the main loop and the signal handler.
/// Access is exclusive by construction (signals are blocked while the loop runs, and the loop is
/// suspended while the handler runs); a busy flag turns any violation into a clean exit.
pub struct MonitorCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the executor is single-threaded; see the type documentation for exclusivity.
unsafe impl<T> Sync for MonitorCell<T> {}

impl<T> MonitorCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        MonitorCell {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }
    /// Runs `f` with exclusive access to the value (which must have been set).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self.busy.swap(true, Ordering::Acquire) {
            exit_group(plex86_protocol::exit_code::PANIC);
        }
        // SAFETY: the busy flag guarantees that no other reference to the value exists.
        let v = unsafe { &mut *self.value.get() };
        let Some(v) = v.as_mut() else {
            exit_group(plex86_protocol::exit_code::PANIC)
        };
        let r = f(v);
        self.busy.store(false, Ordering::Release);
        r
    }
    /// Sets the value (setup only).
    pub fn set(&self, v: T) {
        if self.busy.swap(true, Ordering::Acquire) {
            exit_group(plex86_protocol::exit_code::PANIC);
        }
        // SAFETY: exclusive by the busy flag.
        unsafe { *self.value.get() = Some(v) };
        self.busy.store(false, Ordering::Release);
    }
}

impl<T> Default for MonitorCell<T> {
    fn default() -> Self {
        Self::new()
    }
}
