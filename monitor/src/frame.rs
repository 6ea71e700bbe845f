//! Plain data the executor shares with the kernel and its own assembly: the x86-64 signal
//! frame (`ucontext`, `sigcontext`, `stack_t`), the hand-made frame that enters the guest
//! through `rt_sigreturn`, the data segments the entry trampoline loads, the kernel's XSAVE
//! signal-frame parameters, `struct user_desc`, and what a delivered signal looks like to the
//! monitor. Layouts are the kernel's ABI (repr(C)); nothing here makes a system call.

/// `AUDIT_ARCH_I386`: SIGSYS `si_arch` (and seccomp data) of a compat-mode system call.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_X86_64`: SIGSYS `si_arch` of a 64-bit system call.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

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
pub use plex86_protocol::xsave::{FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2};
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
    #[inline]
    pub fn fpstate_addr(&self) -> u64 {
        self.fpstate.as_ptr() as u64
    }
}

impl Default for EntryFrame {
    fn default() -> Self {
        Self::new()
    }
}

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
    #[inline]
    pub fn empty(entry: u32) -> Self {
        UserDesc {
            entry_number: entry,
            base_addr: 0,
            limit: 0,
            flags: (1 << 3) | (1 << 5),
        }
    }
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
    /// The FS and GS bases at the time of the signal, where the executor records them (the
    /// stub reads them with RDFSBASE/RDGSBASE): 64-bit code may change them (WRFSBASE is
    /// legal user code). `None` where only 32-bit code runs.
    pub seg_bases: Option<[u64; 2]>,
    /// The XSAVE area of the frame (standard format), `None` if absent.
    pub fpstate: Option<&'a [u8]>,
}
